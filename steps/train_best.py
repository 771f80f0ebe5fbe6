"""Step 4: retrain the best configuration on train+valid, test it and log the served model."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import click
import mlflow
import pandas as pd

from recflow import constants as C
from recflow import serving
from recflow.errors import UserError
from recflow.metrics import evaluate_model, evaluate_popularity
from recflow.model import FMParams, fit_isolated
from recflow.tracking import download, get_step_run, load_prepared, setup_logging, step_run

log = logging.getLogger(__name__)


@click.command(
    help="Train the hpo run's best configuration on train+valid and evaluate it on test.\n\n"
    f"Reads: {C.DATA_DIR}/ of a preprocess run; {C.BEST_PARAMS_FILE} of an hpo run.\n"
    f"Writes: test_<metric>_at_{C.DEFAULT_K} and popularity_<metric>_at_{C.DEFAULT_K} metrics; "
    f"the pyfunc model '{C.MODEL_NAME}'."
)
@click.option("--preprocess_run_id", required=True, help="Run ID of a finished preprocess run.")
@click.option("--hpo_run_id", required=True, help="Run ID of a finished hpo run.")
@click.option("--seed", default=C.DEFAULT_SEED, show_default=True)
def main(preprocess_run_id: str, hpo_run_id: str, seed: int) -> None:
    setup_logging()
    params = {"preprocess_run_id": preprocess_run_id, "hpo_run_id": hpo_run_id, "seed": seed}
    with step_run("train_best", params), tempfile.TemporaryDirectory() as tmp:
        hpo_run = get_step_run(hpo_run_id, "hpo", "hpo_run_id")
        data = load_prepared(preprocess_run_id, Path(tmp) / "data")
        tuned_on = hpo_run.data.params.get("preprocess_run_id")
        if tuned_on != preprocess_run_id:
            log.warning("hpo run %s was tuned on preprocess run %s", hpo_run_id, tuned_on)
        best = json.loads(download(hpo_run_id, C.BEST_PARAMS_FILE, Path(tmp)).read_text())
        fm_params = FMParams.from_dict(best)
        mlflow.log_params({f"model.{k}": v for k, v in fm_params.to_dict().items()})

        seen = pd.concat([data.train, data.valid], ignore_index=True)
        try:
            model = fit_isolated(seen, fm_params, seed, data.user_features, data.item_features)
        except FloatingPointError as e:
            raise UserError(f"training the best configuration failed: {e}") from e
        metrics = evaluate_model(model, seen, data.test, C.DEFAULT_K)
        baseline = evaluate_popularity(model, seen, data.test, C.DEFAULT_K)
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metrics({f"popularity_{k}": v for k, v in baseline.items()})

        bundle = Path(tmp) / "bundle"
        serving.write_bundle(bundle, model, data.items, seen)
        info = serving.log_model(
            bundle, example_users=sorted(seen[C.USER_COL].unique()[:2].tolist())
        )
        mlflow.set_tags(
            {
                C.TAG_MODEL_URI: info.model_uri,
                "recflow.preprocess_run_id": preprocess_run_id,
                "recflow.hpo_run_id": hpo_run_id,
            }
        )
        key = f"ndcg_at_{C.DEFAULT_K}"
        click.echo(f"test {key} = {metrics[key]:.4f} (popularity {baseline[key]:.4f})")


if __name__ == "__main__":
    main()
