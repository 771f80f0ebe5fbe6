"""Model servers on loopback, for the serving tests and benchmarks.

``served(cmd, port, log)`` runs a server command (``stock_cmd``: `mlflow models serve ...`;
``fixed_cmd``: `python -m recflow.serving.server ...`) in its own process group with this venv's
bin first on PATH, waits (with a deadline) until ``/ping`` answers and yields the base URL, the
seconds that took and the process; on exit the whole group (supervisor and workers) is stopped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from recflow.testing.services import MLFLOW, answers, await_ready, stop_group

PROJECT = Path(__file__).resolve().parents[2]


def stock_cmd(model: str | Path, port: int, workers: int) -> list[str]:
    """`mlflow models serve` of a model (a folder or a models:/ URI) in this environment."""
    return [MLFLOW, "models", "serve", "-m", str(model), "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]  # fmt: skip


def fixed_cmd(model: str | Path, port: int, workers: int) -> list[str]:
    """The project's launcher (recflow/serving/server.py) of the same model."""
    return [sys.executable, "-m", "recflow.serving.server", "-m", str(model),
            "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]  # fmt: skip


@contextlib.contextmanager
def served(
    cmd: list[str], port: int, log: Path, timeout: float = 300
) -> Iterator[tuple[str, float, subprocess.Popen]]:
    """Run ``cmd`` until ``/ping`` on ``port`` answers; yield (URL, startup seconds, process)."""
    # The server starts uvicorn from PATH.
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        await_ready(proc, lambda: answers(f"{url}/ping"), log, timeout)
        yield url, time.perf_counter() - start, proc
    finally:
        stop_group(proc)
