"""`mlflow run` of this project in scratch tracking stores, as a user would run it.

In: entry-point parameters and a folder. Out: the command line, its wall time and output, the
steps ``main`` ran or reused (its summary lines), and the runs the store holds, by step. Each
store is a folder of its own: a SQLite database (or a given tracking URI), the data folder
(``RECFLOW_DATA_DIR``), the logs, and the working directory, where a new SQLite store puts its
artifacts (``./mlruns``), so nothing lands in the checkout.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recflow.constants import STEPS, TAG_STEP
from recflow.testing.archives import sha256
from recflow.testing.services import MLFLOW

PROJECT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(rf"^({'|'.join(STEPS)})\s+(ran|reused)\s+([0-9a-f]{{32}})\b", re.M)
RUN_ID = re.compile(r"Run \(ID '([0-9a-f]{32})'\) succeeded")


@contextlib.contextmanager
def scratch(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temp dir, removed on exit unless ``keep``."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class Store:
    """A client's folder: its tracking URI and the environment `mlflow run` gets."""

    folder: Path
    uri: str
    env: dict[str, str]


def store(folder: Path, tracking_uri: str = "") -> Store:
    """A store in ``folder`` (created): ``tracking_uri``, or a SQLite database there."""
    folder.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or f"sqlite:///{folder / 'mlflow.db'}"
    env = os.environ | {
        "MLFLOW_TRACKING_URI": uri,
        "RECFLOW_DATA_DIR": str(folder / "data"),
        # --env-manager local runs each step's `python -m ...` from PATH: use this venv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("MLFLOW_RUN_ID", None)
    return Store(folder, uri, env)


def archive_params(archive: Path, dataset: str = "ml-100k") -> list[str]:
    """``main``'s (and ``download``'s) parameters for a local archive, checksum included."""
    return [f"dataset={dataset}", f"data_url={archive}", f"checksum={sha256(archive)}"]


def mlflow_run(entry: str, params: list[str], project: Path = PROJECT) -> list[str]:
    """The command line of `mlflow run <project> -e <entry> --env-manager local -P ...`."""
    cmd = [MLFLOW, "run", str(project), "-e", entry, "--env-manager", "local"]
    for p in params:
        cmd += ["-P", p]
    return cmd


def run(cmd: list[str], where: Store, log: str) -> tuple[float, str]:
    """Run ``cmd`` in the store's folder, stderr to ``folder/log``; its wall time and stdout.
    Exits with the log's tail on failure."""
    start = time.perf_counter()
    with (where.folder / log).open("w") as err:
        proc = subprocess.run(
            cmd, env=where.env, cwd=where.folder, stdout=subprocess.PIPE, stderr=err, text=True
        )
    seconds = time.perf_counter() - start
    if proc.returncode:
        tail = "\n".join((where.folder / log).read_text().splitlines()[-30:])
        raise SystemExit(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout}\n{tail}"
        )
    return seconds, proc.stdout


def run_id(where: Store, log: str) -> str:
    """The ID of the last run `mlflow run` reported as succeeded in ``folder/log``."""
    found = RUN_ID.findall((where.folder / log).read_text())
    if not found:
        raise SystemExit(f"no run ID in {where.folder / log}")
    return found[-1]


def step_states(stdout: str) -> dict[str, str]:
    """Step name -> 'ran' or 'reused', from the summary lines main prints."""
    return {m.group(1): m.group(2) for m in SUMMARY.finditer(stdout)}


def require_reused(stdout: str, what: str) -> None:
    """Exit unless ``main``'s output says it reused every step."""
    states = step_states(stdout)
    not_reused = [s for s in STEPS if states.get(s) != "reused"]
    if not_reused:
        raise SystemExit(
            f"FAIL: {what} did not reuse {', '.join(not_reused)} "
            f"(summary parsed: {states or 'no summary lines found'}); its output:\n{stdout}"
        )


def runs_by_step(uri: str) -> dict:
    """The store's last finished or failed run of each step, by step name."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], max_results=10_000,
        order_by=["attributes.start_time ASC"],
    )  # fmt: skip
    return {r.data.tags[TAG_STEP]: r for r in runs if TAG_STEP in r.data.tags}


def seconds(run) -> float:
    """A run's wall time from its start and end times."""
    return (run.info.end_time - run.info.start_time) / 1000
