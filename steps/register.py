"""Step 5: register a train_best run's model; move the alias to it only if it beats the holder."""

from __future__ import annotations

import math

import click
import mlflow
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from recflow import constants as C
from recflow.errors import UserError
from recflow.failpoints import failpoint
from recflow.tracking.contracts import (
    alias_holder,
    check_registry_names,
    lineage,
    register_version,
    registered_from,
    set_alias,
)
from recflow.tracking.promotion import (
    CHALLENGER_OF_TAG,
    COMPARABLE,
    LINEAGE,
    METRIC_TAG,
    Decision,
    Model,
    Policy,
    decide,
    rule,
)
from recflow.tracking.rescoring import Comparison, compare, log_comparison
from steps.common import options, step

option = options("register")


@click.command(
    help="Register the model of a train_best run as a new version (a run registered before "
    "keeps its version). The alias moves to it only "
    "if its test metric beats the alias's current version by more than min_improvement "
    f"(absolute); otherwise it becomes '{C.CHALLENGER_ALIAS}'. Both are scored now on this "
    f"model's test set: all of it when the holder was tested on the same one (by "
    f"{', '.join(COMPARABLE)}); after new data of the same {' and '.join(LINEAGE)}, without "
    "the interactions the holder trained on, its unknown users folded in from their history. "
    "Models registered on another metric, dataset or item column are not compared: that is an "
    "error unless force_promote is true."
    f"\n\nReads: the '{C.MODEL_NAME}' model and test metrics of a train_best run (--train_run_id); "
    "the test set and training data of its preprocess run and of the holder's."
    "\nWrites: a model version with a description and lineage tags; the alias or "
    f"'{C.CHALLENGER_ALIAS}'; tags {C.TAG_MODEL_VERSION} and {C.TAG_PROMOTED} on this run; "
    f"both scores, the rule and the holder's overlap with the test set as comparison.* params, "
    f"metrics and {C.COMPARISON_FILE}."
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
        check_registry_names(model_name, alias)
        if not math.isfinite(min_improvement):  # FloatRange lets nan and inf through
            raise UserError(f"min_improvement must be a finite number >= 0, got {min_improvement}")
        train = s.upstream("train_run_id", train_run_id)
        policy = Policy(alias, metric, min_improvement, force=force_promote == "true")
        if policy.key not in train.data.metrics:
            raise UserError(
                f"train run {train.info.run_id} has no {policy.key}; train_best logs "
                f"@{C.DEFAULT_K} and at the k of the metric it was tuned on"
            )
        prefixes = (C.TEST_PREFIX, C.POPULARITY_PREFIX, C.EASE_PREFIX)
        test = {k: v for k, v in train.data.metrics.items() if k.startswith(prefixes)}
        candidate = Model({**lineage(train), METRIC_TAG: metric}, test)
        # Registering the same train run again gives no second version of the same model: it
        # takes the version that holds the alias, if one does, else the oldest.
        mine = registered_from(train, model_name, metric)
        version = None
        while True:
            holder = alias_holder(model_name, alias)
            held = [v for v in mine if holder is not None and str(v.version) == holder.version]
            comparison, decision = judge(candidate, train, holder, held, policy, model_name)
            if version is None:
                existing = (held or mine or [None])[0]
                if existing is None:
                    version = register_version(train, model_name, candidate)
                else:
                    version = existing
                    click.echo(f"{model_name} version {version.version} holds this train run's "
                               "model already: no new version")  # fmt: skip
            # Another register (of another main beside this one) may have moved the alias
            # while this one compared: about to take it, decide again against the version that
            # holds it now. Left unguarded: the moment between this read and setting the alias.
            now = alias_holder(model_name, alias) if decision.promote and not held else holder
            if _version(now) == _version(holder):
                break
            click.echo(f"@{alias} moved to version {now.version} while this register decided; "
                       "deciding again")  # fmt: skip
        note = ""
        if comparison is not None:
            log_comparison(comparison, alias, holder.version)
            note = f" ({comparison.note(alias)})"
        failpoint("register:before-alias")
        target = alias if decision.promote else C.CHALLENGER_ALIAS
        client = MlflowClient()
        if target == C.CHALLENGER_ALIAS:
            client.set_model_version_tag(model_name, version.version, CHALLENGER_OF_TAG, alias)
        set_alias(client, model_name, target, version.version)
        if existing is not None and decision.promote:
            # The challenger of this alias, promoted on a second register, challenges no more.
            again = client.get_model_version(model_name, version.version)
            if C.CHALLENGER_ALIAS in again.aliases and again.tags.get(CHALLENGER_OF_TAG) == alias:
                client.delete_registered_model_alias(model_name, C.CHALLENGER_ALIAS)
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


def judge(
    candidate: Model,
    train: Run,
    holder: Model | None,
    held: list[ModelVersion],
    policy: Policy,
    name: str,
) -> tuple[Comparison | None, Decision]:
    """Whether ``candidate`` takes the alias from ``holder``, and the comparison of the two
    scored now when one was needed (``held``: this train run's version holds it already)."""
    if held:
        return None, Decision(True, f"this train run's version {held[0].version} already "
                                    f"holds @{policy.alias}")  # fmt: skip
    if holder is None or policy.force:
        return None, decide(candidate, holder, policy)
    # Scored again now, by this code, so that a change in the metric code between the two
    # versions cannot decide; on new data, only on what neither trained on.
    comparison = compare(
        candidate, train.data.tags[C.TAG_MODEL_URI], holder, f"models:/{name}/{holder.version}",
        rule(candidate, holder, policy), policy.metric,
    )  # fmt: skip
    return comparison, decide(candidate, holder, policy, comparison.head_to_head())


def _version(model: Model | None) -> str | None:
    return model.version if model else None


if __name__ == "__main__":
    main()
