"""Top-k accuracy for all users in one vectorised pass.

In: a scoring function over item positions, the training interactions (excluded from rankings)
and the held-out interactions (the relevant items). Out: mean precision, recall, NDCG, hit rate
and MRR at k over users with at least one held-out item.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from recflow.constants import ITEM_COL, USER_COL
from recflow.evaluation.names import METRICS, key
from recflow.evaluation.topk import top_k_finite

Scorer = Callable[[np.ndarray], np.ndarray]  # user positions (B,) -> scores (B, n_items)


class Ranker(Protocol):
    """What evaluation needs of a model (``model.Recommender`` is one)."""

    user_ids: np.ndarray
    item_ids: np.ndarray

    def scores(self, user_pos: np.ndarray) -> np.ndarray: ...
    def user_positions(self, user_ids: np.ndarray) -> np.ndarray: ...
    def item_positions(self, item_ids: np.ndarray) -> np.ndarray: ...


def ranking_metrics(hits: np.ndarray, n_relevant: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user metrics from a (users, k) boolean hit matrix and each user's relevant count."""
    k = hits.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    idcg = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    return {
        "precision": hits.sum(axis=1) / k,
        "recall": hits.sum(axis=1) / n_relevant,
        # The two sums round differently: a perfect ranking could score 1.0000000000000002.
        "ndcg": np.minimum(dcg / idcg, 1.0),
        "hit_rate": hits.any(axis=1).astype(float),
        "mrr": 1.0 / first,
    }


