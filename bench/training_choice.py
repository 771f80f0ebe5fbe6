"""One training choice (an FMParams field) at several values against the first, on real data.

One fixed configuration (``--params``, the rest rankfm's defaults) is trained with each value
of ``--vary NAME=REF,V1,V2,...`` on train+valid of the pipeline's default preparation (random
70/10/20 split, one per ``--split-seeds``), as an ensemble of ``--train-seeds`` (train_best's),
and scored on test (top-10, seen items excluded) beside EASE (λ 500, what EASE alone is chosen
with on these sets) and the best blend with EASE at λ 200 on test (an upper bound, as
``bench/protocol.py --ceiling``). Prints NDCG@10 per split seed and value, then the mean ratios
to the first value (the reference) and to EASE. Real data only (``--data ml-100k`` or ``ml-1m``,
the real ML-1M ratings of users 1-1500 in ../shared/data): synthetic ratings would reward the
wrong things. The choosing split seeds (1-5) only: the reporting seeds are bench/protocol.py's.
Usage::

    .venv/bin/python bench/training_choice.py       # user_weight on ML-100K, about 2 min
    .venv/bin/python bench/training_choice.py --data ml-1m --split-seeds 1 2 \
        --train-seeds 11 12 13 --params factors=29,max_samples=56,alpha=0.018,epochs=51
    .venv/bin/python bench/training_choice.py --vary max_samples=40,100,200 \
        --params factors=40,alpha=0.02,epochs=30,user_weight=0.25
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pandas as pd

from recflow.data.datasets import get_spec, parse_items, parse_ratings
from recflow.data.preprocess import Settings, prepare
from recflow.evaluation.accuracy import Holdout
from recflow.evaluation.baselines import ease_scorer, gram
from recflow.evaluation.blending import blends
from recflow.model.blend import SHARES
from recflow.model.ease import ease_weights, interactions
from recflow.model.recommender import FMParams, Recommender
from recflow.testing.archives import ML1M_RATINGS
from recflow.testing.synthetic import ML1M, real_ml100k


def load(data: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if data == "ml-100k":
        return real_ml100k()
    if not (ML1M / ML1M_RATINGS).is_file():
        raise SystemExit(f"needs {ML1M / ML1M_RATINGS}; see ../shared/data/README.md")
    spec = dataclasses.replace(get_spec("ml-1m"), ratings=ML1M_RATINGS)
    return parse_ratings(spec, ML1M), parse_items(spec, ML1M)


def one_split(
    ratings: pd.DataFrame, items: pd.DataFrame, split_seed: int, name: str, values: list[str],
    params: FMParams, train_seeds: list[int],
) -> dict[str, tuple[float, float, float]]:  # fmt: skip
    """NDCG@10 of the model, of EASE and of the best blend on test, per value."""
    data, _ = prepare(ratings, items, None, Settings(), np.random.default_rng(split_seed))
    seen = data.seen()
    out = {}
    for value in values:
        chosen = FMParams.from_dict({**params.to_dict(), name: value})
        model = Recommender.average([Recommender.fit(seen, chosen, s) for s in train_seeds])
        holdout = Holdout.of(model, seen, data.test)
        x = interactions(holdout.seen_u, holdout.seen_i, len(model.user_ids), len(model.item_ids))
        g_x = gram(x)
        alone = holdout.evaluate(model.scores, 10)["ndcg_at_10"]
        ease = holdout.evaluate(ease_scorer(x, ease_weights(g_x, 500.0)), 10)["ndcg_at_10"]
        inner = ease_scorer(x, ease_weights(g_x, 200.0))
        tallies = holdout.tally_each(blends(model.scores, inner, SHARES), [10])
        best = max(t.metrics(10)["ndcg_at_10"] for t in tallies.values())
        out[value] = (alone, ease, best)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("ml-100k", "ml-1m"), default="ml-100k")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    parser.add_argument("--vary", default="user_weight=0,0.15,0.25,0.35,0.5",
                        help="NAME=REF,V1,...: an FMParams field and its values, the first the "
                        "reference")  # fmt: skip
    parser.add_argument("--params", default="factors=40,max_samples=40,alpha=0.02,epochs=30",
                        help="FMParams as key=value,... (the rest rankfm's defaults)")  # fmt: skip
    args = parser.parse_args()
    params = FMParams.from_dict(dict(kv.split("=") for kv in args.params.split(",")))
    name, _, listed = args.vary.partition("=")
    values = list(dict.fromkeys(listed.split(",")))
    ratings, items = load(args.data)
    start = time.monotonic()
    results = {}
    for seed in args.split_seeds:
        results[seed] = one_split(ratings, items, seed, name, values, params, args.train_seeds)
        for value, (alone, ease, best) in results[seed].items():
            print(f"split {seed} {name} {value}: NDCG@10 {alone:.4f} (EASE {ease:.4f}, best "
                  f"blend {best:.4f}) at {time.monotonic() - start:.0f} s", flush=True)  # fmt: skip
    print(f"\n{args.data}, random split, split seeds {args.split_seeds}, ensembles of "
          f"{len(args.train_seeds)} ({args.params}); test NDCG@10, mean (min) over the seeds:\n")  # fmt: skip
    print(f"| {name} | model / {name} {values[0]} | model / EASE | best blend on test / EASE |")
    print("|---|---|---|---|")
    for value in values:
        gain = [results[s][value][0] / results[s][values[0]][0] for s in args.split_seeds]
        alone = [results[s][value][0] / results[s][value][1] for s in args.split_seeds]
        best = [results[s][value][2] / results[s][value][1] for s in args.split_seeds]
        print(f"| {value} | {np.mean(gain):.3f} ({min(gain):.3f}) | {np.mean(alone):.3f} "
              f"({min(alone):.3f}) | {np.mean(best):.3f} |")  # fmt: skip
    print(f"\n{time.monotonic() - start:.0f} s in all")


if __name__ == "__main__":
    main()
