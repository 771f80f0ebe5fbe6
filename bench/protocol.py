"""Ours against EASE, popularity and published results on real MovieLens data.

Microsoft Recommenders' benchmark (ML-100K, each user's ratings split 75/25 at random, top-10
over every item not rated in training) reports single runs; we run, for each split seed, as a
user would:

    mlflow run . -e main -P dataset=ml-100k -P data_url=<zip of ../shared/data/ml-100k>
        -P split=<--split> -P test_size=<--test-size> -P seed=<seed> [-P key=value ...]

(a fresh tracking store each), and print train_best's test metrics at 10: what is served, rankfm
alone where that is a blend with EASE, and the baselines (EASE and popularity, on the same
splits; the ratios too), as mean ± standard deviation over the seeds beside the published
figures, as the Markdown table the README shows. ``--split random --test-size 0.2`` measures
the pipeline's own default protocol instead; ``--data ml-1m`` the real ML-1M ratings of users
1-1500 in ../shared/data. ``--ceiling`` also scores the blend at every (EASE λ, share) on the
test split itself: the best of those is what no pair chosen on validation can beat, an upper
bound for the blend of these two models, not a result. Usage::

    .venv/bin/python bench/protocol.py [--seeds 1492 7 42] [--param n_trials=20]
    .venv/bin/python bench/protocol.py --split random --test-size 0.2 --seeds 1492 \
        --param n_trials=30
    .venv/bin/python bench/protocol.py --data ml-1m --split random --test-size 0.2 --ceiling
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from recflow import constants as C
from recflow.evaluation.accuracy import Holdout, positions
from recflow.evaluation.baselines import ease_scorer, gram
from recflow.evaluation.beyond import BEYOND_ACCURACY
from recflow.evaluation.blending import LAMBDAS, blends
from recflow.model.blend import SHARES
from recflow.model.ease import ease_weights, interactions
from recflow.model.recommender import Recommender
from recflow.testing.archives import real_ml1m_zip, real_ml100k_zip
from recflow.testing.runs import archive_params, mlflow_run, run, runs_by_step, store

METRICS = ("precision", "recall", "ndcg", "hit_rate", "mrr")
SOURCE = "[Microsoft Recommenders](https://github.com/recommenders-team/recommenders/blob/main/examples/06_benchmarks/movielens.ipynb)"
# Published top-10 figures on this protocol: (precision, ndcg).
# The real data a run can use; ml-1m is the real ML-1M ratings of users 1-1500 (its README).
DATA = {"ml-100k": real_ml100k_zip, "ml-1m": real_ml1m_zip}
PUBLISHED = {
    "BiVAE (best published)": (0.412, 0.475),
    "Cornac BPR": (0.388, 0.442),
    "LightGCN": (0.380, 0.420),
}


def run_main(
    zip_path: Path, dataset: str, seed: int, extra: list[str], parent: Path
) -> tuple[dict, str]:
    """One ``main`` in a fresh store (a new folder in ``parent``, which the caller removes);
    its runs by step and the store's tracking URI."""
    where = store(Path(tempfile.mkdtemp(prefix=f"bench-protocol-{seed}-", dir=parent)))
    params = [*archive_params(zip_path, dataset), f"seed={seed}", *extra]
    run(mlflow_run("main", params), where, "main.log")
    return runs_by_step(where.uri), where.uri


def test_ndcg_by_blend(steps: dict, uri: str) -> dict[tuple[float, float], float]:
    """Test NDCG@10 of the blend of the served model's factorization half and EASE at every
    (λ, share) of the grid (``blending.LAMBDAS`` x ``blend.SHARES``; train_best serves one λ of
    it and chooses the share), from its logged
    bundle and the preprocess run's test split, EASE fitted at each λ as train_best fits it (on
    the bundle's train+valid rows); {} where EASE was not fitted."""
    mlflow.set_tracking_uri(uri)
    trained = steps["train_best"]
    if "ease.lambda" not in trained.data.params:
        return {}
    bundle = Path(mlflow.artifacts.download_artifacts(trained.data.tags[C.TAG_MODEL_URI]))
    bundle = bundle / "artifacts" / "bundle"
    model = Recommender.load(bundle)
    indptr, indices = np.load(bundle / "seen_indptr.npy"), np.load(bundle / "seen_indices.npy")
    seen = (np.repeat(np.arange(indptr.size - 1), np.diff(indptr)), indices)
    x = interactions(*seen, len(model.user_ids), len(model.item_ids))
    g = gram(x)
    test = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=steps["preprocess"].info.run_id, artifact_path=f"{C.DATA_DIR}/{C.TEST_FILE}"))  # fmt: skip
    holdout = Holdout.from_pairs(len(model.item_ids), seen, positions(model, test))
    by_blend = {}
    for lam in LAMBDAS:
        ease = ease_scorer(x, ease_weights(g, lam))
        tallies = holdout.tally_each(blends(model.scores, ease, SHARES), [10])
        by_blend |= {(lam, s): t.metrics(10)["ndcg_at_10"] for s, t in tallies.items()}
    return by_blend


def alone_too(metrics: dict[str, float]) -> dict[str, float]:
    """train_best's metrics with rankfm alone's where it served rankfm alone (share 0 or
    ``blend=none``: its test_ metrics are rankfm alone's), so every seed has the row."""
    alone = {
        C.RANKFM_PREFIX + k.removeprefix(C.TEST_PREFIX): v
        for k, v in metrics.items()
        if k.startswith(C.TEST_PREFIX)
    }
    return alone | metrics


