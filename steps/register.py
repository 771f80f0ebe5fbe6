"""Step 5: register a train_best run's model; move the alias to it only if it beats the holder."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import mlflow
from mlflow.tracking import MlflowClient

from recflow import constants as C
from recflow.errors import UserError
from recflow.failpoints import failpoint
from recflow.tracking.contracts import (
    alias_holder,
    lineage,
    load_prepared,
    register_version,
    rescore,
)
from recflow.tracking.promotion import COMPARABLE, Model, Policy, comparable, decide
from steps.common import options, step

option = options("register")


@click.command(
    help="Register the model of a train_best run as a new version. The alias moves to it only "
    "if its test metric beats the alias's current version by more than min_improvement "
    f"(absolute); otherwise it becomes '{C.CHALLENGER_ALIAS}'. Both are re-scored on the test set "
    "first. Models tested on another test set (by "
    f"{', '.join(COMPARABLE)}) are not compared: that is an error unless force_promote is true."
    f"\n\nReads: the '{C.MODEL_NAME}' model and test metrics of a train_best run (--train_run_id)."
    "\nWrites: a model version with a description and lineage tags; the alias or "
    f"'{C.CHALLENGER_ALIAS}'; tags {C.TAG_MODEL_VERSION} and {C.TAG_PROMOTED} on this run."
)
@option("train_run_id", help="Run ID of a finished train_best run (default: the latest).")  # fmt: skip
@option("model_name")
@option("alias")
@option("metric", help="Test metric that decides.")  # fmt: skip
@option("min_improvement", type=click.FloatRange(min=0))
@option("force_promote", type=click.Choice(["true", "false"]))  # fmt: skip
def main(
    train_run_id: str, model_name: str, alias: str, metric: str, min_improvement: float,
    force_promote: str,
) -> None:  # fmt: skip
    with step("register") as s:
        train = s.upstream("train_run_id", train_run_id)
        policy = Policy(alias, metric, min_improvement, force=force_promote == "true")
        if policy.key not in train.data.metrics:
            raise UserError(
                f"train run {train.info.run_id} has no {policy.key}; train_best logs "
                f"@{C.DEFAULT_K} and at the k of the metric it was tuned on"
            )
        prefixes = (C.TEST_PREFIX, C.POPULARITY_PREFIX, C.EASE_PREFIX)
        test = {k: v for k, v in train.data.metrics.items() if k.startswith(prefixes)}
        candidate = Model(lineage(train), test)
        holder = alias_holder(model_name, alias)
        ours, theirs, note = candidate, holder, ""
        if holder is not None and not policy.force and comparable(candidate, holder):
            # The same test set: score both models again, now, with this code, so that a change
            # in the metric code between the two versions cannot decide.
            with tempfile.TemporaryDirectory() as tmp:
                data = load_prepared(candidate.tags["preprocess_run_id"], Path(tmp))
            seen = data.seen()
            uris = {
                "candidate": train.data.tags[C.TAG_MODEL_URI],
                alias: f"models:/{model_name}/{holder.version}",
            }
            fresh = {who: rescore(uri, seen, data.test, metric) for who, uri in uris.items()}
            mlflow.log_metrics({f"{who}_{policy.key}": v for who, v in fresh.items()})
            ours = Model(candidate.tags, {**candidate.metrics, policy.key: fresh["candidate"]})
            theirs = Model(holder.tags, {policy.key: fresh[alias]}, holder.version)
            note = " (both re-scored now on the same test set)"
        decision = decide(ours, theirs, policy)
        version = register_version(train, model_name, candidate)
        failpoint("register:before-alias")
        target = alias if decision.promote else C.CHALLENGER_ALIAS
        MlflowClient().set_registered_model_alias(model_name, target, version.version)
        mlflow.set_tags({
            C.TAG_MODEL_NAME: model_name, C.TAG_MODEL_VERSION: version.version,
            C.TAG_PROMOTED: str(decision.promote).lower(),
            C.TAG_PROMOTION_REASON: decision.reason + note,
        })  # fmt: skip
        mlflow.log_metric("model_version", int(version.version))
        verdict = "promoted" if decision.promote else "not promoted"
        s.label(model_name, f"v{version.version}", f"@{target}")
        click.echo(f"{model_name} version {version.version} is @{target} ({verdict}: "
                   f"{decision.reason}{note})")  # fmt: skip


if __name__ == "__main__":
    main()
