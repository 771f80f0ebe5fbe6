"""What the search space's regions cost and win: random configurations, each trained to its cap.

Samples ``--n`` configurations at random (optuna's RandomSampler over a search-space file, default
the packaged one) and trains each epoch by epoch on the real ML-100K (``../shared/data``) or an
ML-1M-shaped synthetic set (bench/synthetic.py), random 0.2/0.1 split seeded 1492, scoring
validation NDCG@10 after every epoch and stopping as hpo does (``PATIENCE`` epochs without
improvement). Prints one row per configuration (parameters, diverged or not, best epoch, best
and last NDCG@10, seconds), then the diverged share and the best NDCG by region (factors,
max_samples, learning rate, schedule). Usage:

    .venv/bin/python bench/search_space.py --n 60 [--data ml-1m] [--space my_space.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fit_speed import ml100k_ratings  # noqa: E402
from bench.synthetic import generate  # noqa: E402
from recflow.data import preprocess  # noqa: E402
from recflow.evaluation.accuracy import evaluate_model  # noqa: E402
from recflow.hpo.objective import PATIENCE  # noqa: E402
from recflow.hpo.space import DEFAULT_SPACE, load_space, suggest  # noqa: E402
from recflow.model.recommender import Recommender  # noqa: E402
from recflow.model.training import TrainingDiverged, fit_isolated  # noqa: E402


class _Stop(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("ml-100k", "ml-1m"), default="ml-100k")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    raw = (
        ml100k_ratings() if args.data == "ml-100k"
        else generate(args.data, np.random.default_rng(0)).ratings
    )  # fmt: skip
    ratings = preprocess.to_implicit(raw, 0)
    splits = preprocess.split(ratings, "random", 0.2, 0.1, np.random.default_rng(1492))
    space = load_space(args.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(args.seed))
    rows = []
    for _ in range(args.n):
        trial = study.ask()
        params = suggest(trial, space)
        curve: list[float] = []

        def on_epoch(epoch: int, model: Recommender, curve: list[float] = curve) -> None:
            curve.append(evaluate_model(model, splits.train, splits.valid, 10)["ndcg_at_10"])
            if len(curve) - 1 - int(np.argmax(curve)) >= PATIENCE:
                raise _Stop

        start = time.perf_counter()
        try:
            with contextlib.suppress(_Stop):
                fit_isolated(splits.train, params, 1, on_epoch=on_epoch)
            diverged = False
        except TrainingDiverged:
            diverged = True
        row = {
            **params.to_dict(), "diverged": diverged, "epochs_run": len(curve),
            "best_epoch": int(np.argmax(curve)) + 1 if curve else 0,
            "best": max(curve, default=np.nan), "last": curve[-1] if curve else np.nan,
            "seconds": time.perf_counter() - start,
        }  # fmt: skip
        rows.append(row)
        study.tell(trial, 0.0 if diverged else row["best"])
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    df = pd.DataFrame(rows)
    print(f"\ndiverged: {df.diverged.sum()} of {len(df)}")
    print(df[df.diverged][["factors", "loss", "learning_rate", "learning_schedule", "sigma",
                           "alpha", "features", "max_samples"]].to_string())  # fmt: skip
    ok = df[~df.diverged]
    for col, bins in (("factors", [0, 16, 32, 64, 128]), ("max_samples", [0, 10, 20, 50, 100]),
                      ("learning_rate", [0, 0.02, 0.05, 0.1, 0.15]), ("alpha", [0, 1e-3, 1e-2, 0.1])):  # fmt: skip
        g = ok.groupby(pd.cut(ok[col], bins), observed=True)
        print(g.agg(n=("best", "size"), best=("best", "max"), median=("best", "median"),
                    best_epoch=("best_epoch", "median"), seconds=("seconds", "median")).round(3))  # fmt: skip
    for col in ("loss", "learning_schedule", "features"):
        print(ok.groupby(col).agg(n=("best", "size"), best=("best", "max"),
                                  median=("best", "median"), seconds=("seconds", "median")).round(3))  # fmt: skip


if __name__ == "__main__":
    main()
