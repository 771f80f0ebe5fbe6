"""Latency of history requests through a real `mlflow models serve`, beside known users'.

An ML-1M-scale model (synthetic ML-1M-shaped ratings, rankfm's published configuration) is
saved as our pyfunc and served with `--env-manager local`, one worker. One client sends, one
request at a time (latency, not throughput):

    known user          {"inputs": {"user_id": [u]}}
    20-item history     {"dataframe_records": [{"user_id": <new>, "history": [20 items]}]}
    similar items       {"inputs": {"item_id": [i]}}

and the script prints p50 / p99 of each (targets for the history: p50 <= 30 ms, p99 <= 100 ms).
Usage::

    .venv/bin/python bench/foldin_latency.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from recflow.constants import ITEM_COL, USER_COL
from recflow.model.recommender import FMParams
from recflow.testing.models import ml1m_model
from recflow.testing.servers import served, stock_cmd
from recflow.testing.services import free_port

HISTORY = 20


def latencies(url: str, bodies: list[dict]) -> np.ndarray:
    session = requests.Session()
    out = []
    for body in bodies:
        start = time.perf_counter()
        resp = session.post(f"{url}/invocations", json=body, timeout=30)
        out.append(time.perf_counter() - start)
        resp.raise_for_status()
    return np.array(out) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-foldin-") as scratch:
        measure(args, Path(scratch))


def measure(args: argparse.Namespace, folder: Path) -> None:
    """Train and serve the model in ``folder``; print each request kind's latencies."""
    model, train = ml1m_model(folder, FMParams())
    rng = np.random.default_rng(0)
    users = rng.choice(model.user_ids, size=args.requests).tolist()
    # Histories of real users' items, asked for as new users (IDs the model never saw).
    by_user = train.groupby(USER_COL)[ITEM_COL].apply(np.asarray)
    by_user = by_user[by_user.map(len) >= HISTORY]
    picks = rng.choice(len(by_user), size=args.requests)
    histories = [rng.choice(by_user.iloc[p], HISTORY, replace=False).tolist() for p in picks]
    new = int(model.user_ids.max()) + 1
    items = rng.choice(model.item_ids, size=args.requests).tolist()
    kinds = {
        "known user": [{"inputs": {USER_COL: [u]}, "params": {"k": 10}} for u in users],
        f"new user, {HISTORY}-item history": [
            {"dataframe_records": [{USER_COL: new + i, "history": h}], "params": {"k": 10}}
            for i, h in enumerate(histories)
        ],
        "similar items": [{"inputs": {ITEM_COL: [i]}, "params": {"k": 10}} for i in items],
    }
    port = free_port()
    with served(stock_cmd(folder / "model", port, 1), port, folder / "serve.log") as (url, _, _):
        for bodies in kinds.values():
            latencies(url, bodies[:50])  # warm-up
        print(f"ML-1M scale ({len(model.user_ids)} users x {len(model.item_ids)} items), "
              f"`mlflow models serve`, 1 worker, 1 client, {args.requests} requests each:\n")  # fmt: skip
        print("| request | p50 ms | p99 ms |\n|---|---|---|")
        for kind, bodies in kinds.items():
            ms = latencies(url, bodies)
            print(f"| {kind} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} |")


if __name__ == "__main__":
    main()
