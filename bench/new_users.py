"""Users the model never saw, recommended from their history at request time (real ML-100K).

The protocol (``recflow.testing.newusers``), per seed: hold out 10 % of the users entirely,
train on everyone else, give each held-out user's first half (by time) as the history and try to
predict the second half; fold-in, fold-in with every history item alike, popularity and a model
retrained with the histories are compared on the same users. Prints NDCG@10 and P@10 for each as
mean ± sd over the seeds and the ratios the targets are stated in (fold-in >= 1.5x popularity,
>= 0.85x retrained). Usage::

    .venv/bin/python bench/new_users.py [--seeds 1492 7 42]
"""

from __future__ import annotations

import argparse

import numpy as np

from recflow.testing.newusers import HELD_OUT, one_seed
from recflow.testing.synthetic import real_ml100k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1492, 7, 42])
    args = parser.parse_args()
    ratings, items = real_ml100k()
    results = [one_seed(ratings, items, seed) for seed in args.seeds]
    for seed, r in zip(args.seeds, results, strict=True):
        print(seed, {name: {m: round(v, 4) for m, v in f.items()} for name, f in r.items()})
    print(f"\nReal ML-100K, {HELD_OUT:.0%} of users held out, half of each one's history "
          f"(by time) given at request time; mean ± sd over seeds {args.seeds}:\n")  # fmt: skip
    print("| recommender | NDCG@10 | P@10 |\n|---|---|---|")
    for name in ("fold-in", "fold-in, all alike", "popularity", "retrained"):
        nd = np.array([r[name]["ndcg"] for r in results])
        pr = np.array([r[name]["precision"] for r in results])
        print(f"| {name} | {nd.mean():.4f} ± {nd.std(ddof=1):.4f} "
              f"| {pr.mean():.4f} ± {pr.std(ddof=1):.4f} |")  # fmt: skip
    for metric in ("ndcg", "precision"):
        fold = np.mean([r["fold-in"][metric] for r in results])
        pop = np.mean([r["popularity"][metric] for r in results])
        re = np.mean([r["retrained"][metric] for r in results])
        alike = np.mean([r["fold-in, all alike"][metric] for r in results])
        print(f"{metric}@10: fold-in / popularity {fold / pop:.2f} (target >= 1.5); "
              f"fold-in / retrained {fold / re:.2f} (target >= 0.85); all alike / popularity "
              f"{alike / pop:.2f}")  # fmt: skip
    ms = np.mean([r["fold-in"]["ms"] for r in results])
    print(f"fold-in in process: {ms:.1f} ms per user (histories of ~50 items on average)")


if __name__ == "__main__":
    main()
