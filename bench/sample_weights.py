"""Should training weigh each interaction by its strength (``rating_col``)? Unweighted against weighted.

rankfm takes a weight per interaction (``RankFM.fit(..., sample_weight=...)``; ``_init_all``
returns it and our kernel multiplies each step's gradient by it). ``Recommender.fit`` passes
none at ``user_weight=0`` (as here), so every kept interaction counts 1. Here the same configuration (``--params``) is trained
on the pipeline's default preparation (``prepare`` with ``Settings()``: every rating kept, a
random 70/10/20 split, one split per ``--split-seeds``) with ``--train-seeds`` training seeds
each: unweighted, and with the weights of each ``--weights`` variant (the strength is fed to
rankfm through ``_init_all``, nothing else changes). Each model trains on train + valid, as
train_best's does, and is scored on test with seen items excluded (``Holdout``): all test
pairs, and only the strong ones (rating >= 4; on the synthetic, count >= 3). Prints NDCG@10 and
P@10 as mean ± sd over every (split, training) seed, per single model and for the ensemble of
the training seeds (``Recommender.average``), and weighted / unweighted ratios (paired, per
seed). ``--data ml-100k`` is the real ML-100K in ../shared/data; ``--data playcounts`` a
play-count-like synthetic (a taste group and an exposure group per user, told apart only by
the counts: heavy-tailed on the taste's items, mostly 1 on the exposure's) that shows the
mechanism. Usage::

    .venv/bin/python bench/sample_weights.py [--data ml-100k] [--split-seeds 1 2 3]
    .venv/bin/python bench/sample_weights.py --data playcounts --weights mean log1p
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd

from recflow.constants import GENRES_COL, ITEM_COL, RATING_COL, TITLE_COL, USER_COL
from recflow.data.preprocess import Prepared, Settings, prepare
from recflow.evaluation.accuracy import Holdout
from recflow.model.recommender import FMParams, Recommender
from recflow.testing.synthetic import real_ml100k

# The weight an interaction of strength r gets, per variant (``strong``: STRONG of the data).
WEIGHTS = {
    "raw": lambda r, strong: r,  # the strength itself: also scales the step size by its mean
    "mean": lambda r, strong: r / r.mean(),  # over its mean: the unweighted average step
    "log1p": lambda r, strong: np.log1p(r) / np.log1p(r).mean(),  # damped, mean 1
    # strong pairs twice the weak ones, mean 1: weak ones down-weighted rather than dropped
    "strong2x": lambda r, strong: _mean1(np.where(r >= strong, 2.0, 1.0)),
    # weak pairs weigh 0: min_rating = strong, except that weak pairs stay seen (never sampled
    # as negatives, never recommended) and the test pairs stay the same
    "drop": lambda r, strong: _mean1((r >= strong).astype(np.float64)),
}
STRONG = {"ml-100k": 4.0, "playcounts": 3.0}  # the strength of a "strong" test pair


def _mean1(w: np.ndarray) -> np.ndarray:
    return w / w.mean()


@contextlib.contextmanager
def sample_weight(weight: np.ndarray | None) -> Iterator[None]:
    """Within the block, rankfm's ``_init_all`` receives ``weight`` (one per training row, in
    the order ``Recommender.fit`` passes the rows) as its ``sample_weight``."""
    from rankfmc import RankFM

    original = RankFM._init_all

    def init_all(self, interactions, user_features=None, item_features=None, sample_weight=None):
        return original(self, interactions, user_features, item_features, weight)

    RankFM._init_all = init_all
    try:
        yield
    finally:
        RankFM._init_all = original


def playcounts(rng: np.random.Generator, n_users: int = 1500, n_items: int = 1000,
               n_groups: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Listening data where only the counts tell taste from exposure: every item belongs to one
    of ``n_groups`` groups, every user has a taste group and another group they are exposed to
    (a flatmate's, the radio's). They play 15-60 items of each, Zipf-popular within the group:
    their taste's with heavy-tailed counts (Zipf, a=1.5: a third once, a long tail up to 500),
    their exposure's mostly once (geometric, mean 1.25). Who played what alone cannot tell the
    two groups apart. Counts are the strength; items need no metadata."""
    group_of_item = np.arange(n_items) % n_groups
    pop = 1.0 / (np.arange(n_items) // n_groups + 1.0) ** 0.8  # Zipf within each group
    rows = []
    for user in range(n_users):
        taste = user % n_groups
        exposure = (taste + rng.integers(1, n_groups)) % n_groups
        n = rng.integers(15, 61)
        played = []
        for group in (taste, exposure):
            mine = np.flatnonzero(group_of_item == group)
            played.append(rng.choice(mine, n, replace=False, p=pop[mine] / pop[mine].sum()))
        counts = np.r_[np.minimum(rng.zipf(1.5, n), 500), rng.geometric(0.8, n)]
        items = np.concatenate(played)
        rows.append(pd.DataFrame({USER_COL: user, ITEM_COL: items, RATING_COL: counts}))
    ratings = pd.concat(rows, ignore_index=True).astype({RATING_COL: np.float32})
    items = pd.DataFrame({ITEM_COL: np.arange(n_items), TITLE_COL: "", GENRES_COL: ""})
    return ratings, items


def load(data: str, split_seed: int) -> Prepared:
    if data == "ml-100k":
        ratings, items = real_ml100k()
    else:  # one synthetic population, split by the split seed as the real data is
        ratings, items = playcounts(np.random.default_rng(2024))
    prepared, _ = prepare(ratings, items, None, Settings(), np.random.default_rng(split_seed))
    return prepared


def scores(model: Recommender, seen: pd.DataFrame, test: pd.DataFrame, strong: float) -> dict:
    out = {}
    for name, held in (("all", test), ("strong", test[test[RATING_COL] >= strong])):
        m = Holdout.of(model, seen, held).evaluate(model.scores, 10)
        out[name] = (m["ndcg_at_10"], m["precision_at_10"])
    return out


def cell(values: list[float]) -> str:
    if np.isnan(values).any():
        return f"diverged ({np.isnan(values).sum()} of {len(values)})"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("ml-100k", "playcounts"), default="ml-100k")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--weights", nargs="+", choices=sorted(WEIGHTS),
                        default=["raw", "mean", "log1p", "strong2x", "drop"])  # fmt: skip
    parser.add_argument("--params", default="factors=40,max_samples=40,alpha=0.02,epochs=30",
                        help="FMParams as key=value,... (the rest rankfm's defaults)")  # fmt: skip
    args = parser.parse_args()
    params = FMParams.from_dict(dict(kv.split("=") for kv in args.params.split(",")))
    variants = ["none", *args.weights]
    # results[variant][kind][(split, train seed or "ens")] = {"all": (ndcg, p), "strong": ...}
    results = {v: {"single": {}, "ensemble": {}} for v in variants}
    start = time.monotonic()
    for split_seed in args.split_seeds:
        data = load(args.data, split_seed)
        seen = data.seen()
        strength = seen[RATING_COL].to_numpy(np.float64)
        for variant in variants:
            weight = None if variant == "none" else WEIGHTS[variant](strength, STRONG[args.data])
            models = []
            for train_seed in args.train_seeds:
                try:
                    with sample_weight(weight):
                        model = Recommender.fit(seen, params, seed=train_seed)
                except FloatingPointError:  # steps of weight x learning rate can blow up
                    nan = (np.nan, np.nan)
                    results[variant]["single"][(split_seed, train_seed)] = dict(all=nan, strong=nan)
                    print(
                        f"split {split_seed} train {train_seed} {variant:>6}: diverged", flush=True
                    )
                    continue
                models.append(model)
                r = scores(model, seen, data.test, STRONG[args.data])
                results[variant]["single"][(split_seed, train_seed)] = r
                print(f"split {split_seed} train {train_seed} {variant:>6}: NDCG@10 "
                      f"{r['all'][0]:.4f} P@10 {r['all'][1]:.4f} (strong test: "
                      f"{r['strong'][0]:.4f}, {r['strong'][1]:.4f}) at "
                      f"{time.monotonic() - start:.0f} s", flush=True)  # fmt: skip
            r = (
                scores(Recommender.average(models), seen, data.test, STRONG[args.data])
                if len(models) == len(args.train_seeds)
                else {"all": (np.nan, np.nan), "strong": (np.nan, np.nan)}
            )
            results[variant]["ensemble"][(split_seed, "ens")] = r
    n = len(args.split_seeds)
    print(f"\n{args.data}, Settings() (random split, every rating kept), split seeds "
          f"{args.split_seeds}, training seeds {args.train_seeds}, {args.params}; mean ± sd "
          f"over {n * len(args.train_seeds)} single models / {n} ensembles of "
          f"{len(args.train_seeds)}; strong test = strength >= {STRONG[args.data]:g}\n")  # fmt: skip
    print("| weights | model | NDCG@10 | P@10 | NDCG@10 / unweighted | P@10 / unweighted "
          "| strong NDCG@10 | strong P@10 | strong NDCG / unweighted | strong P / unweighted |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("single", "ensemble"):
        base = results["none"][kind]
        for variant in variants:
            res = results[variant][kind]
            keys = list(res)

            def col(test: str, m: int, res=res, keys=keys) -> list[float]:
                return [res[k][test][m] for k in keys]

            def ratio(test: str, m: int, res=res, keys=keys, base=base) -> list[float]:
                return [res[k][test][m] / base[k][test][m] for k in keys]

            print(f"| {variant} | {kind} | {cell(col('all', 0))} | {cell(col('all', 1))} | "
                  f"{cell(ratio('all', 0))} | {cell(ratio('all', 1))} | "
                  f"{cell(col('strong', 0))} | {cell(col('strong', 1))} | "
                  f"{cell(ratio('strong', 0))} | {cell(ratio('strong', 1))} |")  # fmt: skip
    print(f"\n{time.monotonic() - start:.0f} s in all")


if __name__ == "__main__":
    main()
