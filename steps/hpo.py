"""Step 3: tune the recommender's hyperparameters with optuna, one nested MLflow run per trial."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import click
import mlflow
import optuna
from optuna.trial import TrialState

from recflow import constants as C
from recflow import hpo
from recflow.errors import UserError
from recflow.metrics import parse_metric
from recflow.model import FMParams
from recflow.tracking import load_prepared, setup_logging, step_run

log = logging.getLogger(__name__)


@click.command(
    help="Search hyperparameters on the validation split (TPE sampler, epoch-wise pruning). "
    "Re-running with the same study continues it until n_trials trials are complete; several "
    "processes sharing a storage and study split the work.\n\n"
    f"Reads: the {C.DATA_DIR}/ artifacts of a preprocess run (--preprocess_run_id).\n"
    f"Writes: one nested run per trial; {C.BEST_PARAMS_FILE}; best.<param> params; "
    "best_<metric>; n_complete / n_pruned / n_fail; plots/*.png."
)
@click.option("--preprocess_run_id", required=True, help="Run ID of a finished preprocess run.")
@click.option("--n_trials", default=20, show_default=True, type=click.IntRange(min=1),
              help="Complete trials the study should have in total.")  # fmt: skip
@click.option("--timeout", default=0, show_default=True, type=click.IntRange(min=0),
              help="Stop starting trials after this many seconds; 0 = no limit.")  # fmt: skip
@click.option("--metric", default="ndcg@10", show_default=True,
              help="Objective on the validation split, e.g. ndcg@10, recall@20.")  # fmt: skip
@click.option("--search_space", default="", help="Search-space YAML (default: the packaged one).")
@click.option("--pruner", default="median", show_default=True, type=click.Choice(hpo.PRUNERS))
@click.option("--storage", default="",
              help="optuna storage: a database URL or a journal file path "
              "(default: $RECFLOW_DATA_DIR/optuna/studies.journal).")  # fmt: skip
@click.option("--study_name", default="", help="Default: <preprocess run>-<metric>-<space digest>.")
@click.option("--n_jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Trials run in parallel in this process.")  # fmt: skip
@click.option("--seed", default=C.DEFAULT_SEED, show_default=True)
def main(
    preprocess_run_id: str, n_trials: int, timeout: int, metric: str, search_space: str,
    pruner: str, storage: str, study_name: str, n_jobs: int, seed: int,
) -> None:  # fmt: skip
    setup_logging()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    params = {k: v for k, v in locals().items()}
    with step_run("hpo", params) as run, tempfile.TemporaryDirectory() as tmp:
        if hpo.has_password(storage):
            log.warning(
                "the storage URL holds a password, and MLflow records it as this run's "
                "`storage` parameter: leave it out and set PGPASSWORD or ~/.pgpass instead"
            )
        # Everything that can be wrong is checked before the first trial.
        try:
            base, k = parse_metric(metric)
        except ValueError as e:
            raise UserError(str(e)) from e
        space = hpo.load_space(Path(search_space) if search_space else hpo.DEFAULT_SPACE)
        data = load_prepared(preprocess_run_id, Path(tmp))
        name = study_name or hpo.study_name(preprocess_run_id, metric, space)
        max_epochs = max([int(d.high) for d in space if d.name == "epochs"] or [20])
        store = hpo.open_storage(storage, Path(os.environ.get("RECFLOW_DATA_DIR", "data")))
        study = hpo.open_study(
            store, name, metric, space,
            # The same seed on the same data gives the same trials when run serially.
            hpo.TrialSeededTPE(seed),
            hpo.make_pruner(pruner, max_epochs),
        )  # fmt: skip
        mlflow.set_tag("optuna.study", name)
        objective = hpo.Objective(data, space, metric, seed, run.info.run_id, n_trials)
        hpo.run_worker(study, store, objective, n_trials, timeout, n_jobs)

        counts = {
            "n_complete": hpo.count(study, TrialState.COMPLETE),
            "n_pruned": hpo.count(study, TrialState.PRUNED),
            "n_fail": hpo.count(study, TrialState.FAIL),
        }
        mlflow.log_metrics(counts)
        if not counts["n_complete"]:
            raise UserError(
                f"no trial completed ({counts}); widen the search space or raise n_trials"
            )
        best = study.best_trial
        # The full configuration, defaults included, so train_best needs nothing else.
        mlflow.log_dict(FMParams.from_dict(best.params).to_dict(), C.BEST_PARAMS_FILE)
        mlflow.log_params({f"best.{p}": v for p, v in best.params.items()})
        mlflow.log_metric(f"best_{base}_at_{k}", best.value)
        mlflow.set_tags(
            {
                "recflow.best_trial_run_id": best.user_attrs["mlflow_run_id"],
                "recflow.preprocess_run_id": preprocess_run_id,
            }
        )
        for path in hpo.save_plots(study, Path(tmp) / "plots"):
            mlflow.log_artifact(str(path), "plots")
        click.echo(
            f"study {name}: best {metric} = {best.value:.4f} (trial {best.number}); "
            f"{counts['n_complete']} complete, {counts['n_pruned']} pruned, "
            f"{counts['n_fail']} failed; run {run.info.run_id}"
        )


if __name__ == "__main__":
    main()
