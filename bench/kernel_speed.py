"""Training speed: recflow.model.kernel (binary-search membership check) vs rankfmc's own kernel.

Both sides train the same configuration with the same seed on the same training split of a
synthetic MovieLens-shaped dataset (bench/synthetic.py; ``--shape ml-1m`` by default), one after
the other in this process, on one thread: rankfmc 0.3.5's ``RankFM.fit`` (its kernel checks each
sampled negative against the user's items by a linear scan) and ``Recommender.fit`` (the same
update with each user's items sorted once). Prints each side's seconds, the ratio, how far apart
the trained weights are, and both models' test NDCG@10 (over all items not seen in training).
Usage::

    .venv/bin/python bench/kernel_speed.py                       # ML-1M scale, 20 epochs
    .venv/bin/python bench/kernel_speed.py --shape ml-25m --epochs 2 --factors 32 \\
        --max_samples 30 --features item
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

from bench.synthetic import training_split  # noqa: E402
from recflow.constants import ITEM_COL, USER_COL  # noqa: E402
from recflow.evaluation.accuracy import Holdout  # noqa: E402
from recflow.model.recommender import FMParams, Recommender, _numpy_global_seed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ml-1m")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--factors", type=int, default=20)
    parser.add_argument("--max_samples", type=int, default=20)
    parser.add_argument("--features", default="none", choices=("none", "item"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    from rankfmc import RankFM

    train, test, items = training_split(args.shape, args.features)
    params = FMParams(factors=args.factors, max_samples=args.max_samples, epochs=args.epochs,
                      features=args.features)  # fmt: skip
    per_user = train.groupby(USER_COL).size().to_numpy()
    print(f"{args.shape}: {len(train):,} training rows; items per user: mean "
          f"{per_user.mean():.0f}, max {per_user.max():,}, interaction-weighted mean "
          f"{(per_user**2).sum() / per_user.sum():.0f}; {params}")  # fmt: skip

    start = time.perf_counter()
    ours = Recommender.fit(train, params, args.seed, item_features=items)
    ours_s = time.perf_counter() - start
    fm = RankFM(factors=params.factors, loss=params.loss, max_samples=params.max_samples,
                alpha=params.alpha, beta=params.beta, sigma=params.sigma,
                learning_rate=params.learning_rate, learning_schedule=params.learning_schedule,
                learning_exponent=params.learning_exponent)  # fmt: skip
    start = time.perf_counter()
    with _numpy_global_seed(args.seed):  # the seeding Recommender.fit does
        fm.fit(train[[USER_COL, ITEM_COL]], item_features=items, epochs=params.epochs)
    theirs_s = time.perf_counter() - start
    theirs = Recommender._from_rankfm(fm, params)

    gap = np.abs(ours.item_emb - theirs.item_emb).max()
    scale = np.abs(theirs.item_emb).max()
    for name, model, seconds in (("rankfmc", theirs, theirs_s), ("recflow", ours, ours_s)):
        m = Holdout.of(model, train, test).evaluate(model.scores, 10)
        print(f"{name:>8}: {seconds:8.1f} s ({seconds / params.epochs:.2f} s/epoch), "
              f"test NDCG@10 {m['ndcg_at_10']:.4f}")  # fmt: skip
    print(f"largest weight difference {gap:.2e} (largest weight {scale:.2f})")
    print(f"rankfmc / recflow time: {theirs_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
