"""predict at ML-25M scale, before and after issue 10: one batch of users, and one user.

Builds in memory (no MLflow) a served model of ML-25M's shape: 162,541 users x 59,047 items,
random float32 embeddings of 64 columns, and a long-tailed seen table of ~19M pairs as CSR.
Times ``RecommenderModel.predict`` (k=10, seen items filtered) on batches of ``--batch`` users
and on single users, against the predict before issue 10 (kept below: every user's scores, a
dense bool mask of seen items, two ``np.where`` copies and ``metrics.top_k``'s argpartition of
whole rows), interleaved in one process. Prints both, and the old / new ratios. Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/predict_speed.py [--batch 1000] [--reps 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recflow import serving  # noqa: E402
from recflow.constants import USER_COL  # noqa: E402
from recflow.model import FMParams, Recommender  # noqa: E402

N_USERS, N_ITEMS, N_SEEN, DIM = 162_541, 59_047, 19_000_000, 64


def build(rng: np.random.Generator) -> serving.RecommenderModel:
    """An ML-25M-shaped RecommenderModel, as load_context would leave it."""
    item_ids = np.sort(rng.choice(np.arange(1, 209_172), N_ITEMS, replace=False))
    model = Recommender(
        FMParams(factors=DIM // 2), np.arange(1, N_USERS + 1), item_ids,
        rng.standard_normal((N_USERS, DIM), dtype=np.float32) * 0.3,
        rng.standard_normal((N_ITEMS, DIM), dtype=np.float32) * 0.3,
        rng.standard_normal(N_ITEMS, dtype=np.float32),
    )  # fmt: skip
    sizes = rng.lognormal(0, 1.1, N_USERS)
    sizes = np.clip(sizes / sizes.sum() * N_SEEN, 1, N_ITEMS // 2).astype(np.int64)
    served = serving.RecommenderModel()
    served.model = model
    served.titles = np.array([f"Movie {i} (2000)" for i in item_ids], dtype=object)
    served.genres = np.full(N_ITEMS, "Drama|Comedy", dtype=object)
    served.seen_indptr = np.concatenate([[0], np.cumsum(sizes)])
    served.seen_indices = rng.integers(0, N_ITEMS, sizes.sum(), dtype=np.int32)
    served.popularity = np.bincount(served.seen_indices, minlength=N_ITEMS).astype(np.float32)
    served.popular = np.argsort(-served.popularity, kind="stable")
    return served


def top_k(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """The ranking before issue 10: a masked copy of every score, partitioned whole."""
    scores = np.where(exclude, -np.inf, scores)
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def old_predict(self: serving.RecommenderModel, users: np.ndarray, k: int) -> pd.DataFrame:
    """predict's ranking before issue 10 (input checks left out: they are unchanged)."""
    pos = self.model.user_positions(users)
    known = pos >= 0
    scores = np.empty((len(users), len(self.model.item_ids)), dtype=np.float32)
    scores[known] = self.model.user_emb[pos[known]] @ self.model.item_emb.T + self.model.item_bias
    scores[~known] = self.popularity
    exclude = np.zeros_like(scores, dtype=bool)
    if known.any():
        lo, hi = self.seen_indptr[pos[known]], self.seen_indptr[pos[known] + 1]
        counts = hi - lo
        idx = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        exclude[np.repeat(np.flatnonzero(known), counts), self.seen_indices[idx]] = True
    ranked = top_k(scores, exclude, k)
    kk = ranked.shape[1]
    flat = ranked.ravel()
    out = pd.DataFrame(
        {
            serving.USER_COL: np.repeat(users, kk),
            serving.RANK_COL: np.tile(np.arange(1, kk + 1), len(users)),
            serving.ITEM_COL: self.model.item_ids[flat],
            serving.TITLE_COL: self.titles[flat],
            serving.GENRES_COL: self.genres[flat],
            serving.SCORE_COL: np.where(exclude, -np.inf, scores)[
                np.repeat(np.arange(len(users)), kk), flat
            ].astype(float),
            serving.SOURCE_COL: np.repeat(np.where(known, "model", "popular"), kk),
        },
        columns=serving.OUTPUT_COLS,
    )
    return out[np.isfinite(out[serving.SCORE_COL])].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="users per batch")
    parser.add_argument("--reps", type=int, default=3, help="batches timed per side")
    parser.add_argument("--singles", type=int, default=300, help="one-user calls per side")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    served = build(rng)
    sides = {
        "old": lambda users: old_predict(served, users, 10),
        "new": lambda users: served.predict(None, pd.DataFrame({USER_COL: users}), {"k": 10}),
    }
    batch = {name: [] for name in sides}
    for rep in range(args.reps + 1):  # the first round warms up
        users = rng.choice(np.arange(1, N_USERS + 1), args.batch, replace=False)
        outs = {}
        for name, predict in sides.items():
            start = time.perf_counter()
            outs[name] = predict(users)
            if rep:
                batch[name].append(time.perf_counter() - start)
        # Same users, ranks and scores (items may differ only where scores tie).
        a, b = (
            outs["old"].drop(columns=["item_id", "title"]),
            outs["new"].drop(columns=["item_id", "title"]),
        )
        pd.testing.assert_frame_equal(a, b)
    one = {name: [] for name in sides}
    for user in rng.integers(1, N_USERS + 1, args.singles + 20):
        for name, predict in sides.items():
            start = time.perf_counter()
            predict(np.array([user]))
            one[name].append(time.perf_counter() - start)
    print(f"model: {N_USERS:,} users x {N_ITEMS:,} items x {DIM} dims, "
          f"{served.seen_indptr[-1]:,} seen pairs")  # fmt: skip
    for name in sides:
        b, o = np.array(batch[name]), np.array(one[name][20:]) * 1000
        print(
            f"{name}: {args.batch} users in {np.median(b):.3f} s (median of {len(b)}; "
            f"{np.median(b) / args.batch * 1000:.3f} ms/user); one user p50 "
            f"{np.percentile(o, 50):.2f} ms, p99 {np.percentile(o, 99):.2f} ms"
        )
    ratio_b = np.median(batch["old"]) / np.median(batch["new"])
    ratio_1 = np.percentile(one["old"][20:], 50) / np.percentile(one["new"][20:], 50)
    print(f"old / new: batch {ratio_b:.2f}x, one-user p50 {ratio_1:.2f}x")


if __name__ == "__main__":
    main()
