"""train_best's training: one thread vs rankfmc's parallel SGD over every core (``threads``).

Both sides train the same configuration with the same seed on the same training split of a
synthetic MovieLens-shaped dataset (bench/synthetic.py; ``--shape ml-1m`` by default), one after
the other in this process, and are tested on the same held-out split (NDCG@10 and P@10 over all
items not seen in training). Prints each side's seconds and test figures, and the speed-up.
Usage::

    .venv/bin/python bench/train_threads.py                      # ML-1M scale, 20 epochs
    .venv/bin/python bench/train_threads.py --shape ml-10m --epochs 2 --features item
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.synthetic import training_split  # noqa: E402
from recflow.evaluation.accuracy import Holdout  # noqa: E402
from recflow.model.recommender import FMParams, Recommender  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ml-1m")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--factors", type=int, default=20)
    parser.add_argument("--features", default="none", choices=("none", "item"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seeds", type=int, nargs="+", default=[7])
    args = parser.parse_args()

    train, test, items = training_split(args.shape, args.features)
    params = FMParams(factors=args.factors, epochs=args.epochs, features=args.features)
    print(f"{args.shape}: {len(train):,} training rows, {params}")

    figures: dict[int, list[tuple[float, float, float]]] = {1: [], args.threads: []}
    for seed in args.seeds:
        for threads in figures:
            start = time.perf_counter()
            model = Recommender.fit(train, params, seed, item_features=items, threads=threads)
            seconds = time.perf_counter() - start
            m = Holdout.of(model, train, test).evaluate(model.scores, 10)
            figures[threads].append((seconds, m["ndcg_at_10"], m["precision_at_10"]))
            print(f"  seed {seed}, {threads} thread(s): {seconds:7.1f} s, "
                  f"test NDCG@10 {m['ndcg_at_10']:.4f}, P@10 {m['precision_at_10']:.4f}")  # fmt: skip
    mean = {t: np.mean(v, axis=0) for t, v in figures.items()}
    one, many = mean[1], mean[args.threads]
    print(f"mean of {len(args.seeds)} seed(s): 1 thread {one[0]:.1f} s, NDCG@10 {one[1]:.4f}; "
          f"{args.threads} threads {many[0]:.1f} s, NDCG@10 {many[1]:.4f}")  # fmt: skip
    print(f"speed-up {one[0] / many[0]:.2f}x; NDCG@10 ratio {many[1] / one[1]:.3f}")


if __name__ == "__main__":
    main()
