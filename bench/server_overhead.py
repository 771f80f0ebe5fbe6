"""Wall time of a fully cached `mlflow run -e main` on ML-100K: tracking server vs local SQLite.

Two tracking stores: an `mlflow server` with a throwaway PostgreSQL backend and proxied
artifacts (recflow/testing/services.py), and a local sqlite:///<tmp>/mlflow.db. Builds a zip in the
official ml-100k layout from ../shared/data/ml-100k and, for each store, runs `mlflow run <project> -e main
--env-manager local -P dataset=ml-100k -P data_url=<zip> -P checksum=... -P n_trials=3` once
cold (timed apart), then --repeats more times, alternating the stores, each with its own
RECFLOW_DATA_DIR and working directory. It runs a copy of the project's code taken at the start,
since the step cache keys on a hash of the code: an edit saved meanwhile would make every step
run again. Every cached run must reuse all five steps (checked from the summary lines main
prints); the script fails with a message otherwise. Prints the median cached wall time of each
store and the ratio server / sqlite. Usage:

    .venv/bin/python bench/server_overhead.py [--repeats 3] [--n-trials 3] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

from recflow.constants import STEPS
from recflow.testing.archives import real_ml100k_zip
from recflow.testing.runs import PROJECT, archive_params, mlflow_run, require_reused, run, scratch
from recflow.testing.runs import store as make_store
from recflow.testing.services import team_services


def snapshot(dst: Path) -> Path:
    """Copy the project's code and configuration (no venv, stores, caches or git) to ``dst``."""
    skip = shutil.ignore_patterns(
        ".git", ".venv", "mlruns", "mlartifacts", "mlflow.db", "__pycache__", "*.egg-info",
        ".*_cache",
    )  # fmt: skip

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = {"data"} if Path(folder) == PROJECT else set()  # downloaded archives
        return set(skip(folder, names)) | (top & set(names))

    shutil.copytree(PROJECT, dst, ignore=ignore)
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="cached runs per store (default 3)")
    parser.add_argument("--n-trials", type=int, default=3, help="main's n_trials (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (stores, logs)")
    args = parser.parse_args()

    with (
        scratch("recflow-bench-server-", args.keep) as tmp,
        team_services(tmp / "server" / "artifacts") as (_, server),
    ):
        params = [*archive_params(real_ml100k_zip(tmp)), f"n_trials={args.n_trials}"]
        cmd = mlflow_run("main", params, project=snapshot(tmp / "project"))
        stores = {
            "sqlite": make_store(tmp / "sqlite"),
            "server": make_store(tmp / "server", server.url),
        }
        print(
            f"mlflow run -e main on ML-100K, n_trials={args.n_trials}: sqlite store vs "
            f"mlflow server (PostgreSQL, proxied artifacts); temp dir {tmp}"
        )

        for label, where in stores.items():
            seconds, _ = run(cmd, where, "cold.log")
            print(f"{label:<6} cold      {seconds:7.1f} s")
        cached: dict[str, list[float]] = {label: [] for label in stores}
        # Alternate the stores so that a drift of the machine's speed hits both alike.
        for i in range(args.repeats):
            for label, where in stores.items():
                seconds, stdout = run(cmd, where, f"cached-{i}.log")
                require_reused(stdout, f"cached run {i + 1} on {label}")
                cached[label].append(seconds)
                print(f"{label:<6} cached {i + 1}  {seconds:7.1f} s  (all {len(STEPS)} reused)")

        median = {label: statistics.median(times) for label, times in cached.items()}
        for label, times in cached.items():
            print(
                f"{label:<6} median cached {median[label]:6.2f} s "
                f"(min {min(times):.2f}, max {max(times):.2f}, n={len(times)})"
            )
        print(
            f"server / sqlite cached wall time: {median['server'] / median['sqlite']:.3f} "
            f"({median['server'] - median['sqlite']:+.2f} s per cached main)"
        )


if __name__ == "__main__":
    main()
