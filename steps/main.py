"""The whole pipeline: download -> preprocess -> hpo -> train_best -> register, with a step cache."""

from __future__ import annotations

import click
import mlflow

from recflow import constants as C
from recflow.data import preprocess
from recflow.hpo import fidelity
from recflow.tracking.pipeline import Plan, outcome, run_pipeline, summary
from recflow.tracking.runs import end_orphans
from steps.common import step


@click.command(
    help="Run the five steps in order, reusing finished runs with the same parameters, upstream "
    "runs and code version (--force true re-runs all). The tuned metric also decides promotion."
    f"\n\nWrites: a parent run tagged with each step's run ID ({C.TAG_MAIN_STEP_RUN}<step>) "
    "and carrying the outcome: train_best's test and popularity metrics, the model version and "
    "the promotion verdict; the summary on stdout."
)
@click.option("--dataset", default=C.DEFAULT_DATASET, show_default=True)
@click.option("--data_url", default="")
@click.option("--checksum", default="")
@click.option("--n_trials", default=C.DEFAULT_N_TRIALS, show_default=True,
              type=click.IntRange(min=1))  # fmt: skip
@click.option("--timeout", default=0, show_default=True, type=click.IntRange(min=0),
              help="hpo stops starting trials after this many seconds; 0 = no limit.")  # fmt: skip
@click.option("--n_jobs", default=0, show_default=True, type=click.IntRange(min=0),
              help="hpo trials in parallel; 0 = one per CPU core.")  # fmt: skip
@click.option("--sample_users", default="auto", show_default=True,
              help="Users hpo tunes on (see hpo --help); train_best always uses all.")  # fmt: skip
@click.option("--eval_users", default="auto", show_default=True,
              help="Validation users per hpo trial (see hpo --help).")  # fmt: skip
@click.option("--split", default="random", show_default=True,
              help="How preprocess holds out valid/test interactions (see preprocess --help).")  # fmt: skip
@click.option("--test_size", default=0.2, show_default=True)
@click.option("--valid_size", default=0.1, show_default=True)
@click.option("--ensemble", default="auto", show_default=True,
              help="Models train_best averages (see train_best --help).")  # fmt: skip
@click.option("--metric", default=C.DEFAULT_METRIC, show_default=True)
@click.option("--seed", default=C.DEFAULT_SEED, show_default=True)
@click.option("--model_name", default=C.DEFAULT_MODEL_NAME, show_default=True)
@click.option("--force", default="false", show_default=True, type=click.Choice(["true", "false"]))
def main(
    dataset: str, data_url: str, checksum: str, n_trials: int, timeout: int, n_jobs: int,
    sample_users: str, eval_users: str, split: str, test_size: float, valid_size: float,
    ensemble: str, metric: str, seed: int, model_name: str, force: str,
) -> None:  # fmt: skip
    with step("main") as s:
        s.label(dataset)
        # Bad values fail here, before anything runs, rather than inside the hpo step.
        fidelity.parse_users("sample_users", sample_users)
        fidelity.parse_users("eval_users", eval_users)
        preprocess.check_split(split, test_size, valid_size)
        fidelity.parse_count("ensemble", ensemble, ("auto",), minimum=1)
        plan = Plan(
            dataset, data_url, checksum, n_trials, metric, seed, model_name,
            timeout, n_jobs, sample_users, eval_users, split, test_size, valid_size, ensemble,
        )  # fmt: skip
        # Runs of an earlier attempt whose process was killed would otherwise stay RUNNING.
        for run_id in end_orphans(s.run.info.experiment_id):
            click.echo(f"run {run_id}: its process is gone; marked KILLED")
        done = run_pipeline(plan, s.run.info.experiment_id, force=force == "true")
        metrics, tags = outcome(done)
        mlflow.log_metrics({**metrics, "n_reused": sum(r.reused for r in done)})
        mlflow.set_tags(tags)
        for line in summary(done, model_name, metrics, tags, s.run.info.experiment_id):
            click.echo(line)


if __name__ == "__main__":
    main()
