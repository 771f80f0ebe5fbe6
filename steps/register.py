"""Step 5: register a train_best run's model; move the alias to it only if it beats the champion."""

from __future__ import annotations

import click
import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recflow import constants as C
from recflow.errors import UserError
from recflow.metrics import parse_metric
from recflow.tracking import get_step_run, setup_logging, step_run

CHALLENGER = "challenger"
# Test results are comparable only on the same data and the same kind of split.
COMPARABLE = ("dataset", "checksum", "split")


@click.command(
    help="Register the model of a train_best run as a new version. The alias moves to it only "
    "if its test metric beats the alias's current version by more than min_improvement "
    f"(absolute); otherwise it becomes '{CHALLENGER}'. Models from other data or splits are "
    "not compared: that is an error unless force_promote is true.\n\n"
    f"Reads: the '{C.MODEL_NAME}' model and test metrics of a train_best run (--train_run_id).\n"
    "Writes: a model version with a description and lineage tags; the alias or "
    f"'{CHALLENGER}'; tags recflow.model_version and recflow.promoted on this run."
)
@click.option("--train_run_id", required=True, help="Run ID of a finished train_best run.")
@click.option("--model_name", default="movielens-rankfm", show_default=True)
@click.option("--alias", default="champion", show_default=True)
@click.option("--metric", default="ndcg@10", show_default=True, help="Test metric that decides.")
@click.option("--min_improvement", default=0.0, show_default=True, type=click.FloatRange(min=0))
@click.option(
    "--force_promote", default="false", show_default=True, type=click.Choice(["true", "false"])
)
def main(
    train_run_id: str, model_name: str, alias: str, metric: str, min_improvement: float,
    force_promote: str,
) -> None:  # fmt: skip
    setup_logging()
    params = {k: v for k, v in locals().items()}
    with step_run("register", params):
        train = get_step_run(train_run_id, "train_best", "train_run_id")
        try:
            key = "test_{}_at_{}".format(*parse_metric(metric))
        except ValueError as e:
            raise UserError(str(e)) from e
        if key not in train.data.metrics:
            raise UserError(
                f"train run {train_run_id} has no {key}; train_best logs @{C.DEFAULT_K}"
            )
        client = MlflowClient()
        lineage = _lineage(client, train)
        value = train.data.metrics[key]
        champion = _current(client, model_name, alias)
        promote, reason = True, f"first version under @{alias}"
        if champion is not None:
            theirs = {k: champion.tags.get(k) for k in COMPARABLE}
            ours = {k: lineage[k] for k in COMPARABLE}
            best = float(champion.tags.get(key, "nan"))
            if theirs != ours and force_promote != "true":
                raise UserError(
                    f"@{alias} (version {champion.version}) was tested on {theirs}, this model on "
                    f"{ours}: their {metric} are not comparable. Use another model_name, or "
                    "force_promote=true to replace it anyway"
                )
            if force_promote == "true":
                promote, reason = True, "force_promote=true"
            elif value > best + min_improvement:
                promote, reason = True, f"{key} {value:.4f} beats {best:.4f} + {min_improvement}"
            else:
                promote = False
                reason = (
                    f"{key} {value:.4f} does not beat @{alias} version {champion.version} "
                    f"({best:.4f}) by more than {min_improvement}"
                )

        test = {k: v for k, v in train.data.metrics.items() if k.startswith("test_")}
        version = mlflow.register_model(
            train.data.tags[C.TAG_MODEL_URI], model_name,
            tags={**lineage, **{k: repr(v) for k, v in test.items()}},  # full precision: compared later
        )  # fmt: skip
        description = f"rankfm recommender on {lineage['dataset']} ({lineage['split']} split); " + (
            ", ".join(f"{k}={v:.4f}" for k, v in sorted(test.items()))
        )
        client.update_model_version(model_name, version.version, description=description)
        target = alias if promote else CHALLENGER
        client.set_registered_model_alias(model_name, target, version.version)
        mlflow.set_tags(
            {
                "recflow.model_name": model_name,
                "recflow.model_version": version.version,
                "recflow.promoted": str(promote).lower(),
                "recflow.promotion_reason": reason,
            }
        )
        mlflow.log_metric("model_version", int(version.version))
        verdict = "promoted" if promote else "not promoted"
        click.echo(f"{model_name} version {version.version} is @{target} ({verdict}: {reason})")


def _lineage(client: MlflowClient, train: mlflow.entities.Run) -> dict[str, str]:
    """Tags tracing a model back to its data, split, hpo run and training run."""
    preprocess_id = train.data.params["preprocess_run_id"]
    preprocess = client.get_run(preprocess_id)
    raw = client.get_run(preprocess.data.params["raw_run_id"])
    return {
        "dataset": raw.data.params.get("dataset", ""),
        "checksum": raw.data.tags.get(C.TAG_CHECKSUM, ""),
        "split": preprocess.data.params.get("split", ""),
        "download_run_id": raw.info.run_id,
        "preprocess_run_id": preprocess_id,
        "hpo_run_id": train.data.params["hpo_run_id"],
        "train_run_id": train.info.run_id,
    }


def _current(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None  # no such model or alias yet


if __name__ == "__main__":
    main()
