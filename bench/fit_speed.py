"""Fit speed of recflow.model.recommender.Recommender.fit (WARP, 20 factors, 20 epochs), and vs rankfmc 0.3.3.

Data: (a) the train part of the real ML-100K (../shared/data/ml-100k/u.data; to_implicit(0) and the
random 0.2/0.1 split seeded 1492, as the pipeline does) and (b) a synthetic ML-1M-scale set over
the real ML-1M users and movies (bench/synthetic_ml1m.py), put through the same split. Prints the
seconds of each fit and the throughput (training interactions x epochs per second).

With ``--compare-wheel`` the same fits also run under the slow rankfmc 0.3.3 manylinux wheel, in a
throwaway venv (built once and cached in $RECFLOW_BENCH_WHEEL_VENV, default
/tmp/recflow-bench-rankfmc-0.3.3; numpy and pandas pinned to this venv's versions so only rankfmc
differs), calling rankfmc.RankFM directly on the same pairs, and the ratio "shipped / 0.3.3 wheel
speed-up" is printed. The 0.3.3 wheel needs ~1.5 minutes on ML-100K and ~15 on the ML-1M-scale set;
``--only ml-100k`` keeps it short. Usage:

    .venv/bin/python bench/fit_speed.py
    .venv/bin/python bench/fit_speed.py --compare-wheel [--only ml-100k]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synthetic_ml1m import ml1m_ratings  # noqa: E402
from recflow.constants import ITEM_COL, RATING_COL, TIMESTAMP_COL, USER_COL  # noqa: E402
from recflow.data import preprocess  # noqa: E402
from recflow.model.recommender import FMParams, Recommender  # noqa: E402

ML100K = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"
WHEEL_VERSION = "0.3.3"
WHEEL_VENV = Path(
    os.environ.get("RECFLOW_BENCH_WHEEL_VENV", f"/tmp/recflow-bench-rankfmc-{WHEEL_VERSION}")
)
SPLIT_SEED = 1492
DATASETS = ("ml-100k", "ml-1m-synthetic")

# Runs in the wheel venv: the fit that Recommender.fit makes (one RankFM.fit call, numpy's global
# RNG seeded), on the pairs saved as .npy; prints JSON.
WHEEL_FIT = """
import json, sys, time
import numpy as np, pandas as pd
import rankfmc
from rankfmc import RankFM
pairs_path, spec = sys.argv[1], json.loads(sys.argv[2])
pairs = np.load(pairs_path)
train = pd.DataFrame({"user_id": pairs[:, 0], "item_id": pairs[:, 1]})
np.random.seed(spec["seed"])
fm = RankFM(**spec["rankfm"])
start = time.perf_counter()
fm.fit(train, epochs=spec["epochs"])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rankfmc": rankfmc.__file__}))
"""


def rankfmc_provenance(python: str | None = None) -> str:
    """Where rankfmc is imported from and whether its extension was built on this machine.

    The signal is the wheel tag in the installed dist's WHEEL file: PyPI only accepts
    manylinux/musllinux tags, so a plain ``linux_x86_64`` tag means pip/uv built the wheel from
    the sdist here, and ``manylinux*`` means a prebuilt binary wheel was installed.
    """
    probe = (
        "import importlib.metadata as m, rankfmc._rankfm as ext\n"
        "d = m.distribution('rankfmc')\n"
        "tags = [l.split(':', 1)[1].strip() for l in (d.read_text('WHEEL') or '').splitlines()"
        " if l.startswith('Tag:')]\n"
        "print(d.version, ext.__file__, ','.join(tags) or '?', sep='\\n')\n"
    )
    out = subprocess.run(
        [python or sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.split("\n")
    version, ext, tags = out[0], out[1], out[2]
    if "manylinux" in tags or "musllinux" in tags:
        built = "prebuilt binary wheel from PyPI"
    elif "linux" in tags:
        built = "built locally from the sdist"
    else:
        built = "unknown build"
    return f"rankfmc {version} ({built}; wheel tag {tags})\n    extension: {ext}"


def ml100k_ratings() -> pd.DataFrame:
    if not ML100K.is_file():
        raise SystemExit(f"needs the real ML-100K u.data in {ML100K}; see ../shared/data/README.md")
    cols = [USER_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL]
    return pd.read_csv(ML100K, sep="\t", names=cols)


def train_split(ratings: pd.DataFrame) -> pd.DataFrame:
    """The pipeline's default train part: all ratings as implicit, random 0.2/0.1 hold-out."""
    implicit = preprocess.to_implicit(ratings, min_rating=0)
    return preprocess.split(implicit, "random", 0.2, 0.1, np.random.default_rng(SPLIT_SEED)).train


