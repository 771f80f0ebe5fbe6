"""Starting and stopping model servers for the serving benchmarks.

``served(cmd, log)`` runs a server command (`mlflow models serve ...` or `python -m
recflow.serving.server ...`) in its own process group with this venv's bin first on PATH, waits until
``/ping`` answers and yields the base URL and the seconds that took; on exit the whole group
(supervisor and workers) is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stock_cmd(model: str | Path, port: int, workers: int) -> list[str]:
    """`mlflow models serve` of a local model folder in this environment."""
    return [MLFLOW, "models", "serve", "-m", str(model), "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]  # fmt: skip


def fixed_cmd(model: str | Path, port: int, workers: int) -> list[str]:
    """The project's launcher (recflow/server.py) of the same model."""
    return [sys.executable, "-m", "recflow.serving.server", "-m", str(model),
            "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]  # fmt: skip


@contextlib.contextmanager
def served(
    cmd: list[str], port: int, log: Path, timeout: float = 300
) -> Iterator[tuple[str, float, subprocess.Popen]]:
    """Run ``cmd`` until ``/ping`` on ``port`` answers; yield (URL, startup seconds, process)."""
    # The server starts uvicorn from PATH; `python -m recflow.serving.server` imports from ROOT.
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
            if time.perf_counter() - start > timeout:
                raise SystemExit(f"server did not answer /ping:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/ping", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        yield url, time.perf_counter() - start, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
