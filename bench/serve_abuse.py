"""Serving under load and abuse: many clients, a share of malformed requests, memory watched.

A real `mlflow models serve` (this environment, one worker) of an ML-1M-scale model
(``recflow.testing.models.ml1m_model``, 40 factors, 3 epochs) gets ``--requests`` POSTs from
``--clients`` concurrent keep-alive clients; ``--bad`` of them are malformed
(``recflow.testing.load.make_requests``: not JSON, a user ID of the wrong type, a huge ``k``,
unknown fields, 10,000 users in one request). Every answer must be a 200 or a 4xx: a 5xx, a
timeout or a dropped connection is counted as a failure. The server's resident memory (all its
processes) is read after a warm-up and after the run. Prints the counts, p50 / p99 latency of the good requests and of all, and memory after /
after warm-up (target: within 10 %). Usage::

    .venv/bin/python bench/serve_abuse.py [--requests 20000] [--clients 8] [--bad 0.1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from recflow.model.recommender import FMParams
from recflow.testing.load import make_requests, print_report, run
from recflow.testing.models import ml1m_model
from recflow.testing.servers import served, stock_cmd
from recflow.testing.services import free_port

MODEL = FMParams(factors=40, epochs=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--bad", type=float, default=0.1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-abuse-") as scratch:
        measure(args, Path(scratch))


def measure(args: argparse.Namespace, folder: Path) -> None:
    """Train and serve the model in ``folder``; report, and fail on a failure or growth."""
    model, _ = ml1m_model(folder, MODEL)
    n_users = len(model.user_ids)
    rng = np.random.default_rng(11)
    bodies = make_requests(args.requests, n_users, args.bad, rng)
    warmup = make_requests(1000, n_users, args.bad, rng)
    port = free_port()
    with served(stock_cmd(folder / "model", port, 1), port, folder / "serve.log") as (url, _, p):
        report = run(url, p.pid, bodies, args.clients, warmup)
    print_report(report, args.requests, args.clients)
    if report.failures or report.rss_after > 1.10 * report.rss_warm:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
