"""HPO wall time on ML-100K: pruning vs none, and n_jobs 2 vs 1 (ratios).

Runs the hpo step (in-process, a temporary tracking store and journal) on a preprocess run of
the real ML-100K from ../shared/data. Usage:

    .venv/bin/python bench/hpo_speed.py --n-trials 30
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from recflow.testing.archives import real_ml100k_zip
from steps import download, hpo, preprocess


def invoke(command, args: list[str]) -> str:
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    if result.exit_code:
        raise SystemExit(result.output)
    return result.output


def last_run_id(step: str) -> str:
    import mlflow

    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`recflow.step` = '{step}'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    return runs[0].info.run_id


def download_ml100k(tmp: Path) -> str:
    """Point tracking at a fresh store in ``tmp``, run download on the real ML-100K: its run ID."""
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["RECFLOW_DATA_DIR"] = str(tmp / "data")
    archive = real_ml100k_zip(tmp)
    invoke(download.main, ["--dataset", "ml-100k", "--data_url", str(archive)])
    return last_run_id("download")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=30)
    parser.add_argument("--split", default="random")
    args = parser.parse_args()
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bench-hpo-") as tmp:
        os.chdir(tmp)  # a new SQLite store puts its artifacts in ./mlruns
        try:
            measure(args, Path(tmp))
        finally:
            os.chdir(here)


def measure(args: argparse.Namespace, tmp: Path) -> None:
    """Run the three studies in a store in ``tmp`` and print their times and ratios."""
    raw = download_ml100k(tmp)
    invoke(preprocess.main, ["--raw_run_id", raw, "--split", args.split])
    prep = last_run_id("preprocess")

    times: dict[str, float] = {}
    for label, extra in [
        ("pruner=median n_jobs=1", ["--pruner", "median"]),
        ("pruner=none   n_jobs=1", ["--pruner", "none"]),
        ("pruner=median n_jobs=2", ["--pruner", "median", "--n_jobs", "2"]),
    ]:
        start = time.perf_counter()
        out = invoke(
            hpo.main,
            ["--preprocess_run_id", prep, "--n_trials", str(args.n_trials),
             "--study_name", label.replace(" ", ""), *extra],
        )  # fmt: skip
        times[label] = time.perf_counter() - start
        print(
            f"{label}: {times[label]:7.1f} s  {next(line for line in out.splitlines() if line.startswith('study '))}"
        )
    print(
        f"pruning speed-up (none / median): "
        f"{times['pruner=none   n_jobs=1'] / times['pruner=median n_jobs=1']:.2f}x"
    )
    print(
        f"n_jobs speed-up (1 / 2): "
        f"{times['pruner=median n_jobs=1'] / times['pruner=median n_jobs=2']:.2f}x"
    )


if __name__ == "__main__":
    main()
