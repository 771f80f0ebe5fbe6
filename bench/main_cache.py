"""Wall time of `mlflow run -e main` on ML-100K: cold vs fully cached (the step cache), as a ratio.

Builds a zip in the official ml-100k layout from ../shared/data/ml-100k (u.data, u.item, u.user)
in a temp dir, points MLFLOW_TRACKING_URI at a fresh sqlite store and RECFLOW_DATA_DIR at the
temp dir (``recflow.testing.runs``), then runs the same `mlflow run <project> -e main --env-manager local ...` twice as
subprocesses. The second run must reuse all five steps (checked from the summary lines main
prints); the script fails with a message otherwise. Usage:

    .venv/bin/python bench/main_cache.py [--n-trials 5] [--keep]
"""

from __future__ import annotations

import argparse

from recflow.constants import STEPS
from recflow.testing.archives import real_ml100k_zip
from recflow.testing.runs import (
    archive_params,
    mlflow_run,
    require_reused,
    run,
    scratch,
    step_states,
)
from recflow.testing.runs import store as make_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=5, help="main's n_trials (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (store, logs)")
    args = parser.parse_args()

    with scratch("recflow-bench-main-", args.keep) as tmp:
        where = make_store(tmp)
        cmd = mlflow_run(
            "main", [*archive_params(real_ml100k_zip(tmp)), f"n_trials={args.n_trials}"]
        )
        print(f"mlflow run -e main on ML-100K, n_trials={args.n_trials}, store in {tmp}")

        results = {}
        for label in ("cold", "cached"):
            seconds, stdout = run(cmd, where, f"{label}.log")
            states = step_states(stdout)
            results[label] = (seconds, stdout)
            print(
                f"{label:<6} {seconds:7.1f} s  "
                + ", ".join(f"{s} {states.get(s, '?')}" for s in STEPS)
            )

        (cold, cold_out), (cached, cached_out) = results["cold"], results["cached"]
        print(f"cached / cold wall time: {cached / cold:.3f} ({cold / cached:.1f}x faster)")
        for line in cold_out.splitlines():
            if line.startswith(("model ", "registry: ")):
                print(f"cold run: {line}")
        require_reused(cached_out, "the cached run")
        print(f"OK: the cached run reused all {len(STEPS)} steps")


if __name__ == "__main__":
    main()
