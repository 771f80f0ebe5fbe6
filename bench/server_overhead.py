"""Wall time of a fully cached `mlflow run -e main` on ML-100K: tracking server vs local SQLite.

Two tracking stores: an `mlflow server` with a throwaway PostgreSQL backend and proxied
artifacts (tests/services.py), and a local sqlite:///<tmp>/mlflow.db. For each, builds a zip in
the official ml-100k layout from ../shared/data/ml-100k and runs `mlflow run <project> -e main
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
import hashlib
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.main_cache import (  # noqa: E402
    client_env,
    ml100k_zip,
    preflight,
    run_main,
    scratch,
    step_states,
)
from recflow.constants import STEPS  # noqa: E402
from tests.services import team_services  # noqa: E402


def snapshot(dst: Path) -> Path:
    """Copy the project's code and configuration (no venv, stores, caches or git) to ``dst``."""
    skip = shutil.ignore_patterns(
        ".git", ".venv", "mlruns", "mlartifacts", "mlflow.db", "__pycache__", "*.egg-info",
        ".*_cache",
    )  # fmt: skip

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = {"data"} if Path(folder) == ROOT else set()  # downloaded archives
        return set(skip(folder, names)) | (top & set(names))

    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="cached runs per store (default 3)")
    parser.add_argument("--n-trials", type=int, default=3, help="main's n_trials (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (stores, logs)")
    args = parser.parse_args()
    mlflow_exe = preflight()

    with (
        scratch("recflow-bench-server-", args.keep) as tmp,
        team_services(tmp / "server" / "artifacts") as (_, server),
    ):
        archive = ml100k_zip(tmp)
        sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
        project = snapshot(tmp / "project")
        stores = {"sqlite": f"sqlite:///{tmp / 'sqlite' / 'mlflow.db'}", "server": server.url}
        envs: dict[str, dict[str, str]] = {}
        for label, uri in stores.items():
            (tmp / label).mkdir(exist_ok=True)
            envs[label] = client_env(mlflow_exe, uri, tmp / label / "data")
        cmd = [
            str(mlflow_exe), "run", str(project), "-e", "main", "--env-manager", "local",
            "-P", "dataset=ml-100k", "-P", f"data_url={archive}",
            "-P", f"checksum=sha256:{sha256}", "-P", f"n_trials={args.n_trials}",
        ]  # fmt: skip
        print(
            f"mlflow run -e main on ML-100K, n_trials={args.n_trials}: sqlite store vs "
            f"mlflow server (PostgreSQL, proxied artifacts); temp dir {tmp}"
        )

        for label in stores:
            seconds, _ = run_main(cmd, envs[label], tmp / label / "cold.log", cwd=tmp / label)
            print(f"{label:<6} cold      {seconds:7.1f} s")
        cached: dict[str, list[float]] = {label: [] for label in stores}
        # Alternate the stores so that a drift of the machine's speed hits both alike.
        for i in range(args.repeats):
            for label in stores:
                seconds, stdout = run_main(
                    cmd, envs[label], tmp / label / f"cached-{i}.log", cwd=tmp / label
                )
                states = step_states(stdout)
                not_reused = [s for s in STEPS if states.get(s) != "reused"]
                if not_reused:
                    raise SystemExit(
                        f"FAIL: cached run {i + 1} on {label} did not reuse "
                        f"{', '.join(not_reused)} (summary parsed: "
                        f"{states or 'no summary lines found'}); its output:\n{stdout}"
                    )
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
