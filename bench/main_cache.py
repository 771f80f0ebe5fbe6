"""Wall time of `mlflow run -e main` on ML-100K: cold vs fully cached (the step cache), as a ratio.

Builds a zip in the official ml-100k layout from ../shared/data/ml-100k (u.data, u.item, u.user)
in a temp dir, points MLFLOW_TRACKING_URI at a fresh sqlite store and RECFLOW_DATA_DIR at the
temp dir, then runs the same `mlflow run <project> -e main --env-manager local ...` twice as
subprocesses. The second run must reuse all five steps (checked from the summary lines main
prints); the script fails with a message otherwise. Usage:

    .venv/bin/python bench/main_cache.py [--n-trials 5] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recflow.constants import STEPS  # noqa: E402
from recflow.data.datasets import get_spec  # noqa: E402
from recflow.data.extract import pack  # noqa: E402

ML100K = ROOT.parent / "shared" / "data" / "ml-100k"
FILES = ("u.data", "u.item", "u.user")
SUMMARY = re.compile(rf"^({'|'.join(STEPS)})\s+(ran|reused)\s+([0-9a-f]{{32}})\b", re.M)


def preflight() -> Path:
    """Exit unless the real ML-100K files and the venv's mlflow are here; return mlflow's path."""
    missing = [n for n in FILES if not (ML100K / n).is_file()]
    if missing:
        raise SystemExit(
            f"needs the real ML-100K ({', '.join(missing)}) in {ML100K}; "
            "see ../shared/data/README.md"
        )
    mlflow_exe = Path(sys.executable).parent / "mlflow"
    if not mlflow_exe.is_file():
        raise SystemExit(f"no mlflow executable next to {sys.executable}")
    return mlflow_exe


@contextlib.contextmanager
def scratch(prefix: str, keep: bool) -> Iterator[Path]:
    """A temp dir, removed on exit unless ``keep``."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def ml100k_zip(folder: Path) -> Path:
    """A zip in the official ml-100k layout, built from the real files in ../shared/data."""
    return pack(
        get_spec("ml-100k"), {n: (ML100K / n).read_bytes() for n in FILES}, folder / "ml-100k.zip"
    )


def client_env(mlflow_exe: Path, tracking_uri: str, data_dir: Path) -> dict[str, str]:
    """The environment of an `mlflow run` client of ``tracking_uri``."""
    return os.environ | {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "RECFLOW_DATA_DIR": str(data_dir),
        # --env-manager local runs each step's `python -m ...` from PATH: use this venv's.
        "PATH": os.pathsep.join([str(mlflow_exe.parent), os.environ.get("PATH", "")]),
    }


def run_main(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> tuple[float, str]:
    """Run ``cmd`` (in ``cwd``); return its wall time and stdout. Exits with the log's tail on
    failure."""
    start = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout}\n{tail}"
        )
    return seconds, proc.stdout


def step_states(stdout: str) -> dict[str, str]:
    """Step name -> 'ran' or 'reused', from the summary lines main prints."""
    return {m.group(1): m.group(2) for m in SUMMARY.finditer(stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=5, help="main's n_trials (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (store, logs)")
    args = parser.parse_args()
    mlflow_exe = preflight()

    with scratch("recflow-bench-main-", args.keep) as tmp:
        archive = ml100k_zip(tmp)
        sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
        env = client_env(mlflow_exe, f"sqlite:///{tmp / 'mlflow.db'}", tmp / "data")
        cmd = [
            str(mlflow_exe), "run", str(ROOT), "-e", "main", "--env-manager", "local",
            "-P", "dataset=ml-100k", "-P", f"data_url={archive}",
            "-P", f"checksum=sha256:{sha256}", "-P", f"n_trials={args.n_trials}",
        ]  # fmt: skip
        print(f"mlflow run -e main on ML-100K, n_trials={args.n_trials}, store in {tmp}")

        results = []
        for label in ("cold", "cached"):
            # From the scratch folder: a new SQLite store puts its artifacts in ./mlruns.
            seconds, stdout = run_main(cmd, env, tmp / f"{label}.log", cwd=tmp)
            states = step_states(stdout)
            results.append((label, seconds, stdout, states))
            print(
                f"{label:<6} {seconds:7.1f} s  "
                + ", ".join(f"{s} {states.get(s, '?')}" for s in STEPS)
            )

        cold, cached = results[0][1], results[1][1]
        print(f"cached / cold wall time: {cached / cold:.3f} ({cold / cached:.1f}x faster)")
        for line in results[0][2].splitlines():
            if line.startswith(("model ", "registry: ")):
                print(f"cold run: {line}")

        not_reused = [s for s in STEPS if results[1][3].get(s) != "reused"]
        if not_reused:
            raise SystemExit(
                f"FAIL: the cached run did not reuse {', '.join(not_reused)} "
                f"(summary parsed: {results[1][3] or 'no summary lines found'}); "
                f"its output:\n{results[1][2]}"
            )
        print(f"OK: the cached run reused all {len(STEPS)} steps")


if __name__ == "__main__":
    main()
