"""Throughput of two serving workers vs one: stock `mlflow models serve -w 2` vs recflow.serving.server.

An ML-1M-scale model (``recflow.testing.models.ml1m_model``, 40 factors, 3 epochs) is served three
ways, one after another, on loopback: stock `mlflow models serve -w 1`, stock `-w 2`, and
`python -m recflow.serving.server -w 2` (the socket bound with IPPROTO_TCP so accepted connections
get TCP_NODELAY; see that module). Each gets a short warm-up, then wrk with 2 threads and 4 keep-alive connections POSTs one random user
per request to /invocations. Prints req/s, p50 and p99 of each, and the ratios fixed-2 / stock-1
and fixed-2 / stock-2. Non-2xx answers or socket errors fail the run.

Needs wrk (not installed by this script): `apt-get install -y wrk`. Usage:

    .venv/bin/python bench/serve_workers.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from recflow.model.recommender import FMParams
from recflow.testing.models import ml1m_model
from recflow.testing.servers import fixed_cmd, served, stock_cmd
from recflow.testing.services import free_port

# One random known user per request; `done` prints the figures in microseconds, one line.
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(7)
request = function()
  local body = string.format('{"inputs": {"user_id": [%%d]}, "params": {"k": 10}}',
                             math.random(1, %d))
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""
RESULT = re.compile(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+)$", re.M)


def wrk(url: str, script: Path, seconds: int) -> tuple[float, float, float]:
    """wrk -t2 -c4 against /invocations: (req/s, p50 ms, p99 ms)."""
    cmd = ["wrk", "-t2", "-c4", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
           f"{url}/invocations"]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    found = RESULT.search(out)
    if not found:
        raise SystemExit(f"no result from wrk:\n{out}")
    n, micros, p50, p99, errors = map(int, found.groups())
    if errors:
        raise SystemExit(f"{errors} failed requests of {n}:\n{out}")
    return n / (micros / 1e6), p50 / 1000, p99 / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per server")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured seconds first")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as scratch:
        measure(args, Path(scratch))


def measure(args: argparse.Namespace, tmp: Path) -> None:
    """Train the model in ``tmp`` and drive each server with wrk; print the rates."""
    model, _ = ml1m_model(tmp, FMParams(factors=40, epochs=3))
    n_users = len(model.user_ids)
    script = tmp / "one_user.lua"
    script.write_text(LUA % n_users)
    results = {}
    for label, make, workers in (
        ("stock -w 1", stock_cmd, 1),
        ("stock -w 2", stock_cmd, 2),
        ("recflow.serving.server -w 2", fixed_cmd, 2),
    ):
        port = free_port()
        log = tmp / f"{label.replace(' ', '_')}.log"
        with served(make(tmp / "model", port, workers), port, log) as (url, _, _):
            wrk(url, script, args.warmup)
            results[label] = wrk(url, script, args.seconds)
        rps, p50, p99 = results[label]
        print(f"{label:>20}: {rps:6.0f} req/s, p50 {p50:6.1f} ms, p99 {p99:6.1f} ms")
    fixed = results["recflow.serving.server -w 2"][0]
    print(
        f"fixed 2 workers / stock 1 worker: {fixed / results['stock -w 1'][0]:.2f}x; "
        f"fixed 2 / stock 2: {fixed / results['stock -w 2'][0]:.2f}x "
        "(wrk -t2 -c4, keep-alive, 1 user per request)"
    )


if __name__ == "__main__":
    main()
