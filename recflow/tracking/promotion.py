"""The promotion policy: does a newly trained model take the alias from the current holder?

In: the candidate's and the current holder's test figures (the candidate's with its baselines'
on the same test set) and data lineage, both models scored now on one test set
(``HeadToHead``), and the policy. Out: how the two compare (``rule``) and a ``Decision``
(promote or not, and why). A model that does not beat popularity on its own test set is never
promoted unless forced. Pure: no MLflow, so it is tested on its own.

Two models tested on the same test set compare on it. A model retrained on new data of the
holder's dataset (same dataset name and item column, a grown archive and so another test set)
compares with it on the common test set: its own test set without the interactions the holder
trained on (``recflow.evaluation.retraining``). Anything else (another dataset, item column or
metric) cannot be compared, and says so in one line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from recflow.constants import BASELINES, EASE_PREFIX, ITEM_COL, POPULARITY_PREFIX, TEST_PREFIX
from recflow.errors import UserError
from recflow.evaluation.names import metric_key

# Test results are comparable only on the same test set: the same data, kind of split and, by
# content digest, the same held-out interactions (another test_size, seed or filter differs).
COMPARABLE = ("dataset", "checksum", "split", "testset_digest")
# Otherwise, models of one dataset's lineage compare on the common test set; versions registered
# before a lineage tag existed read as its default.
LINEAGE = {"dataset": "", "item_col": ITEM_COL}
# The version tag naming the metric a version was registered (judged) on.
METRIC_TAG = "metric"
# The version tag naming the alias a version failed to take when it was made the challenger.
CHALLENGER_OF_TAG = "challenger_of"
SAME_TEST_SET = "same test set"
COMMON_TEST_SET = "common test set"


@dataclass(frozen=True)
class Policy:
    alias: str
    metric: str  # e.g. ndcg@10, compared on the test split
    min_improvement: float = 0.0  # absolute
    force: bool = False

    @property
    def key(self) -> str:
        """The test metric that decides, as logged: e.g. ``test_ndcg_at_10``."""
        return TEST_PREFIX + metric_key(self.metric)

    def baseline_key(self, prefix: str) -> str:
        """The same metric of a baseline on the same test set: ``popularity_ndcg_at_10``."""
        return prefix + metric_key(self.metric)


@dataclass(frozen=True)
class Model:
    """A model's figures as the registry sees them: its lineage tags and test metrics."""

    tags: Mapping[str, str]
    metrics: Mapping[str, float]
    version: str = ""


@dataclass(frozen=True)
class HeadToHead:
    """Both models' figures of the policy's metric, scored now by the same code on one test set
    (the one ``rule`` chose)."""

    rule: str
    candidate: float
    holder: float


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def comparable(candidate: Model, holder: Model) -> bool:
    """Whether the two models were tested on the same test set."""
    return all(candidate.tags.get(k) == holder.tags.get(k) for k in COMPARABLE)


def incomparable(candidate: Model, holder: Model, policy: Policy) -> tuple[str, str] | None:
    """Why the two models' figures cannot be compared (another metric, dataset or item column),
    and the setting that would make them comparable; None when they can be."""
    holder_is = f"@{policy.alias} (version {holder.version})"
    judged = holder.tags.get(METRIC_TAG)
    if judged and metric_key(judged) != metric_key(policy.metric):
        return (
            f"{holder_is} was registered on {judged}, this model on {policy.metric}: their "
            "figures are not comparable", f"metric={judged}, "
        )  # fmt: skip
    theirs = {k: holder.tags.get(k, v) for k, v in LINEAGE.items()}
    ours = {k: candidate.tags.get(k, v) for k, v in LINEAGE.items()}
    if ours != theirs:
        return (
            f"{holder_is} was trained on {theirs}, this model on {ours}: their "
            f"{policy.metric} are not comparable", ""
        )  # fmt: skip
    return None


def rule(candidate: Model, holder: Model, policy: Policy) -> str:
    """How the two models compare: ``SAME_TEST_SET`` or ``COMMON_TEST_SET``; a one-line
    UserError when they cannot (``incomparable``)."""
    if why := incomparable(candidate, holder, policy):
        reason, setting = why
        raise UserError(
            f"{reason}. Use {setting}another model_name, or force_promote=true to replace it anyway"
        )
    return SAME_TEST_SET if comparable(candidate, holder) else COMMON_TEST_SET


def decide(
    candidate: Model, holder: Model | None, policy: Policy, scored: HeadToHead | None = None
) -> Decision:
    """Promote a forced model, or one that beats popularity on its own test set and is the first
    or beats the holder by more than the minimum improvement, on the test set ``rule`` chose
    (``scored``: both figures scored there; without it, their recorded figures, on the same test
    set only); refuse (UserError) to compare what ``rule`` cannot. Reasons name the baselines
    the candidate carries."""
    if policy.force:
        return Decision(True, "force_promote=true")
    key, mine = policy.key, candidate.metrics[policy.key]
    versus = _versus(candidate, policy)
    popular = candidate.metrics.get(policy.baseline_key(POPULARITY_PREFIX))
    if popular is not None and not mine > popular:
        return Decision(
            False, f"{key} {mine:.4f} does not beat popularity on its own test set{versus}"
        )
    if holder is None:
        return Decision(True, f"first version under @{policy.alias}{versus}")
    how = rule(candidate, holder, policy)
    if scored is not None and scored.rule != how:
        raise ValueError(f"the models compare on the {how}, not the {scored.rule}")
    if scored is None and how != SAME_TEST_SET:
        raise ValueError(f"models compared on the {how} need both scored there (HeadToHead)")
    best = holder.metrics.get(key, math.nan) if scored is None else scored.holder
    mine = mine if scored is None else scored.candidate
    on = "" if how == SAME_TEST_SET else f" on the {how}"
    if mine > best + policy.min_improvement:
        return Decision(True, f"{key} {mine:.4f} beats {best:.4f} + {policy.min_improvement}{on}")
    return Decision(
        False,
        f"{key} {mine:.4f} does not beat @{policy.alias} version {holder.version} "
        f"({best:.4f}) by more than {policy.min_improvement}{on}",
    )


def _versus(candidate: Model, policy: Policy) -> str:
    # " (popularity 0.2137, EASE 0.4502)": the baselines' figures the candidate carries.
    shown = [
        f"{BASELINES[prefix]} {candidate.metrics[policy.baseline_key(prefix)]:.4f}"
        for prefix in (POPULARITY_PREFIX, EASE_PREFIX)
        if policy.baseline_key(prefix) in candidate.metrics
    ]
    return f" ({', '.join(shown)})" if shown else ""
