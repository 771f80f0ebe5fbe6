"""Top-k ranking metrics for all users in one vectorised pass, and the popularity baseline.

In: a scoring function over item positions, the training interactions (excluded from rankings)
and the held-out interactions (the relevant items). Out: mean precision, recall, NDCG, hit rate
and MRR at k over users with at least one held-out item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from recflow.constants import ITEM_COL, POPULARITY_PREFIX, TEST_PREFIX, USER_COL
from recflow.errors import UserError

METRICS = ("precision", "recall", "ndcg", "hit_rate", "mrr")
# Most columns per set when top_k_finite bounds a row's k-th best score by set maxima.
SET_SIZE = 128
Scorer = Callable[[np.ndarray], np.ndarray]  # user positions (B,) -> scores (B, n_items)


class Ranker(Protocol):
    """What evaluation needs of a model (``model.Recommender`` is one)."""

    item_ids: np.ndarray

    def scores(self, user_pos: np.ndarray) -> np.ndarray: ...
    def user_positions(self, user_ids: np.ndarray) -> np.ndarray: ...
    def item_positions(self, item_ids: np.ndarray) -> np.ndarray: ...


def metric_names(k: int) -> list[str]:
    """Names as logged to MLflow, e.g. ``ndcg_at_10``; ``@`` is not allowed in metric keys."""
    return [_key(m, k) for m in METRICS]


def metric_key(name: str) -> str:
    """The logged key of a metric the user gave as ``ndcg@10`` (or as ``ndcg_at_10``)."""
    try:
        return _key(*parse_metric(name))
    except ValueError as e:
        raise UserError(str(e)) from e


def _key(base: str, k: int) -> str:
    return f"{base}_at_{k}"


def parse_metric(name: str) -> tuple[str, int]:
    """``"ndcg@10"`` or ``"ndcg_at_10"`` -> ("ndcg", 10)."""
    base, sep, k = name.replace("_at_", "@").partition("@")
    if base not in METRICS or not sep or not k.isdigit() or int(k) < 1:
        raise ValueError(
            f"unknown metric {name!r}; use <metric>@<k> with metric one of {', '.join(METRICS)}"
        )
    return base, int(k)


def top_k_finite(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) positions of each row's ``k`` best finite scores: row by row, best first,
    ties by column; a row with fewer than ``k`` finite scores gives all of them.

    No row is sorted or partitioned whole. Split into ``k`` or more disjoint sets, a row's
    ``k``-th largest set maximum is at most its ``k``-th largest score, so only the sets whose
    maximum reaches that bound (a few more than ``k`` of them) need a closer look.
    """
    n_rows, n = scores.shape
    # ~4k sets: the bound then lets through ~1.15k scores. Set j is columns j, j + n_sets, ...
    # so that its maximum is an elementwise maximum of contiguous rows (vectorised).
    size = max(1, min(SET_SIZE, n // (4 * k)))
    n_sets = n // size
    whole = size * n_sets
    sets = scores[:, :whole].reshape(n_rows, size, n_sets)
    maxima = sets.max(axis=1)
    bound = np.partition(maxima, n_sets - k, axis=1)[:, n_sets - k]
    # Never -inf: excluded items are no candidates, and a row short of k keeps every finite one.
    bound = np.maximum(bound, np.finfo(scores.dtype).min)[:, None]
    r, j = np.nonzero(maxima >= bound)
    hot, i = np.nonzero(sets[r, :, j] >= bound[r])
    tail_rows, tail_cols = np.nonzero(scores[:, whole:] >= bound)  # the last n % size columns
    rows = np.concatenate([r[hot], tail_rows])
    cols = np.concatenate([i * n_sets + j[hot], tail_cols + whole])
    order = np.lexsort((cols, -scores[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    keep = np.arange(rows.size) - np.searchsorted(rows, rows) < k
    return rows[keep], cols[keep]


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
            len(model.item_ids), _positions(model, seen), _positions(model, held_out)
        )

    def evaluate(self, scorer: Scorer, k: int, batch_size: int = 1024) -> dict[str, float]:
        """Mean metrics at ``k`` over ``users``, seen items excluded from their rankings."""
        return self.tally(scorer, [k], batch_size).metrics(k)

    def tally(self, scorer: Scorer, ks: Iterable[int], batch_size: int = 1024) -> Tally:
        """Rank every user's top ``max(ks)`` once; metrics at each of ``ks`` and exposure."""
        ks = sorted(set(ks))
        top = min(ks[-1], self.n_items)
        sums = {k: dict.fromkeys(METRICS, 0.0) for k in ks}
        exposure = np.zeros(top * self.n_items, dtype=np.int64)
        users, seen_u, seen_i, rel_keys = self.users, self.seen_u, self.seen_i, self.rel_keys
        row = np.full(int(max(seen_u.max(initial=0), users[-1])) + 1, -1)
        for start in range(0, users.size, batch_size):
            batch = users[start : start + batch_size]
            scores = scorer(batch)
            if not scores.flags.writeable:  # e.g. popularity's one row broadcast to all
                scores = np.array(scores, dtype=np.float32)
            # Seen items to -inf in place: no dense mask and no second users x items array.
            lo, hi = np.searchsorted(seen_u, [batch[0], batch[-1] + 1])
            row[batch] = np.arange(batch.size)
            r = row[seen_u[lo:hi]]
            scores[r[r >= 0], seen_i[lo:hi][r >= 0]] = -np.inf
            row[batch] = -1
            rows, cols = top_k_finite(scores, top)
            rank = np.arange(rows.size) - np.searchsorted(rows, rows)
            keys = batch[rows].astype(np.int64) * self.n_items + cols
            found = np.minimum(np.searchsorted(rel_keys, keys), rel_keys.size - 1)
            hits = np.zeros((batch.size, top), dtype=bool)  # a user short of k unseen: misses
            hits[rows, rank] = rel_keys[found] == keys
            exposure += np.bincount(rank * self.n_items + cols, minlength=exposure.size)
            n_rel = self.n_relevant[start : start + batch_size]
            for k in ks:
                # ranking_metrics divides precision by k itself: pad a catalogue shorter than k.
                at_k = hits[:, :k] if k <= top else np.pad(hits, ((0, 0), (0, k - top)))
                for name, values in ranking_metrics(at_k, n_rel).items():
                    sums[k][name] += float(values.sum())
        return Tally(users.size, sums, exposure.reshape(top, self.n_items))


@dataclass(frozen=True)
class Tally:
    """One ranking pass over a holdout's users: each metric summed over users at each k, and
    how often each item was recommended at each rank."""

    n_users: int
    sums: dict[int, dict[str, float]]
    exposure: np.ndarray  # (ranks, n_items)

    def metrics(self, k: int) -> dict[str, float]:
        """Mean metrics at ``k``, keyed as logged (``ndcg_at_10``)."""
        return {_key(name, k): total / self.n_users for name, total in self.sums[k].items()}

    def shown(self, k: int) -> np.ndarray:
        """How many users had each item in their top ``k``."""
        return self.exposure[:k].sum(axis=0)


BEYOND_ACCURACY = ("coverage", "gini", "novelty", "avg_popularity")


def beyond_accuracy(shown: np.ndarray, popularity: np.ndarray, n_users: int) -> dict[str, float]:
    """Beyond-accuracy figures of top-k lists, from how many users were shown each catalogue
    item (``shown``) and how many training users had it (``popularity``):

    - coverage: the share of the catalogue recommended to anyone;
    - gini: the Gini index of exposure over the catalogue, 0 when every item is shown equally
      often, (n - 1) / n when one item takes it all;
    - novelty: the mean self-information -log2(popularity / n_users) of recommended items;
    - avg_popularity: the mean training popularity of recommended items.
    """
    total = shown.sum()
    if not total:
        raise ValueError("no recommendations to measure")
    n = shown.size
    ascending = np.sort(shown).astype(np.float64)
    gini = float(((2 * np.arange(1, n + 1) - n - 1) * ascending).sum() / (n * total))
    # An item no training user had (only side features could rank it) is as novel as can be.
    share = np.maximum(popularity, 1) / n_users
    return {
        "coverage": float((shown > 0).mean()),
        "gini": gini,
        "novelty": float((shown * -np.log2(share)).sum() / total),
        "avg_popularity": float((shown * popularity).sum() / total),
    }


def popularity_scorer(train_items: np.ndarray, n_items: int) -> Scorer:
    """Score every item by its training count, the same for every user."""
    counts = np.bincount(train_items, minlength=n_items).astype(np.float32)
    return lambda users: np.broadcast_to(counts, (len(users), n_items))


def evaluate_model(
    model: Ranker, seen: pd.DataFrame, held_out: pd.DataFrame, k: int
) -> dict[str, float]:
    """Metrics of ``model`` on ``held_out`` interactions, excluding ``seen`` ones from rankings."""
    return Holdout.of(model, seen, held_out).evaluate(model.scores, k)


def evaluate_popularity(
    model: Ranker, seen: pd.DataFrame, held_out: pd.DataFrame, k: int
) -> dict[str, float]:
    """The same metrics for ranking every user's items by training popularity."""
    seen_pos = _positions(model, seen)
    scorer = popularity_scorer(seen_pos[1], len(model.item_ids))
    return evaluate(scorer, len(model.item_ids), seen_pos, _positions(model, held_out), k)


def _positions(model: Ranker, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    # Pairs whose user or item the model does not know cannot be ranked: drop them.
    u = model.user_positions(df[USER_COL].to_numpy())
    i = model.item_positions(df[ITEM_COL].to_numpy())
    keep = (u >= 0) & (i >= 0)
    return u[keep], i[keep]


# train_best's plots show the metrics at every k up to this.
CURVE_K = 20


@dataclass(frozen=True)
class Report:
    """train_best's test: the metrics it logs and what its plots are drawn from."""

    metrics: dict[str, float]  # test_... and popularity_... at each asked k
    tallies: dict[str, Tally]  # by prefix (test_, popularity_), ranks 1..CURVE_K at least
    popularity: np.ndarray  # training users of each catalogue item


def test_report(model: Ranker, seen: pd.DataFrame, test: pd.DataFrame, ks: Iterable[int]) -> Report:
    """Every metric at every k in ``ks``, accuracy and beyond, for the model (``test_``...) and
    for popularity (``popularity_``...), as train_best logs them; one ranking pass each."""
    holdout = Holdout.of(model, seen, test)
    n_items = holdout.n_items
    popularity = np.bincount(holdout.seen_i, minlength=n_items)
    n_users = seen[USER_COL].nunique()
    scorers = {
        TEST_PREFIX: model.scores,
        POPULARITY_PREFIX: popularity_scorer(holdout.seen_i, n_items),
    }
    ks = sorted(set(ks))
    metrics, tallies = {}, {}
    for prefix, scorer in scorers.items():
        tally = tallies[prefix] = holdout.tally(scorer, [*ks, *range(1, CURVE_K + 1)])
        for k in ks:
            shown = beyond_accuracy(tally.shown(k), popularity, n_users)
            metrics |= {prefix + key: v for key, v in tally.metrics(k).items()}
            metrics |= {prefix + _key(name, k): v for name, v in shown.items()}
    return Report(metrics, tallies, popularity)