def rankfm_kwargs(params: FMParams) -> dict:
    """The RankFM constructor arguments Recommender.fit passes for ``params``."""
    d = params.to_dict()
    return {k: d[k] for k in (
        "factors", "loss", "max_samples", "alpha", "beta", "sigma", "learning_rate",
        "learning_schedule", "learning_exponent",
    )}  # fmt: skip


def wheel_python() -> Path:
    """The throwaway venv's interpreter with rankfmc 0.3.3 (a prebuilt wheel), built once."""
    python = WHEEL_VENV / "bin" / "python"
    done = WHEEL_VENV / ".recflow-bench-complete"
    if done.is_file() and python.is_file():
        return python
    shutil.rmtree(WHEEL_VENV, ignore_errors=True)  # a half-built venv from an interrupted run
    print(f"creating {WHEEL_VENV} with the rankfmc {WHEEL_VERSION} wheel ...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(WHEEL_VENV)
    pins = [f"{n}=={importlib.metadata.version(n)}" for n in ("numpy", "pandas")]
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--only-binary", "rankfmc", f"rankfmc=={WHEEL_VERSION}", *pins],
        check=True,
    )  # fmt: skip
    done.write_text(" ".join([f"rankfmc=={WHEEL_VERSION}", *pins]) + "\n")
    return python


def fit_wheel(python: Path, train: pd.DataFrame, params: FMParams, seed: int) -> float:
    """Seconds of the same fit under the wheel, in a subprocess on the same pairs."""
    with tempfile.TemporaryDirectory(prefix="recflow-fit-speed-") as tmp:
        pairs_path = Path(tmp) / "pairs.npy"
        np.save(pairs_path, train[[USER_COL, ITEM_COL]].to_numpy(dtype=np.int64))
        spec = {"seed": seed, "epochs": params.epochs, "rankfm": rankfm_kwargs(params)}
        out = subprocess.run(
            [str(python), "-c", WHEEL_FIT, str(pairs_path), json.dumps(spec)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def report(label: str, n: int, epochs: int, seconds: float) -> None:
    print(f"  {label:<15} {seconds:8.2f} s  {n * epochs / seconds:12,.0f} interactions/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--compare-wheel",
        action="store_true",
        help=f"also fit under the rankfmc {WHEEL_VERSION} wheel (slow)",
    )
    parser.add_argument("--only", choices=DATASETS, help="run one data set only")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="the fit's seed (same for both)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic set")
    args = parser.parse_args()

    params = FMParams(factors=20, loss="warp", epochs=args.epochs)
    print("shipped:", rankfmc_provenance())
    python = None
    if args.compare_wheel:
        python = wheel_python()
        print(f"{WHEEL_VERSION} wheel:", rankfmc_provenance(str(python)))
    print(f"params: {params}, seed {args.seed}")

    for name in [args.only] if args.only else DATASETS:
        if name == "ml-100k":
            ratings = ml100k_ratings()
        else:
            ratings = ml1m_ratings(np.random.default_rng(args.data_seed))
        train = train_split(ratings)
        print(
            f"{name}: {len(train):,} training interactions, "
            f"{train[USER_COL].nunique():,} users x {train[ITEM_COL].nunique():,} items"
        )
        start = time.perf_counter()
        Recommender.fit(train, params, seed=args.seed)
        shipped = time.perf_counter() - start
        report("shipped", len(train), params.epochs, shipped)
        if python is not None:
            wheel = fit_wheel(python, train, params, args.seed)
            report(f"{WHEEL_VERSION} wheel", len(train), params.epochs, wheel)
            print(f"  shipped / {WHEEL_VERSION} wheel speed-up: {wheel / shipped:.1f}x")


if __name__ == "__main__":
    main()