def evaluate(
    scorer: Scorer,
    n_items: int,
    seen: tuple[np.ndarray, np.ndarray],
    relevant: tuple[np.ndarray, np.ndarray],
    k: int,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean metrics at ``k`` over users with held-out items.

    ``seen`` and ``relevant`` are (user positions, item positions) pairs; positions index the
    scorer's rows and columns. Seen items are excluded from each user's ranking.
    """
    return Holdout.from_pairs(n_items, seen, relevant).evaluate(scorer, k, batch_size)


@dataclass(frozen=True)
class Holdout:
    """Seen and held-out pairs as positions, indexed once for evaluating many times (every
    epoch of a trial): seen pairs sorted by user, so that a batch of users reads one slice;
    held-out pairs as sorted ``user * n_items + item`` keys, so that a hit is a binary search."""

    n_items: int
    users: np.ndarray  # users with held-out items, ascending
    seen_u: np.ndarray
    seen_i: np.ndarray
    rel_keys: np.ndarray
    n_relevant: np.ndarray  # distinct held-out items of each of ``users``

    @classmethod
    def from_pairs(
        cls,
        n_items: int,
        seen: tuple[np.ndarray, np.ndarray],
        relevant: tuple[np.ndarray, np.ndarray],
    ) -> Holdout:
        """From (user positions, item positions) pairs."""
        users = np.unique(relevant[0])
        if users.size == 0:
            raise ValueError("no held-out interactions to evaluate on")
        order = np.argsort(seen[0], kind="stable")
        rel_keys = np.unique(relevant[0].astype(np.int64) * n_items + relevant[1])
        n_relevant = np.bincount(rel_keys // n_items)[users]
        return cls(n_items, users, seen[0][order], seen[1][order], rel_keys, n_relevant)

    @classmethod
    def of(cls, model: Ranker, seen: pd.DataFrame, held_out: pd.DataFrame) -> Holdout:
        """``seen`` and ``held_out`` interactions as ``model``'s positions; pairs the model
        cannot rank (unknown user or item) are left out."""
        return cls.from_pairs(
            len(model.item_ids), positions(model, seen), positions(model, held_out)
        )

    def evaluate(self, scorer: Scorer, k: int, batch_size: int = 1024) -> dict[str, float]:
        """Mean metrics at ``k`` over ``users``, seen items excluded from their rankings."""
        return self.tally(scorer, [k], batch_size).metrics(k)

    def tally(
        self, scorer: Scorer, ks: Iterable[int], batch_size: int = 1024, exposure: bool = False
    ) -> Tally:
        """Rank every user's top ``max(ks)`` once; metrics at each of ``ks`` and, with
        ``exposure``, how often each item was shown at each rank (a ranks x items count that
        per-epoch validation has no use for)."""
        (tally,) = self.tally_each(
            lambda batch: [(None, scorer(batch))], ks, batch_size, exposure
        ).values()
        return tally

    def tally_each(
        self,
        scorers: Callable[[np.ndarray], Iterable[tuple[Hashable, np.ndarray]]],
        ks: Iterable[int],
        batch_size: int = 1024,
        exposure: bool = False,
    ) -> dict[Hashable, Tally]:
        """``tally`` of several rankers in one pass over the users: ``scorers`` gives, for a
        batch of users, each ranker's scores under its key (rankers that share work, such as
        blends of the same two scorers, compute it once a batch). Each scores array is written
        to (seen items to -inf): give each key an array of its own."""
        ks = sorted(set(ks))
        top = min(ks[-1], self.n_items)
        sums: dict[Hashable, dict[int, dict[str, float]]] = {}
        shown: dict[Hashable, np.ndarray] = {}
        users, seen_u, seen_i, rel_keys = self.users, self.seen_u, self.seen_i, self.rel_keys
        row = np.full(int(max(seen_u.max(initial=0), users[-1])) + 1, -1)
        for start in range(0, users.size, batch_size):
            batch = users[start : start + batch_size]
            lo, hi = np.searchsorted(seen_u, [batch[0], batch[-1] + 1])
            row[batch] = np.arange(batch.size)
            r = row[seen_u[lo:hi]]
            seen_rows, seen_cols = r[r >= 0], seen_i[lo:hi][r >= 0]
            row[batch] = -1
            n_rel = self.n_relevant[start : start + batch_size]
            for name, scores in scorers(batch):
                if not scores.flags.writeable:  # e.g. popularity's one row broadcast to all
                    scores = np.array(scores, dtype=np.float32)
                # Seen items to -inf in place: no dense mask and no second users x items array.
                scores[seen_rows, seen_cols] = -np.inf
                rows, cols = top_k_finite(scores, top)
                rank = np.arange(rows.size) - np.searchsorted(rows, rows)
                keys = batch[rows].astype(np.int64) * self.n_items + cols
                found = np.minimum(np.searchsorted(rel_keys, keys), rel_keys.size - 1)
                hits = np.zeros((batch.size, top), dtype=bool)  # a user short of k unseen: misses
                hits[rows, rank] = rel_keys[found] == keys
                if exposure:
                    counts = np.bincount(rank * self.n_items + cols, minlength=top * self.n_items)
                    shown[name] = shown.get(name, 0) + counts
                by_k = sums.setdefault(name, {k: dict.fromkeys(METRICS, 0.0) for k in ks})
                for k in ks:
                    # ranking_metrics divides precision by k itself: pad a catalogue shorter
                    # than k.
                    at_k = hits[:, :k] if k <= top else np.pad(hits, ((0, 0), (0, k - top)))
                    for metric, values in ranking_metrics(at_k, n_rel).items():
                        by_k[k][metric] += float(values.sum())
        return {
            name: Tally(
                users.size, by_k, shown[name].reshape(top, self.n_items) if exposure else None
            )
            for name, by_k in sums.items()
        }


@dataclass(frozen=True)
class Tally:
    """One ranking pass over a holdout's users: each metric summed over users at each k, and
    how often each item was recommended at each rank."""

    n_users: int
    sums: dict[int, dict[str, float]]
    exposure: np.ndarray | None  # (ranks, n_items), if asked for

    def metrics(self, k: int) -> dict[str, float]:
        """Mean metrics at ``k``, keyed as logged (``ndcg_at_10``)."""
        return {key(name, k): total / self.n_users for name, total in self.sums[k].items()}

    def shown(self, k: int) -> np.ndarray:
        """How many users had each item in their top ``k``."""
        if self.exposure is None:
            raise ValueError("this tally was made without exposure=True")
        return self.exposure[:k].sum(axis=0)


def evaluate_model(
    model: Ranker, seen: pd.DataFrame, held_out: pd.DataFrame, k: int
) -> dict[str, float]:
    """Metrics of ``model`` on ``held_out`` interactions, excluding ``seen`` ones from rankings."""
    return Holdout.of(model, seen, held_out).evaluate(model.scores, k)


def positions(model: Ranker, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    # Pairs whose user or item the model does not know cannot be ranked: drop them.
    u = model.user_positions(df[USER_COL].to_numpy())
    i = model.item_positions(df[ITEM_COL].to_numpy())
    keep = (u >= 0) & (i >= 0)
    return u[keep], i[keep]
