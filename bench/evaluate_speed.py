"""Validation cost per epoch, before and after ranking by ``top_k_finite``: one ratio per shape.

``metrics.evaluate`` runs after every epoch of every trial. Before, each batch of users built
two dense users x items boolean masks (seen and relevant), a masked copy of the scores and a
negated copy for ``argpartition`` of whole rows (kept below as ``old_evaluate``). Now seen items
are set to -inf in the score block itself, ``top_k_finite`` looks only at the few candidate
columns, and hits are binary searches in the sorted relevant pairs.

Shapes: an ML-1M validation pass (6,040 users x 3,706 items, 40 embedding columns, ~125 seen
and ~16 held-out items per user) and an ML-25M-scale hpo pass (10,000 sampled users x 53,000
items, 80 columns). Random embeddings and long-tailed seen items; both sides get the same data
and must return the same metrics. Usage::

    .venv/bin/python bench/evaluate_speed.py [--reps 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recflow import metrics  # noqa: E402

SHAPES = {  # name: users, items, embedding columns, seen per user, held out per user
    "ml-1m": (6_040, 3_706, 40, 125, 16),
    "ml-25m hpo": (10_000, 53_000, 80, 100, 12),
}


def old_evaluate(scorer, n_items, seen, relevant, k, batch_size=1024) -> dict[str, float]:
    """metrics.evaluate before this change."""
    users = np.unique(relevant[0])
    totals = dict.fromkeys(metrics.METRICS, 0.0)
    seen_u, seen_i = _by_user(*seen)
    rel_u, rel_i = _by_user(*relevant)
    row = np.full(int(max(seen_u.max(initial=0), rel_u.max())) + 1, -1)
    for start in range(0, users.size, batch_size):
        batch = users[start : start + batch_size]
        row[batch] = np.arange(batch.size)
        exclude = _dense(row, seen_u, seen_i, batch, n_items)
        rel = _dense(row, rel_u, rel_i, batch, n_items)
        row[batch] = -1
        scores = np.where(exclude, -np.inf, scorer(batch))
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        ranked = np.take_along_axis(part, order, axis=1)
        hits = np.take_along_axis(rel, ranked, axis=1)
        for name, values in metrics.ranking_metrics(hits, rel.sum(axis=1)).items():
            totals[name] += float(values.sum())
    return {f"{name}_at_{k}": total / users.size for name, total in totals.items()}


def _by_user(u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(u, kind="stable")
    return u[order], i[order]


def _dense(row, u, i, batch, n_items) -> np.ndarray:
    lo, hi = np.searchsorted(u, [batch[0], batch[-1] + 1])
    r = row[u[lo:hi]]
    out = np.zeros((batch.size, n_items), dtype=bool)
    out[r[r >= 0], i[lo:hi][r >= 0]] = True
    return out


def case(shape: tuple[int, ...], rng: np.random.Generator):
    """A scorer and (seen, held-out) pairs of the given shape; held-out items are unseen."""
    n_users, n_items, dim, n_seen, n_held = shape
    user_emb = rng.standard_normal((n_users, dim), dtype=np.float32)
    item_emb = rng.standard_normal((n_items, dim), dtype=np.float32)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pairs = [
        rng.choice(n_items, n_seen + n_held, replace=False, p=popularity / popularity.sum())
        for _ in range(n_users)
    ]
    items = np.stack(pairs)
    users = np.arange(n_users)
    seen = np.repeat(users, n_seen), items[:, :n_seen].ravel()
    held = np.repeat(users, n_held), items[:, n_seen:].ravel()
    return (lambda u: user_emb[u] @ item_emb.T), n_items, seen, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| shape | before (s) | after (s) | before / after |\n|---|---|---|---|")
    for name, shape in SHAPES.items():
        scorer, n_items, seen, held = case(shape, rng)
        times = {"before": [], "after": []}
        for _ in range(args.reps):  # interleaved, so that load falls on both sides alike
            for side, evaluate in (("before", old_evaluate), ("after", metrics.evaluate)):
                start = time.perf_counter()
                got = evaluate(scorer, n_items, seen, held, 10)
                times[side].append(time.perf_counter() - start)
                if side == "before":
                    expected = got
                else:
                    assert got == expected, (got, expected)
        before, after = min(times["before"]), min(times["after"])
        print(f"| {name} | {before:.2f} | {after:.2f} | {before / after:.2f}x |")


if __name__ == "__main__":
    main()
