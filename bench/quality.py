"""Quality on the real ML-100K: a tuned model's test metrics vs the popularity baseline.

For each split (random, user): preprocess, an N-trial study (default 30), train_best; prints
test precision / NDCG @10 of the model and of popularity and the NDCG ratio. For reference,
Microsoft Recommenders' benchmark reports BPR on ML-100K (per-user 75/25 split) at P@10 0.388,
NDCG@10 0.442. Usage:

    .venv/bin/python bench/quality.py --n-trials 30 --splits random user
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.hpo_speed import download_ml100k, invoke, last_run_id  # noqa: E402
from steps import hpo, preprocess, train_best  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=30)
    parser.add_argument("--splits", nargs="+", default=["random", "user"])
    parser.add_argument("--test-size", type=float, default=0.2)
    args = parser.parse_args()
    import mlflow

    raw = download_ml100k("bench-quality-")
    for split in args.splits:
        invoke(
            preprocess.main,
            ["--raw_run_id", raw, "--split", split, "--test_size", str(args.test_size)],
        )
        prep = last_run_id("preprocess")
        invoke(hpo.main, ["--preprocess_run_id", prep, "--n_trials", str(args.n_trials)])
        invoke(train_best.main, ["--preprocess_run_id", prep, "--hpo_run_id", last_run_id("hpo")])
        m = mlflow.get_run(last_run_id("train_best")).data.metrics
        print(
            f"{split:>6} split: model P@10 {m['test_precision_at_10']:.4f} NDCG@10 "
            f"{m['test_ndcg_at_10']:.4f} | popularity P@10 {m['popularity_precision_at_10']:.4f} "
            f"NDCG@10 {m['popularity_ndcg_at_10']:.4f} | NDCG ratio "
            f"{m['test_ndcg_at_10'] / m['popularity_ndcg_at_10']:.2f}x"
        )


if __name__ == "__main__":
    main()
