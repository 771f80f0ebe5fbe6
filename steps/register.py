"""Step 5: register a train_best run's model and point an alias at the new version."""

from __future__ import annotations

import click
import mlflow
from mlflow.tracking import MlflowClient

from recflow import constants as C
from recflow.tracking import get_step_run, setup_logging, step_run


@click.command(
    help="Register the model of a train_best run as a new version and set an alias on it.\n\n"
    f"Reads: the '{C.MODEL_NAME}' model of a train_best run (--train_run_id).\n"
    "Writes: a registered model version with lineage tags; the alias; tags on this run."
)
@click.option("--train_run_id", required=True, help="Run ID of a finished train_best run.")
@click.option("--model_name", default="movielens-rankfm", show_default=True)
@click.option("--alias", default="champion", show_default=True)
def main(train_run_id: str, model_name: str, alias: str) -> None:
    setup_logging()
    params = {"train_run_id": train_run_id, "model_name": model_name, "alias": alias}
    with step_run("register", params):
        train = get_step_run(train_run_id, "train_best", "train_run_id")
        client = MlflowClient()
        preprocess_id = train.data.params["preprocess_run_id"]
        preprocess = client.get_run(preprocess_id)
        raw = client.get_run(preprocess.data.params["raw_run_id"])
        lineage = {
            "dataset": raw.data.params.get("dataset", ""),
            "checksum": raw.data.tags.get(C.TAG_CHECKSUM, ""),
            "split": preprocess.data.params.get("split", ""),
            "download_run_id": raw.info.run_id,
            "preprocess_run_id": preprocess_id,
            "hpo_run_id": train.data.params["hpo_run_id"],
            "train_run_id": train_run_id,
        }
        test = {k: v for k, v in train.data.metrics.items() if k.startswith("test_")}
        version = mlflow.register_model(
            train.data.tags[C.TAG_MODEL_URI], model_name,
            tags={**lineage, **{k: f"{v:.6f}" for k, v in test.items()}},
        )  # fmt: skip
        description = (
            f"rankfm recommender on {lineage['dataset']} ({lineage['split']} split); "
            + ", ".join(f"{k}={v:.4f}" for k, v in sorted(test.items()))
        )
        client.update_model_version(model_name, version.version, description=description)
        client.set_registered_model_alias(model_name, alias, version.version)
        mlflow.set_tags(
            {"recflow.model_name": model_name, "recflow.model_version": version.version}
        )
        mlflow.log_metric("model_version", int(version.version))
        click.echo(f"registered {model_name} version {version.version} as @{alias}: {description}")


if __name__ == "__main__":
    main()
