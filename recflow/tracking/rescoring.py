"""The new model and the alias holder scored now, on one test set, for the promotion policy.

In: both models as the registry sees them (lineage tags) with their model URIs, how
``promotion.rule`` says they compare, and the metric. Out: a ``Comparison``: both figures, the
rule and what the test set held (on new data: the interactions left out because the holder
trained on them, and how many of the test set's users and items the holder knows), logged on
the active run by :func:`log_comparison`.

The candidate's test set and training data come from its preprocess run, the holder's training
data from the preprocess run its version's lineage names; the scoring is
``recflow.evaluation.retraining``'s, on ``accuracy.Holdout`` as train_best scores.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow

from recflow import constants as C
from recflow.errors import UserError
from recflow.evaluation import retraining
from recflow.evaluation.names import metric_key, parse_metric
from recflow.tracking.contracts import load_prepared, load_served
from recflow.tracking.promotion import COMMON_TEST_SET, SAME_TEST_SET, HeadToHead, Model

# What each rule scores on, as the reason and the comparison file say it.
ON = {
    SAME_TEST_SET: "both re-scored now on the same test set",
    COMMON_TEST_SET: "both scored now on the new test set without the {left_out} interactions "
    "@{alias} trained on ({common} left); @{alias} knows {users:.0%} of its users ({folded} new "
    "ones folded in from their history) and {items:.0%} of its items",
}


@dataclass(frozen=True)
class Comparison:
    """Both models' figure of ``metric`` on one test set, and what that test set held."""

    rule: str
    metric: str  # e.g. ndcg@10
    candidate: float
    holder: float
    counts: dict[str, float]  # see :func:`compare`

    def head_to_head(self) -> HeadToHead:
        return HeadToHead(self.rule, self.candidate, self.holder)

    def note(self, alias: str) -> str:
        """What the two were scored on, in a few words: ``both re-scored now on ...``."""
        c = self.counts
        return ON[self.rule].format(
            alias=alias, left_out=int(c["left_out_interactions"]),
            common=int(c["common_test_interactions"]), users=c["user_overlap"],
            items=c["item_overlap"], folded=int(c["folded_users"]),
        )  # fmt: skip


def compare(
    candidate: Model, candidate_uri: str, holder: Model, holder_uri: str, how: str, metric: str
) -> Comparison:
    """Score both models on the candidate's test set (rule ``how``): the whole of it when the
    holder was tested on the same one, else without the interactions the holder trained on."""
    k = parse_metric(metric)[1]
    with tempfile.TemporaryDirectory() as tmp:
        data = load_prepared(candidate.tags["preprocess_run_id"], Path(tmp) / "candidate")
        if how == SAME_TEST_SET:
            trained_on = data.test.iloc[:0]  # tested on this very test set: trained on none of it
        else:
            trained_on = load_prepared(holder_preprocess(holder), Path(tmp) / "holder").seen()
        common = retraining.common_test(data.seen(), data.test, trained_on)
        ours, our_ease = load_served(candidate_uri, Path(tmp) / "candidate-model")
        theirs, their_ease = load_served(holder_uri, Path(tmp) / "holder-model")
        scored = (
            retraining.score(ours, common, k, our_ease),
            retraining.score(theirs, common, k, their_ease, trained_on),
        )
        known = retraining.overlap(theirs, data.test)
    shares = known.shares()
    counts = {
        "test_interactions": len(data.test),
        "common_test_interactions": len(common.test),
        "left_out_interactions": common.n_left_out,
        "test_users": known.users, "known_users": known.known_users,
        "user_overlap": shares["users"],
        "test_items": known.items, "known_items": known.known_items,
        "item_overlap": shares["items"],
        "folded_users": scored[1].folded_users,
    }  # fmt: skip
    key = metric_key(metric)
    return Comparison(how, metric, scored[0].metrics[key], scored[1].metrics[key], counts)


def holder_preprocess(holder: Model) -> str:
    """The preprocess run whose train+valid the holder was trained on."""
    run_id = holder.tags.get("preprocess_run_id")
    if not run_id:
        raise UserError(
            f"version {holder.version} has no preprocess_run_id tag: what it trained on is "
            "unknown, so it cannot be scored on new data; force_promote=true replaces it"
        )
    return run_id


def log_comparison(comparison: Comparison, alias: str, version: str) -> None:
    """Log the comparison on the active run: params ``comparison.*``, metrics
    ``candidate_test_<metric>`` and ``<alias>_test_<metric>``, the test set's counts (the
    holder's as ``<alias>_known_users``, ``<alias>_user_overlap``, ...), and the whole as
    ``C.COMPARISON_FILE``."""
    key = C.TEST_PREFIX + metric_key(comparison.metric)
    holder_only = {"known_users", "user_overlap", "known_items", "item_overlap", "folded_users"}
    counts = {
        f"{alias}_{name}" if name in holder_only else name: value
        for name, value in comparison.counts.items()
    }
    mlflow.log_params({
        "comparison.rule": comparison.rule, "comparison.metric": comparison.metric,
        "comparison.holder_version": version,
    })  # fmt: skip
    mlflow.log_metrics(
        {f"candidate_{key}": comparison.candidate, f"{alias}_{key}": comparison.holder, **counts}
    )
    mlflow.log_dict(
        {
            "rule": comparison.rule, "on": comparison.note(alias), "metric": comparison.metric,
            "candidate": {key: comparison.candidate},
            "holder": {"alias": alias, "version": version, key: comparison.holder},
            **comparison.counts,
        },
        C.COMPARISON_FILE,
    )  # fmt: skip
