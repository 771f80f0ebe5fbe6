"""Step 3: tune the recommender's hyperparameters with optuna, one nested MLflow run per trial."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import mlflow
import optuna

from recflow import constants as C
from recflow import hpo
from recflow.errors import UserError
from recflow.metrics import parse_metric
from recflow.model import FMParams
from recflow.tracking import load_prepared, setup_logging, step_run


@click.command(
    help="Search hyperparameters on the validation split (TPE sampler, epoch-wise pruning).\n\n"
    f"Reads: the {C.DATA_DIR}/ artifacts of a preprocess run (--preprocess_run_id).\n"
    "Writes: one nested run per trial; best_params.json; best.<param> params; best_<metric>."
)
@click.option("--preprocess_run_id", required=True, help="Run ID of a finished preprocess run.")
@click.option("--n_trials", default=20, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--timeout", default=0, show_default=True, type=click.IntRange(min=0), help="Seconds; 0 = none."
)
@click.option(
    "--metric", default="ndcg@10", show_default=True, help="Objective, e.g. ndcg@10, recall@20."
)
@click.option(
    "--search_space", default="", help="Search-space YAML file (default: the packaged one)."
)
@click.option("--pruner", default="hyperband", show_default=True, type=click.Choice(hpo.PRUNERS))
@click.option("--seed", default=C.DEFAULT_SEED, show_default=True)
def main(
    preprocess_run_id: str, n_trials: int, timeout: int, metric: str, search_space: str,
    pruner: str, seed: int,
) -> None:  # fmt: skip
    setup_logging()
    params = {k: v for k, v in locals().items()}
    with step_run("hpo", params) as run, tempfile.TemporaryDirectory() as tmp:
        try:
            base, k = parse_metric(metric)
        except ValueError as e:
            raise UserError(str(e)) from e
        space = hpo.load_space(Path(search_space) if search_space else hpo.DEFAULT_SPACE)
        data = load_prepared(preprocess_run_id, Path(tmp))
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
        # A deterministic name: Hyperband assigns trials to brackets by hashing it.
        study = optuna.create_study(
            study_name=hpo.study_name(preprocess_run_id, metric, space),
            direction="maximize", sampler=sampler,
            pruner=hpo.make_pruner(pruner, max_epochs=_max_epochs(space)),
        )  # fmt: skip
        study.optimize(
            hpo.Objective(data, space, metric, seed), n_trials=n_trials,
            timeout=timeout or None, catch=(FloatingPointError,),
        )  # fmt: skip
        states = [t.state for t in study.trials]
        counts = {
            f"n_{s.name.lower()}": states.count(s)
            for s in (
                optuna.trial.TrialState.COMPLETE,
                optuna.trial.TrialState.PRUNED,
                optuna.trial.TrialState.FAIL,
            )
        }
        mlflow.log_metrics(counts)
        if not counts["n_complete"]:
            raise UserError(
                f"no trial completed ({counts}); widen the search space or raise n_trials"
            )
        best = study.best_trial
        # The full configuration, defaults included, so train_best needs nothing else.
        mlflow.log_dict(FMParams.from_dict(best.params).to_dict(), C.BEST_PARAMS_FILE)
        mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
        mlflow.log_metric(f"best_{base}_at_{k}", best.value)
        mlflow.set_tags(
            {
                "recflow.best_trial_run_id": best.user_attrs["mlflow_run_id"],
                "recflow.preprocess_run_id": preprocess_run_id,
            }
        )
        click.echo(
            f"best {metric} = {best.value:.4f} (trial {best.number}); "
            f"{counts['n_complete']} complete, {counts['n_pruned']} pruned, {counts['n_fail']} failed; "
            f"run {run.info.run_id}"
        )


def _max_epochs(space: list[hpo.Dimension]) -> int:
    dims = {d.name: d for d in space}
    return int(dims["epochs"].high) if "epochs" in dims else 20


if __name__ == "__main__":
    main()
