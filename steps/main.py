"""The whole pipeline: download -> preprocess -> hpo -> train_best -> register, with a step cache."""

from __future__ import annotations

import click
import mlflow

from recflow import constants as C
from recflow.data import preprocess
from recflow.errors import UserError
from recflow.evaluation.names import metric_key
from recflow.hpo import budget, fidelity
from recflow.tracking.contracts import alias_holder, check_registry_names
from recflow.tracking.pipeline import Plan, outcome, run_pipeline, summary
from recflow.tracking.promotion import METRIC_TAG, Model, Policy, incomparable
from recflow.tracking.runs import end_orphans
from steps.common import SEED, data_dir, default, options, step

option = options("main")


@click.command(
    help="Run the five steps in order, reusing finished runs with the same parameters, upstream "
    "runs and code version (--force true re-runs all). The tuned metric also decides promotion."
    f"\n\nWrites: a parent run tagged with each step's run ID ({C.TAG_MAIN_STEP_RUN}<step>) "
    "and carrying the outcome: train_best's test and popularity metrics, the model version and "
    "the promotion verdict; the summary on stdout."
)
@option("dataset")
@option("data_url")
@option("checksum", help="Verified by download; for interactions main fills in the file's sha256, so a changed file is downloaded again.")  # fmt: skip
@option("items_url")
@option("items_checksum")
@option("user_col")
@option("item_col")
@option("rating_col")
@option("time_col")
@option("title_col", help="These describe an interactions file (see download --help).")  # fmt: skip
@option("n_trials", help="Complete hpo trials (see hpo --help).")  # fmt: skip
@option("timeout", type=click.IntRange(min=0), help="hpo stops starting trials after this many seconds; 0 = no limit.")  # fmt: skip
@option("n_jobs", type=click.IntRange(min=0), help="hpo trials in parallel; 0 = one per CPU core.")  # fmt: skip
@option("sample_users", help="Users hpo tunes on (see hpo --help); train_best always uses all.")  # fmt: skip
@option("eval_users", help="Validation users per hpo trial (see hpo --help).")  # fmt: skip
@option("split", help="How preprocess holds out valid/test interactions (see preprocess --help).")  # fmt: skip
@option("test_size", type=float)
@option("valid_size", type=float)
@option("ensemble", help="Models train_best averages (see train_best --help).")  # fmt: skip
@option("blend", type=click.Choice(["auto", "none"]), help="Serve the blend with EASE where it fits (see train_best --help).")  # fmt: skip
@option("metric")
@option("seed", type=SEED)
@option("model_name")
@option("force", type=click.Choice(["true", "false"]))
def main(
    dataset: str, data_url: str, checksum: str, items_url: str, items_checksum: str,
    user_col: str, item_col: str, rating_col: str, time_col: str, title_col: str, n_trials: str,
    timeout: int, n_jobs: int, sample_users: str, eval_users: str, split: str, test_size: float, valid_size: float,
    ensemble: str, blend: str, metric: str, seed: int, model_name: str, force: str,
) -> None:  # fmt: skip
    with step("main") as s:
        s.label(dataset)
        # Bad values fail here, before anything runs, rather than inside the hpo step.
        fidelity.parse_users("sample_users", sample_users)
        fidelity.parse_users("eval_users", eval_users)
        preprocess.check_split(split, test_size, valid_size)
        fidelity.parse_count("ensemble", ensemble, ("auto",), minimum=1)
        budget.parse_trials(n_trials)
        metric_key(metric)
        check_registry_names(model_name)
        check_holder(model_name, dataset, item_col, metric)
        # For a file of one's own, its content's digest keys the step cache.
        plan = Plan.of(click.get_current_context().params).keyed_on_content(data_dir())
        # Runs of an earlier attempt whose process was killed would otherwise stay RUNNING.
        for run_id in end_orphans(s.run.info.experiment_id):
            click.echo(f"run {run_id}: its process is gone; marked KILLED")
        done = run_pipeline(plan, s.run.info.experiment_id, force=force == "true")
        metrics, tags = outcome(done)
        mlflow.log_metrics({**metrics, "n_reused": sum(r.reused for r in done)})
        mlflow.set_tags(tags)
        for line in summary(done, model_name, metrics, tags, s.run.info.experiment_id, metric):
            click.echo(line)


def check_holder(model_name: str, dataset: str, item_col: str, metric: str) -> None:
    """Fail before any step when register would refuse to compare this run's model with the
    version holding its alias (another dataset, item column or metric): after the training."""
    alias = default("register", "alias")
    holder = alias_holder(model_name, alias)
    ours = Model({"dataset": dataset, "item_col": item_col, METRIC_TAG: metric}, {})
    if holder is not None and (why := incomparable(ours, holder, Policy(alias, metric))):
        reason, setting = why
        ways = [f"-P {setting.rstrip(', ')}"] if setting else []
        raise UserError(
            f"{reason}, so register would refuse this model after training it: pass "
            f"{' or '.join([*ways, '-P model_name=<another name>'])}"
        )


if __name__ == "__main__":
    main()
