"""The served model at ML-25M scale: load time, server startup, one-user latency, memory.

Setup (not timed): a model of ML-25M's shape built directly, no training: 162,541 users x 59,047
items with random float32 embeddings (``--factors`` 32, so 64 columns as our recommender stores
them), and a seen table of ~19M (user, item) pairs, long-tailed per user (lognormal, >= 20 each)
and Zipf-like over items, as ML-25M's train + valid part. It is written with
``bundle.write_bundle`` and logged with ``packaging.log_model`` into a throwaway SQLite tracking
store.

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
import pandas as pd
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import free_port, served, stock_cmd  # noqa: E402
from recflow.constants import ITEM_COL, USER_COL  # noqa: E402
from recflow.model.recommender import FMParams, Recommender  # noqa: E402
from recflow.serving import bundle, packaging  # noqa: E402

N_USERS, N_ITEMS, N_SEEN = 162_541, 59_047, 19_000_000

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


def ml25m_shaped(rng: np.random.Generator, factors: int) -> tuple[Recommender, pd.DataFrame]:
    """A random recommender of ML-25M's shape and its seen table (unique pairs)."""
    user_ids = np.arange(1, N_USERS + 1, dtype=np.int64)
    item_ids = np.sort(rng.choice(np.arange(1, 210_000), N_ITEMS, replace=False))
    dim = 2 * factors  # our recommender's embeddings are [v, x v] side by side
    model = Recommender(
        FMParams(factors=factors), user_ids, item_ids,
        rng.standard_normal((N_USERS, dim), dtype=np.float32) * 0.1,
        rng.standard_normal((N_ITEMS, dim), dtype=np.float32) * 0.1,
        rng.standard_normal(N_ITEMS, dtype=np.float32),
    )  # fmt: skip
    # Per-user activity: lognormal above ML's minimum of 20, scaled to 30% over N_SEEN as the
    # duplicates drawn are dropped, then N_SEEN pairs kept; item popularity: Zipf-like over a
    # random item order.
    activity = 20 + rng.lognormal(4.0, 1.3, N_USERS)
    counts = np.minimum(activity * (1.3 * N_SEEN / activity.sum()), N_ITEMS // 2).astype(int)
    popularity = 1 / np.arange(1, N_ITEMS + 1) ** 0.9
    items = rng.permutation(N_ITEMS)[
        rng.choice(N_ITEMS, counts.sum(), p=popularity / popularity.sum())
    ]
    pairs = np.unique(np.repeat(np.arange(N_USERS, dtype=np.int64), counts) * N_ITEMS + items)
    pairs = pairs[np.sort(rng.choice(len(pairs), min(N_SEEN, len(pairs)), replace=False))]
    seen = pd.DataFrame({USER_COL: user_ids[pairs // N_ITEMS], ITEM_COL: item_ids[pairs % N_ITEMS]})
    return model, seen


def build(folder: Path, factors: int) -> tuple[str, Path, int]:
    """Write and log the model: its models:/ URI, its local folder and the seen table's size."""
    import mlflow

    model, seen = ml25m_shaped(np.random.default_rng(25), factors)
    items = pd.DataFrame(
        {ITEM_COL: model.item_ids, "title": [f"Movie {i} (1999)" for i in model.item_ids],
         "genres": "Drama|Comedy"}
    )  # fmt: skip
    path = folder / "bundle"
    bundle.write_bundle(path, model, items, seen)
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    # Artifacts in the scratch folder too (a SQLite store would put them in ./mlruns).
    experiment = mlflow.create_experiment("scale", (folder / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = packaging.log_model(path, example_users=[1, 2])
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(folder / "m")))
    return info.model_uri, local, len(seen)


def group_rss_mb(pgid: int) -> dict[str, float]:
    """RSS (MB) of each process in a process group, by command name."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            status = (stat.parent / "status").read_text()
            rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
            cmd = (stat.parent / "cmdline").read_bytes().split(b"\0")
            name = " ".join(Path(c.decode()).name for c in cmd[:2])
            out[f"{stat.parent.name} {name}"] = int(rss.split()[1]) / 1024
        except (OSError, StopIteration, IndexError):
            continue  # exited meanwhile
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--loads", type=int, default=3, help="fresh-process loads, best taken")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    start = time.perf_counter()
    uri, local, n_seen = build(tmp, args.factors)
    size = sum(f.stat().st_size for f in local.rglob("*") if f.is_file()) / 2**20
    print(
        f"model: {N_USERS} users x {N_ITEMS} items x {2 * args.factors} dims, {n_seen} seen "
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

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    for label, threads in (("default BLAS threads", None), ("OPENBLAS_NUM_THREADS=1", "1")):
        startup, lat, rss = serve_and_measure(uri, tmp, threads, args.requests)
        print(
            f"mlflow models serve -w 1, {label}: startup {startup:.1f} s to /ping; one user per "
            f"request, one client: p50 {np.percentile(lat, 50):.1f} ms, "
            f"p99 {np.percentile(lat, 99):.1f} ms ({len(lat)} requests)"
        )
        for name, mb in rss.items():
            print(f"  RSS {mb:6.0f} MB  {name}")


def serve_and_measure(
    uri: str, tmp: Path, blas_threads: str | None, n: int
) -> tuple[float, np.ndarray, dict[str, float]]:
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
                for user in np.random.default_rng(0).integers(1, N_USERS + 1, n + 20):
                    t0 = time.perf_counter()
                    resp = session.post(
                        f"{url}/invocations",
                        json={"inputs": {USER_COL: [int(user)]}, "params": {"k": 10}},
                        timeout=30,
                    )
                    lat.append(time.perf_counter() - t0)
                    resp.raise_for_status()
            return up, np.array(lat[20:]) * 1000, group_rss_mb(proc.pid)  # 20 warm-ups
    finally:
        os.environ.clear()
        os.environ.update(saved)


if __name__ == "__main__":
    main()
