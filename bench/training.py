"""Training speed on one split: our kernel vs rankfmc's, one thread vs several, or an ensemble's
models one after another vs as many at once as there are cores (ratios).

Every comparison trains the same configuration with the same seeds on the same training split
(``recflow.testing.synthetic.training_split``: a synthetic release's positives, or the real
ML-100K's, split per user, seeded 1492), one side after the other in this process, and tests both
sides on the same held-out part (NDCG@10 and P@10 over all items not seen in training):

    --compare kernel    rankfmc 0.3.5's ``RankFM.fit`` (its kernel checks each sampled negative
                        against the user's items by a linear scan) vs ``Recommender.fit``
                        (recflow.model.kernel, a users x items bitmap), one thread each; also
                        how far apart the trained weights are
    --compare threads   ``Recommender.fit`` on one thread vs ``--threads`` (lock-free parallel SGD)
    --compare ensemble  train_best's ``--ensemble`` models (seeds seed, seed+1, ...), each in its
                        training process, one after another vs ``fit_ensemble`` (one per core at
                        once); also checks that both give the same averaged model

Each side first trains one untimed epoch (numba compiles or loads the kernel). Prints each side's
seconds, seconds per epoch, interactions per second and test figures per seed, then the means
over the seeds and the ratios. Usage::

    .venv/bin/python bench/training.py --compare kernel              # ML-1M scale, 20 epochs
    .venv/bin/python bench/training.py --compare kernel --features item --epochs 5 --factors 39 \\
        --max_samples 30
    .venv/bin/python bench/training.py --compare threads --data ml-10m --epochs 2 --features item
    .venv/bin/python bench/training.py --compare threads --data ml-100k --epochs 1   # seconds
    .venv/bin/python bench/training.py --compare ensemble --data ml-100k --epochs 30 --factors 40 \
        --max_samples 40
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd

from recflow.constants import ITEM_COL, USER_COL
from recflow.evaluation.accuracy import Holdout
from recflow.model.recommender import FMParams, Recommender, _numpy_global_seed
from recflow.model.training import ENSEMBLE, fit_ensemble, fit_isolated
from recflow.testing.synthetic import SHAPES, training_split

Fit = Callable[[pd.DataFrame, FMParams, int, pd.DataFrame | None], Recommender]


def fit_recflow(
    train: pd.DataFrame, params: FMParams, seed: int, items: pd.DataFrame | None, threads: int = 1
) -> Recommender:
    return Recommender.fit(train, params, seed, item_features=items, threads=threads)


def fit_rankfmc(
    train: pd.DataFrame, params: FMParams, seed: int, items: pd.DataFrame | None
) -> Recommender:
    """The same fit with rankfmc's own kernel, seeded as ``Recommender.fit`` seeds it."""
    from rankfmc import RankFM

    fm = RankFM(factors=params.factors, loss=params.loss, max_samples=params.max_samples,
                alpha=params.alpha, beta=params.beta, sigma=params.sigma,
                learning_rate=params.learning_rate, learning_schedule=params.learning_schedule,
                learning_exponent=params.learning_exponent)  # fmt: skip
    with _numpy_global_seed(seed):
        fm.fit(train[[USER_COL, ITEM_COL]], item_features=items, epochs=params.epochs)
    return Recommender._from_rankfm(fm, params)


def fit_one_by_one(
    train: pd.DataFrame, params: FMParams, seed: int, items: pd.DataFrame | None, size: int
) -> Recommender:
    """train_best's ensemble as it trained before ``fit_ensemble``: one model after another."""
    models = [fit_isolated(train, params, seed + i, item_features=items) for i in range(size)]
    return Recommender.average(models)


def fit_at_once(
    train: pd.DataFrame, params: FMParams, seed: int, items: pd.DataFrame | None, size: int
) -> Recommender:
    seeds = [seed + i for i in range(size)]
    return Recommender.average(fit_ensemble(train, params, seeds, item_features=items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=("kernel", "threads", "ensemble"), required=True)
    parser.add_argument("--data", default="ml-1m", choices=("ml-100k", *SHAPES))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--factors", type=int, default=20)
    parser.add_argument("--max_samples", type=int, default=20)
    parser.add_argument("--features", default="none", choices=("none", "item"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seeds", type=int, nargs="+", default=[7])
    parser.add_argument(
        "--ensemble", type=int, default=ENSEMBLE, help="models, for --compare ensemble"
    )
    args = parser.parse_args()

    sides: dict[str, Fit] = {
        "kernel": {"rankfmc": fit_rankfmc, "recflow": fit_recflow},
        "threads": {"1 thread": fit_recflow,
                    f"{args.threads} threads": partial(fit_recflow, threads=args.threads)},
        "ensemble": {"one by one": partial(fit_one_by_one, size=args.ensemble),
                     "at once": partial(fit_at_once, size=args.ensemble)},
    }[args.compare]  # fmt: skip
    train, test, items = training_split(args.data, args.features)
    params = FMParams(factors=args.factors, max_samples=args.max_samples, epochs=args.epochs,
                      features=args.features)  # fmt: skip
    per_user = train.groupby(USER_COL).size().to_numpy()
    print(f"{args.data}: {len(train):,} training rows; items per user: mean "
          f"{per_user.mean():.0f}, max {per_user.max():,}, interaction-weighted mean "
          f"{(per_user**2).sum() / per_user.sum():.0f}; {params}")  # fmt: skip

    for fit in sides.values():  # untimed: compiling (or loading) the kernels, warming caches
        fit(train, dataclasses.replace(params, epochs=1), 0, items)
    figures: dict[str, list[tuple[float, float, float]]] = {label: [] for label in sides}
    for seed in args.seeds:
        models = {}
        for label, fit in sides.items():
            start = time.perf_counter()
            models[label] = model = fit(train, params, seed, items)
            seconds = time.perf_counter() - start
            m = Holdout.of(model, train, test).evaluate(model.scores, 10)
            figures[label].append((seconds, m["ndcg_at_10"], m["precision_at_10"]))
            print(f"  seed {seed}, {label:>10}: {seconds:8.1f} s ({seconds / params.epochs:.2f} "
                  f"s/epoch, {len(train) * params.epochs / seconds:,.0f} interactions/s), "
                  f"test NDCG@10 {m['ndcg_at_10']:.4f}, P@10 {m['precision_at_10']:.4f}")  # fmt: skip
        if args.compare == "kernel":
            ours, theirs = models["recflow"].item_emb, models["rankfmc"].item_emb
            print(f"  largest weight difference {np.abs(ours - theirs).max():.2e} "
                  f"(largest weight {np.abs(theirs).max():.2f})")  # fmt: skip
        if args.compare == "ensemble":
            same = np.array_equal(models["one by one"].item_emb, models["at once"].item_emb)
            print(f"  the same averaged model: {same}")

    (a, one), (b, two) = ((label, np.mean(v, axis=0)) for label, v in figures.items())
    print(f"mean of {len(args.seeds)} seed(s): {a} {one[0]:.1f} s, NDCG@10 {one[1]:.4f}; "
          f"{b} {two[0]:.1f} s, NDCG@10 {two[1]:.4f}")  # fmt: skip
    print(f"{a} / {b} time: {one[0] / two[0]:.2f}x; {b} / {a} NDCG@10: {two[1] / one[1]:.3f}")


if __name__ == "__main__":
    main()
