"""The promotion policy: does a newly trained model take the alias from the current holder?

In: the candidate's and the current holder's test figures (the candidate's with its baselines'
on the same test set) and data lineage, and the policy. Out: a ``Decision`` (promote or not,
and why). A model that does not beat popularity on its own test set is never promoted unless
forced. Pure: no MLflow, so it is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from recflow.constants import EASE_PREFIX, POPULARITY_PREFIX, TEST_PREFIX
from recflow.errors import UserError
from recflow.evaluation.names import metric_key

# Test results are comparable only on the same test set: the same data, kind of split and, by
# content digest, the same held-out interactions (another test_size, seed or filter differs).
COMPARABLE = ("dataset", "checksum", "split", "testset_digest")


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
class Decision:
    promote: bool
    reason: str


def comparable(candidate: Model, holder: Model) -> bool:
    """Whether the two models were tested on the same test set."""
    return all(candidate.tags.get(k) == holder.tags.get(k) for k in COMPARABLE)


def decide(candidate: Model, holder: Model | None, policy: Policy) -> Decision:
    """Promote a forced model, or one that beats popularity on its own test set and is the first
    or beats the holder by more than the minimum improvement; refuse (UserError) to compare
    models tested on different data. Reasons name the baselines the candidate carries."""
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
    theirs = {k: holder.tags.get(k) for k in COMPARABLE}
    ours = {k: candidate.tags.get(k) for k in COMPARABLE}
    if not comparable(candidate, holder):
        raise UserError(
            f"@{policy.alias} (version {holder.version}) was tested on {theirs}, this model on "
            f"{ours}: their {policy.metric} are not comparable. Use "
            "another model_name, or force_promote=true to replace it anyway"
        )
    best = holder.metrics.get(key, math.nan)
    if mine > best + policy.min_improvement:
        return Decision(True, f"{key} {mine:.4f} beats {best:.4f} + {policy.min_improvement}")
    return Decision(
        False,
        f"{key} {mine:.4f} does not beat @{policy.alias} version {holder.version} "
        f"({best:.4f}) by more than {policy.min_improvement}",
    )


def _versus(candidate: Model, policy: Policy) -> str:
    # " (popularity 0.2137, EASE 0.4502)": the baselines' figures the candidate carries.
    shown = [
        f"{label} {candidate.metrics[policy.baseline_key(prefix)]:.4f}"
        for prefix, label in ((POPULARITY_PREFIX, "popularity"), (EASE_PREFIX, "EASE"))
        if policy.baseline_key(prefix) in candidate.metrics
    ]
    return f" ({', '.join(shown)})" if shown else ""
