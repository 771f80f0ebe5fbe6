"""Evaluation speed: recflow.evaluation.metrics (one vectorised top-k pass) vs rankfmc.evaluation (ratio).

Both evaluate the same trained rankfm model on the same held-out interactions at k=10, with
training items filtered out: five metrics (precision, recall, NDCG/DCG, hit rate, MRR). Data:
the real ML-100K random split, and the synthetic ML-1M-scale set of bench/synthetic_ml1m.py. Usage:

    .venv/bin/python bench/eval_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synthetic_ml1m import ml1m_ratings  # noqa: E402
from recflow.data import preprocess  # noqa: E402
from recflow.evaluation.accuracy import evaluate  # noqa: E402

ML100K = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"


def ml100k() -> pd.DataFrame:
    cols = ["user_id", "item_id", "rating", "timestamp"]
    return pd.read_csv(ML100K, sep="\t", names=cols)


def bench(name: str, ratings: pd.DataFrame) -> None:
    from rankfmc import RankFM
    from rankfmc import evaluation as ev

    parts = preprocess.split(ratings, "random", 0.2, 0.1, np.random.default_rng(1492))
    train, test = parts.train[["user_id", "item_id"]], parts.test[["user_id", "item_id"]]
    np.random.seed(0)  # rankfm's own RNG; a benchmark script may set it
    model = RankFM(factors=20, loss="warp", max_samples=20, learning_rate=0.1)
    model.fit(train, epochs=5)

    start = time.perf_counter()
    theirs = {
        "precision": ev.precision(model, test, k=10, filter_previous=True),
        "recall": ev.recall(model, test, k=10, filter_previous=True),
        "dcg": ev.discounted_cumulative_gain(model, test, k=10, filter_previous=True),
        "hit_rate": ev.hit_rate(model, test, k=10, filter_previous=True),
        "mrr": ev.reciprocal_rank(model, test, k=10, filter_previous=True),
    }
    t_theirs = time.perf_counter() - start

    start = time.perf_counter()
    u_index, i_index = pd.Index(model.user_id), pd.Index(model.item_id)
    user_emb, item_emb = model.v_u, model.v_i

    def positions(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        u, i = u_index.get_indexer(df.user_id), i_index.get_indexer(df.item_id)
        keep = (u >= 0) & (i >= 0)
        return u[keep], i[keep]

    ours = evaluate(
        lambda users: user_emb[users] @ item_emb.T + model.w_i,
        len(i_index), positions(train), positions(test), k=10,
    )  # fmt: skip
    t_ours = time.perf_counter() - start
    print(
        f"{name}: {len(train):,} train / {len(test):,} test interactions; "
        f"rankfmc.evaluation {t_theirs:.2f} s, recflow.evaluation.metrics {t_ours:.3f} s, "
        f"speed-up {t_theirs / t_ours:.0f}x"
    )
    print(
        f"  agreement: precision {theirs['precision']:.4f} vs {ours['precision_at_10']:.4f}, "
        f"recall {theirs['recall']:.4f} vs {ours['recall_at_10']:.4f}, "
        f"hit rate {theirs['hit_rate']:.4f} vs {ours['hit_rate_at_10']:.4f}, "
        f"MRR {theirs['mrr']:.4f} vs {ours['mrr_at_10']:.4f}"
    )


def main() -> None:
    if ML100K.is_file():
        bench("ML-100K", ml100k())
    else:
        print(f"skipping ML-100K: {ML100K} not found")
    bench("ML-1M scale (synthetic)", ml1m_ratings(np.random.default_rng(7)))


if __name__ == "__main__":
    main()
