"""Ours against published results on their own protocol: real ML-100K, per-user 75/25 split.

Microsoft Recommenders' benchmark (ML-100K, each user's ratings split 75/25 at random, top-10
over every item not rated in training) reports single runs; we run, for each split seed, as a
user would:

    mlflow run . -e main -P dataset=ml-100k -P data_url=<zip of ../shared/data/ml-100k>
        -P split=user -P test_size=0.25 -P seed=<seed> [-P n_trials=<n>]

(a fresh tracking store each), and print train_best's test metrics at 10, ours and the
popularity baseline's, as mean ± standard deviation over the seeds beside the published
figures, as the Markdown table the README shows. Usage::

    .venv/bin/python bench/protocol.py [--seeds 1492 7 42] [--n_trials 20]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recflow import constants as C  # noqa: E402
from recflow.data.datasets import get_spec  # noqa: E402
from recflow.data.extract import pack  # noqa: E402
from recflow.evaluation.beyond import BEYOND_ACCURACY  # noqa: E402

ML100K = ROOT.parent / "shared" / "data" / "ml-100k"
METRICS = ("precision", "recall", "ndcg", "hit_rate", "mrr")
SOURCE = "[Microsoft Recommenders](https://github.com/recommenders-team/recommenders/blob/main/examples/06_benchmarks/movielens.ipynb)"
# Published top-10 figures on this protocol: (precision, ndcg).
PUBLISHED = {
    "BiVAE (best published)": (0.412, 0.475),
    "Cornac BPR": (0.388, 0.442),
    "LightGCN": (0.380, 0.420),
}


def run_main(zip_path: Path, seed: int, extra: list[str]) -> dict[str, float]:
    """One ``main`` in a fresh store; train_best's test metrics."""
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix=f"bench-protocol-{seed}-"))
    uri = f"sqlite:///{folder}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "RECFLOW_DATA_DIR": str(folder / "data")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    params = [
        "dataset=ml-100k", f"data_url={zip_path}", f"checksum=sha256:{digest}", "split=user",
        "test_size=0.25", f"seed={seed}", *extra,
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "main", "--env-manager", "local"]
    for p in params:
        cmd += ["-P", p]
    log = folder / "main.log"
    with log.open("w") as out:
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    if done.returncode:
        raise SystemExit(f"seed {seed}: main failed; its output: {log}\n" + log.read_text()[-3000:])
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`{C.TAG_STEP}` = 'train_best'",
    )
    return runs[0].data.metrics


def cell(values: list[float]) -> str:
    return (
        f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
        if len(values) > 1
        else (f"{values[0]:.3f}")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1492, 7, 42])
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="more -P parameters for main (e.g. n_trials=30)")  # fmt: skip
    args = parser.parse_args()
    if not ML100K.is_dir():
        raise SystemExit(f"needs the real ML-100K files in {ML100K}")
    with tempfile.TemporaryDirectory() as tmp:
        names = ("u.data", "u.item", "u.user")
        zip_path = pack(
            get_spec("ml-100k"), {n: (ML100K / n).read_bytes() for n in names},
            Path(tmp) / "ml-100k.zip",
        )  # fmt: skip
        results, seconds = [], []
        for seed in args.seeds:
            start = time.monotonic()
            results.append(run_main(zip_path, seed, args.param))
            seconds.append(time.monotonic() - start)
            ours = results[-1]
            print(
                f"seed {seed}: NDCG@10 {ours['test_ndcg_at_10']:.4f}, P@10 "
                f"{ours['test_precision_at_10']:.4f} in {seconds[-1]:.0f} s", flush=True,
            )  # fmt: skip
    seeds = ", ".join(map(str, args.seeds))
    print(f"\nReal ML-100K, per-user 75/25 split (split seeds {seeds}), top-10 over unrated items")
    print("| model | P@10 | R@10 | NDCG@10 | HR@10 | MRR@10 | source |")
    print("|---|---|---|---|---|---|---|")
    for prefix, name in ((C.TEST_PREFIX, "ours: `main`, default budget"),
                         (C.POPULARITY_PREFIX, "popularity (same splits)")):  # fmt: skip
        cells = [cell([r[f"{prefix}{m}_at_10"] for r in results]) for m in METRICS]
        print(f"| {name} | " + " | ".join(cells) + " | bench/protocol.py |")
    for name, (p, ndcg) in PUBLISHED.items():
        print(f"| {name} | {p:.3f} | | {ndcg:.3f} | | | {SOURCE} |")
    print("\n| beyond accuracy @10 | coverage | Gini | novelty (bits) | avg popularity |")
    print("|---|---|---|---|---|")
    for prefix, name in ((C.TEST_PREFIX, "ours"), (C.POPULARITY_PREFIX, "popularity")):
        cells = [cell([r[f"{prefix}{m}_at_10"] for r in results]) for m in BEYOND_ACCURACY]
        print(f"| {name} | " + " | ".join(cells) + " |")
    ours = {m: np.mean([r[f"{C.TEST_PREFIX}{m}_at_10"] for r in results]) for m in METRICS}
    best_p, best_ndcg = PUBLISHED["BiVAE (best published)"]
    print(
        f"\nours / BiVAE: NDCG@10 {ours['ndcg'] / best_ndcg:.3f}x, P@10 "
        f"{ours['precision'] / best_p:.3f}x; main took {np.mean(seconds):.0f} s per seed"
    )


if __name__ == "__main__":
    main()
