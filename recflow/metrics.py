"""Top-k ranking metrics for all users in one vectorised pass, and the popularity baseline.

In: a scoring function over item positions, the training interactions (excluded from rankings)
and the held-out interactions (the relevant items). Out: mean precision, recall, NDCG, hit rate
and MRR at k over users with at least one held-out item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np
import pandas as pd

from recflow.constants import ITEM_COL, POPULARITY_PREFIX, TEST_PREFIX, USER_COL
from recflow.errors import UserError

METRICS = ("precision", "recall", "ndcg", "hit_rate", "mrr")
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


def top_k(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """Column positions of the ``k`` best scores per row, best first, skipping ``exclude``."""
    scores = np.where(exclude, -np.inf, scores)
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


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
        "ndcg": dcg / idcg,
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
    users = np.unique(relevant[0])
    if users.size == 0:
        raise ValueError("no held-out interactions to evaluate on")
    totals = dict.fromkeys(METRICS, 0.0)
    # Sort both sets by user once, so each batch reads one contiguous slice of them.
    seen_u, seen_i = _by_user(*seen)
    rel_u, rel_i = _by_user(*relevant)
    row = np.full(int(max(seen_u.max(initial=0), rel_u.max())) + 1, -1)
    for start in range(0, users.size, batch_size):
        batch = users[start : start + batch_size]
        row[batch] = np.arange(batch.size)
        exclude = _dense(row, seen_u, seen_i, batch, n_items)
        rel = _dense(row, rel_u, rel_i, batch, n_items)
        row[batch] = -1
        ranked = top_k(scorer(batch), exclude, k)
        hits = np.take_along_axis(rel, ranked, axis=1)
        for name, values in ranking_metrics(hits, rel.sum(axis=1)).items():
            totals[name] += float(values.sum())
    return {_key(name, k): total / users.size for name, total in totals.items()}


def _by_user(u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(u, kind="stable")
    return u[order], i[order]


def _dense(
    row: np.ndarray, u: np.ndarray, i: np.ndarray, batch: np.ndarray, n_items: int
) -> np.ndarray:
    # Boolean (batch, n_items) matrix of the pairs whose user is in ``batch``.
    lo, hi = np.searchsorted(u, [batch[0], batch[-1] + 1])
    r = row[u[lo:hi]]
    out = np.zeros((batch.size, n_items), dtype=bool)
    out[r[r >= 0], i[lo:hi][r >= 0]] = True
    return out


def popularity_scorer(train_items: np.ndarray, n_items: int) -> Scorer:
    """Score every item by its training count, the same for every user."""
    counts = np.bincount(train_items, minlength=n_items).astype(np.float32)
    return lambda users: np.broadcast_to(counts, (len(users), n_items))


def evaluate_model(
    model: Ranker, seen: pd.DataFrame, held_out: pd.DataFrame, k: int
) -> dict[str, float]:
    """Metrics of ``model`` on ``held_out`` interactions, excluding ``seen`` ones from rankings."""
    return evaluate(
        model.scores, len(model.item_ids), _positions(model, seen), _positions(model, held_out), k
    )


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


def test_report(
    model: Ranker, seen: pd.DataFrame, test: pd.DataFrame, ks: Iterable[int]
) -> dict[str, float]:
    """Every metric at every k in ``ks`` for the model (``test_``...) and for popularity
    (``popularity_``...), as train_best logs them."""
    report = {}
    for k in sorted(set(ks)):
        ours = evaluate_model(model, seen, test, k)
        baseline = evaluate_popularity(model, seen, test, k)
        report |= {TEST_PREFIX + name: value for name, value in ours.items()}
        report |= {POPULARITY_PREFIX + name: value for name, value in baseline.items()}
    return report
