"""The served model at ML-25M scale: load time, server startup, one-user latency, memory.

Setup (not timed): a model of ML-25M's shape built directly, no training: 162,541 users x 59,047
items with random float32 embeddings (``--factors`` 32, so 64 columns as our recommender stores
them), and a seen table of ~19M (user, item) pairs, long-tailed per user (lognormal, >= 20 each)
and Zipf-like over items, as ML-25M's train + valid part (``recflow.testing.models.random_model``).
It is written with ``bundle.write_bundle`` and logged with ``packaging.log_model`` into a
throwaway SQLite tracking store.

Measured:
- load: ``mlflow.pyfunc.load_model`` of the downloaded model folder in a fresh process (best of
  ``--loads``), and that process's peak RSS;
- startup: `mlflow models serve -m models:/... -w 1` until ``/ping`` answers (download + imports +
  load), then one user per request from one keep-alive client: p50 / p99; and the RSS of the
  server's processes. Twice: with OpenBLAS's default threads (one per core) and with one, as
  each of N workers on N cores should run (on a busy 2-core machine a second BLAS thread makes
  the one-user matrix-vector product several times slower). Targets: load <= 10 s, p50 <= 20 ms.
  Usage:

    .venv/bin/python bench/serve_scale.py [--requests 500] [--loads 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from recflow.constants import USER_COL
from recflow.testing.load import group_rss
from recflow.testing.models import log_served, random_model
from recflow.testing.servers import served, stock_cmd
from recflow.testing.services import free_port
from recflow.testing.synthetic import SHAPES

# A fresh interpreter: imports mlflow, then times load_model alone; prints seconds and the
# process's peak RSS in MB (VmHWM: ru_maxrss would count the parent's memory at fork).
LOAD = """
import sys, time
import mlflow.pyfunc
start = time.perf_counter()
mlflow.pyfunc.load_model(sys.argv[1])
took = time.perf_counter() - start
hwm = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(took, int(hwm) / 1024)
"""


def build(folder: Path, factors: int) -> tuple[str, Path, int, str]:
    """Write and log the model: its models:/ URI, its local folder, the seen table's size and
    its shape."""
    import mlflow

    model, seen = random_model(np.random.default_rng(25), factors)
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    uri = log_served(model, seen, folder)
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(folder / "m")))
    shape = f"{len(model.user_ids)} users x {len(model.item_ids)} items x {2 * factors} dims"
    return uri, local, len(seen), shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--loads", type=int, default=3, help="fresh-process loads, best taken")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        report(args, Path(scratch))


def report(args: argparse.Namespace, tmp: Path) -> None:
    """Build, load and serve the model in ``tmp``; print the figures."""
    start = time.perf_counter()
    uri, local, n_seen, shape = build(tmp, args.factors)
    size = sum(f.stat().st_size for f in local.rglob("*") if f.is_file()) / 2**20
    print(
        f"model: {shape}, {n_seen} seen "
        f"pairs; {size:.0f} MB on disk (built and logged in {time.perf_counter() - start:.0f} s)"
    )
    loads = [
        subprocess.run(
            [sys.executable, "-c", LOAD, str(local)], check=True, capture_output=True, text=True,
            cwd=tmp,
        ).stdout.split()
        for _ in range(args.loads)
    ]  # fmt: skip
    secs, rss = min((float(s), float(r)) for s, r in loads)
    print(f"load_model: {secs:.2f} s (best of {args.loads}), peak RSS {rss:.0f} MB")

    n_users = SHAPES["ml-25m"].n_users
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    for label, threads in (("default BLAS threads", None), ("OPENBLAS_NUM_THREADS=1", "1")):
        startup, lat, rss = serve_and_measure(uri, tmp, threads, args.requests, n_users)
        print(
            f"mlflow models serve -w 1, {label}: startup {startup:.1f} s to /ping; one user per "
            f"request, one client: p50 {np.percentile(lat, 50):.1f} ms, "
            f"p99 {np.percentile(lat, 99):.1f} ms ({len(lat)} requests)"
        )
        for name, size in rss.items():
            print(f"  RSS {size / 2**20:6.0f} MB  {name}")


def serve_and_measure(
    uri: str, tmp: Path, blas_threads: str | None, n: int, n_users: int
) -> tuple[float, np.ndarray, dict[str, int]]:
    """Serve ``uri`` with one worker: startup seconds, latencies (ms) of ``n`` one-user
    requests in a row on one keep-alive connection, RSS of the server's processes."""
    port = free_port()
    saved = os.environ.copy()
    if blas_threads:
        os.environ.update(OPENBLAS_NUM_THREADS=blas_threads, OMP_NUM_THREADS=blas_threads)
    try:
        with served(stock_cmd(uri, port, 1), port, tmp / f"serve-{port}.log") as (url, up, proc):
            lat = []
            with requests.Session() as session:
                for user in np.random.default_rng(0).integers(1, n_users + 1, n + 20):
                    t0 = time.perf_counter()
                    resp = session.post(
                        f"{url}/invocations",
                        json={"inputs": {USER_COL: [int(user)]}, "params": {"k": 10}},
                        timeout=30,
                    )
                    lat.append(time.perf_counter() - t0)
                    resp.raise_for_status()
            return up, np.array(lat[20:]) * 1000, group_rss(proc.pid)  # 20 warm-ups
    finally:
        os.environ.clear()
        os.environ.update(saved)


if __name__ == "__main__":
    main()