def cell(values: list[float]) -> str:
    return (
        f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
        if len(values) > 1
        else (f"{values[0]:.3f}")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1492, 7, 42])
    parser.add_argument("--data", choices=sorted(DATA), default="ml-100k",
                        help="real ML-100K, or the real ML-1M ratings of users 1-1500")  # fmt: skip
    parser.add_argument("--split", default="user", help="main's split (default user)")
    parser.add_argument("--test-size", default="0.25", help="main's test_size (default 0.25)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="more -P parameters for main (e.g. n_trials=30)")  # fmt: skip
    parser.add_argument("--ceiling", action="store_true",
                        help="also score the blend at every share on test (an upper bound)")  # fmt: skip
    args = parser.parse_args()
    extra = [f"split={args.split}", f"test_size={args.test_size}", *args.param]
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = DATA[args.data](Path(tmp))
        results, seconds, ceilings = [], [], []
        for seed in args.seeds:
            start = time.monotonic()
            steps, uri = run_main(zip_path, args.data, seed, extra, Path(tmp))
            seconds.append(time.monotonic() - start)
            results.append(alone_too(steps["train_best"].data.metrics))
            ours = results[-1]
            alone = ours["rankfm_ndcg_at_10"]
            print(
                f"seed {seed}: NDCG@10 {ours['test_ndcg_at_10']:.4f} (rankfm alone {alone:.4f}), P@10 "
                f"{ours['test_precision_at_10']:.4f} (EASE {ours['ease_ndcg_at_10']:.4f}, "
                f"{ours['ease_precision_at_10']:.4f}; popularity "
                f"{ours['popularity_ndcg_at_10']:.4f}, {ours['popularity_precision_at_10']:.4f}) "
                f"in {seconds[-1]:.0f} s", flush=True,
            )  # fmt: skip
            if args.ceiling and (by_blend := test_ndcg_by_blend(steps, uri)):
                best = max(by_blend, key=by_blend.__getitem__)
                ceilings.append(by_blend[best] / ours["ease_ndcg_at_10"])
                print(f"  test NDCG@10 of the blend at the (λ, share) best on test: {best[0]:g}, "
                      f"{best[1]:.1f}: {by_blend[best]:.4f}, {ceilings[-1]:.3f}x EASE", flush=True)  # fmt: skip
    seeds = ", ".join(map(str, args.seeds))
    print(f"\nReal {args.data}, {args.split} split, test_size {args.test_size} (split seeds {seeds}), "
          "top-10 over unrated items")  # fmt: skip
    print("| model | P@10 | R@10 | NDCG@10 | HR@10 | MRR@10 | source |")
    print("|---|---|---|---|---|---|---|")
    rows = [(C.TEST_PREFIX, "ours: `main`, default budget (what is served)"),
            (C.RANKFM_PREFIX, "rankfm alone (the blend's other half, same runs)"),
            (C.EASE_PREFIX, "EASE, λ chosen on validation (same splits)"),
            (C.POPULARITY_PREFIX, "popularity (same splits)")]  # fmt: skip
    for prefix, name in rows:
        if not all(f"{prefix}ndcg_at_10" in r for r in results):
            continue  # EASE: only where it fitted
        cells = [cell([r[f"{prefix}{m}_at_10"] for r in results]) for m in METRICS]
        print(f"| {name} | " + " | ".join(cells) + " | bench/protocol.py |")
    for name, (p, ndcg) in PUBLISHED.items():
        print(f"| {name} | {p:.3f} | | {ndcg:.3f} | | | {SOURCE} |")
    print("\n| beyond accuracy @10 | coverage | Gini | novelty (bits) | avg popularity |")
    print("|---|---|---|---|---|")
    for prefix, name in ((C.TEST_PREFIX, "ours"), (C.EASE_PREFIX, "EASE"),
                         (C.POPULARITY_PREFIX, "popularity")):  # fmt: skip
        cells = [cell([r[f"{prefix}{m}_at_10"] for r in results]) for m in BEYOND_ACCURACY]
        print(f"| {name} | " + " | ".join(cells) + " |")
    ours = {m: np.mean([r[f"{C.TEST_PREFIX}{m}_at_10"] for r in results]) for m in METRICS}
    for prefix, name in ((C.RANKFM_PREFIX, "rankfm alone"), (C.EASE_PREFIX, "EASE"),
                         (C.POPULARITY_PREFIX, "popularity")):  # fmt: skip
        if not all(f"{prefix}ndcg_at_10" in r for r in results):
            continue
        # Per seed, then averaged: each ratio compares the two on the same split.
        ratio = {
            m: [r[f"{C.TEST_PREFIX}{m}_at_10"] / r[f"{prefix}{m}_at_10"] for r in results]
            for m in ("ndcg", "precision")
        }  # fmt: skip
        print(f"ours / {name}: NDCG@10 {cell(ratio['ndcg'])}x (per seed "
              f"{', '.join(f'{v:.3f}' for v in ratio['ndcg'])}), P@10 {cell(ratio['precision'])}x")  # fmt: skip
    if ceilings:
        print(f"ceiling (the blend at the (λ, share) best on test, an upper bound): NDCG@10 "
              f"{cell(ceilings)}x EASE (per seed {', '.join(f'{v:.3f}' for v in ceilings)})")  # fmt: skip
    best_p, best_ndcg = PUBLISHED["BiVAE (best published)"]
    print(
        f"ours / BiVAE: NDCG@10 {ours['ndcg'] / best_ndcg:.3f}x, P@10 "
        f"{ours['precision'] / best_p:.3f}x; main took {np.mean(seconds):.0f} s per seed"
    )


if __name__ == "__main__":
    main()
