"""Latency and throughput of `/invocations` of a real `mlflow models serve` on loopback.

An ML-1M-scale model (6,040 users x 3,706 items, synthetic interactions) is trained, saved as
our pyfunc and served with `--env-manager local`. A bounded load generator (a fixed number of
requests, a time cap, a few client threads) sends one user per request, then 100 users per
request, and prints p50 / p99 latency and requests per second. Usage:

    .venv/bin/python bench/serve_latency.py --requests 1000 --concurrency 4
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synthetic_ml1m import ml1m_ratings  # noqa: E402
from recflow.data import preprocess  # noqa: E402
from recflow.model.recommender import FMParams, Recommender  # noqa: E402
from recflow.serving import pyfunc  # noqa: E402


def build_model(folder: Path) -> int:
    """Train and save the served model; return the number of users."""
    import mlflow.pyfunc
    import pandas as pd

    ratings = ml1m_ratings(np.random.default_rng(7))
    train = preprocess.split(ratings, "random", 0.2, 0.1, np.random.default_rng(1)).train
    model = Recommender.fit(train, FMParams(factors=40, epochs=3), seed=1)
    items = pd.DataFrame({"item_id": model.item_ids, "title": "t", "genres": "g"})
    bundle = folder / "bundle"
    bundle.write_bundle(bundle, model, items, train)
    from mlflow.models import infer_signature

    example = pd.DataFrame({"user_id": [1, 2]})
    loaded = pyfunc.RecommenderModel.from_bundle(bundle)
    params = {"k": 10, "filter_seen": True}
    mlflow.pyfunc.save_model(
        folder / "model", python_model=pyfunc.RecommenderModel(),
        artifacts={pyfunc.ARTIFACT_KEY: str(bundle)}, code_paths=[str(ROOT / "recflow")],
        signature=infer_signature(example, loaded.predict(None, example, params), params),
    )  # fmt: skip
    return len(model.user_ids)


def load(url: str, bodies: list[dict], concurrency: int, cap_s: float) -> tuple[np.ndarray, float]:
    """Send ``bodies`` with ``concurrency`` clients (stopping at ``cap_s``): latencies, wall."""
    deadline = time.perf_counter() + cap_s
    session = requests.Session()

    def one(body: dict) -> float:
        if time.perf_counter() > deadline:
            return np.nan
        start = time.perf_counter()
        resp = session.post(url, json=body, timeout=30)
        resp.raise_for_status()
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = np.array(list(pool.map(one, bodies)))
    return lat[~np.isnan(lat)], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cap-seconds", type=float, default=60)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    n_users = build_model(tmp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    cmd = [mlflow_bin, "models", "serve", "-m", str(tmp / "model"), "--env-manager", "local",
           "--host", "127.0.0.1", "-p", str(port)]  # fmt: skip
    log = open(tmp / "serve.log", "w")  # noqa: SIM115  (open for the server's lifetime)
    # The server starts uvicorn from PATH: put this venv's bin first.
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        for _ in range(240):
            if server.poll() is not None:
                raise SystemExit((tmp / "serve.log").read_text()[-3000:])
            try:
                requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).raise_for_status()
                break
            except requests.RequestException:
                time.sleep(0.5)
        rng = np.random.default_rng(0)
        users = rng.integers(1, n_users + 1, size=(args.requests, 100)).tolist()
        load(
            url, [{"inputs": {"user_id": u[:1]}} for u in users[:50]], args.concurrency, 30
        )  # warm-up
        for label, size, n in (
            ("1 user/request", 1, args.requests),
            ("100 users/request", 100, args.requests // 5),
        ):
            bodies = [{"inputs": {"user_id": u[:size]}, "params": {"k": 10}} for u in users[:n]]
            lat, wall = load(url, bodies, args.concurrency, args.cap_seconds)
            print(
                f"{label:>18}: {len(lat)} requests, p50 {np.percentile(lat, 50) * 1000:.1f} ms, "
                f"p99 {np.percentile(lat, 99) * 1000:.1f} ms, {len(lat) / wall:.0f} req/s "
                f"({args.concurrency} clients)"
            )
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
