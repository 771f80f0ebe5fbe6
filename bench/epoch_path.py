"""Cost of training epoch by epoch (the path pruning and early stopping need) vs one ``fit`` call.

Both sides train the same configuration (rankfm's example: 20 factors, WARP, 20 epochs, invscaling
unless overridden) with the same seed on the same ML-1M-scale training split (bench/synthetic.py's
``ml-1m`` shape when present, else bench/synthetic_ml1m.py), one after the other in this process.
Prints each side's seconds and validation NDCG@10, and the ratio per-epoch / one-shot. Usage:

    .venv/bin/python bench/epoch_path.py [--epochs 20] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synthetic_ml1m import ml1m_ratings  # noqa: E402
from recflow.data import preprocess  # noqa: E402
from recflow.evaluation.accuracy import evaluate_model  # noqa: E402
from recflow.model.recommender import FMParams, Recommender  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--schedule", default="invscaling")
    parser.add_argument("--repeat", type=int, default=2, help="alternating rounds of both sides")
    args = parser.parse_args()
    ratings = preprocess.to_implicit(ml1m_ratings(np.random.default_rng(0)), 0)
    splits = preprocess.split(ratings, "random", 0.2, 0.1, np.random.default_rng(1492))
    train, valid = splits.train, splits.valid
    params = FMParams(epochs=args.epochs, learning_schedule=args.schedule)
    print(f"{len(train):,} training rows, {params}")
    times: dict[str, list[float]] = {"one-shot": [], "per-epoch": []}
    quality: dict[str, float] = {}
    for _ in range(args.repeat):
        for side, on_epoch in (("one-shot", None), ("per-epoch", lambda e, m: None)):
            start = time.perf_counter()
            model = Recommender.fit(train, params, seed=7, on_epoch=on_epoch)
            times[side].append(time.perf_counter() - start)
            quality[side] = evaluate_model(model, train, valid, 10)["ndcg_at_10"]
    for side, t in times.items():
        print(f"{side:>9}: {min(t):6.2f} s (best of {len(t)}), valid NDCG@10 {quality[side]:.4f}")
    print(f"per-epoch / one-shot: {min(times['per-epoch']) / min(times['one-shot']):.2f}x")


if __name__ == "__main__":
    main()
