"""Load and abuse for a served model: many keep-alive clients, a share of malformed requests,
the server's memory watched.

``make_requests`` builds the bodies: one known or unknown user per good request and, in equal
shares, bytes that are not JSON, a user ID of the wrong type, a huge ``k``, unknown fields, and
(one in ten of the bad ones) 10,000 users in one request. ``run`` warms the server up, reads its
resident memory (every process of its group), sends the bodies from concurrent clients and reads
the memory again; a 5xx, a timeout or a dropped connection counts as a failure.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

BAD_KINDS = ("not_json", "wrong_type", "huge_k", "unknown_fields")
MANY_USERS = 10_000


def make_requests(
    n: int, n_users: int, bad_share: float, rng: np.random.Generator
) -> list[tuple[str, bytes]]:
    """``n`` (kind, body) pairs: one known or unknown user per good request; ``bad_share`` bad."""
    out = []
    for i in range(n):
        user = int(rng.integers(1, n_users + 1000))  # some users the model never saw
        if rng.random() >= bad_share:
            body: object = {"inputs": {"user_id": [user]}, "params": {"k": 10}}
            out.append(("good", json.dumps(body).encode()))
            continue
        kind = "many_users" if rng.random() < 0.1 else BAD_KINDS[i % len(BAD_KINDS)]
        if kind == "not_json":
            raw = b'{"inputs": {"user_id": [' + str(user).encode()
        elif kind == "wrong_type":
            raw = json.dumps({"dataframe_records": [{"user_id": f"user-{user}"}]}).encode()
        elif kind == "huge_k":
            raw = json.dumps({"inputs": {"user_id": [user]}, "params": {"k": 10**12}}).encode()
        elif kind == "unknown_fields":
            body = {"inputs": {"user_id": [user]}, "params": {"k": 10, "colour": "red"},
                    "extra": {"a": [1, 2]}}  # fmt: skip
            raw = json.dumps(body).encode()
        else:
            users = rng.integers(1, n_users + 1000, size=MANY_USERS).tolist()
            raw = json.dumps({"inputs": {"user_id": users}, "params": {"k": 10}}).encode()
        out.append((kind, raw))
    return out


@dataclass
class Outcome:
    kind: str
    status: int  # 0: no answer (timeout, dropped connection)
    seconds: float


def hammer(url: str, bodies: list[tuple[str, bytes]], clients: int) -> list[Outcome]:
    """POST every body to /invocations from ``clients`` threads, each with its own keep-alive
    session; a request that gets no answer within 60 s counts as status 0."""
    local = threading.local()

    def one(item: tuple[str, bytes]) -> Outcome:
        kind, body = item
        if not hasattr(local, "session"):
            local.session = requests.Session()
        start = time.perf_counter()
        try:
            resp = local.session.post(
                f"{url}/invocations", data=body,
                headers={"Content-Type": "application/json"}, timeout=60,
            )  # fmt: skip
            status = resp.status_code
        except requests.RequestException:
            status = 0
            local.session = requests.Session()
        return Outcome(kind, status, time.perf_counter() - start)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, bodies))


def group_rss(pgid: int) -> dict[str, int]:
    """Resident bytes of each process in process group ``pgid`` (a server and its workers), by
    "<pid> <command>"."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the command name (which may hold spaces): state ppid pgrp ...
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            status = (stat.parent / "status").read_text()
            rss = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
            cmd = (stat.parent / "cmdline").read_bytes().split(b"\0")
            name = " ".join(Path(c.decode()).name for c in cmd[:2])
            out[f"{stat.parent.name} {name}"] = int(rss.split()[1]) * 1024
        except (OSError, StopIteration, IndexError, ValueError):
            continue  # exited meanwhile
    return out


@dataclass
class Report:
    counts: Counter  # (kind, status class) -> requests
    p50_good_ms: float
    p99_good_ms: float
    p99_all_ms: float
    rss_warm: int
    rss_after: int
    seconds: float

    @property
    def failures(self) -> int:
        """5xx answers and requests with no answer."""
        return sum(n for (_, cls), n in self.counts.items() if cls in ("5xx", "none"))


def status_class(status: int) -> str:
    return "none" if status == 0 else f"{status // 100}xx"


def run(url: str, pgid: int, bodies: list[tuple[str, bytes]], clients: int, warmup: list) -> Report:
    """Warm up, read memory, send ``bodies``, read memory again."""
    hammer(url, warmup, clients)
    rss_warm = sum(group_rss(pgid).values())
    start = time.perf_counter()
    outcomes = hammer(url, bodies, clients)
    seconds = time.perf_counter() - start
    rss_after = sum(group_rss(pgid).values())
    counts = Counter((o.kind, status_class(o.status)) for o in outcomes)
    good = np.array([o.seconds for o in outcomes if o.kind == "good"]) * 1000
    every = np.array([o.seconds for o in outcomes]) * 1000
    return Report(
        counts, float(np.percentile(good, 50)), float(np.percentile(good, 99)),
        float(np.percentile(every, 99)), rss_warm, rss_after, seconds,
    )  # fmt: skip


def print_report(r: Report, n: int, clients: int) -> None:
    kinds = sorted({k for k, _ in r.counts})
    classes = ["2xx", "4xx", "5xx", "none"]
    print(f"\n{n:,} requests, {clients} clients, {r.seconds:.1f} s ({n / r.seconds:.0f} req/s)")
    print("| kind | " + " | ".join(classes) + " |\n|---|" + "---|" * len(classes))
    for kind in kinds:
        print(f"| {kind} | " + " | ".join(str(r.counts.get((kind, c), 0)) for c in classes) + " |")
    print(f"good requests: p50 {r.p50_good_ms:.1f} ms, p99 {r.p99_good_ms:.1f} ms; "
          f"all requests: p99 {r.p99_all_ms:.1f} ms")  # fmt: skip
    ratio = r.rss_after / r.rss_warm
    print(f"server memory: {r.rss_warm / 2**20:.0f} MiB after warm-up, "
          f"{r.rss_after / 2**20:.0f} MiB after the run ({ratio:.3f}x; target <= 1.10)")  # fmt: skip
    print(f"5xx or no answer: {r.failures} (target 0)")
