"""EASE's memory and time: the closed form as written in the paper against ``ease_weights``.

For each catalogue size, two child processes fit EASE on the same synthetic interactions (cost
only: long-tailed item popularity, ~``--per-user`` items a user) at one λ and print their peak
resident memory above what they held before the fit, and the fit's seconds:

- **textbook**: ``XᵀX`` as one sparse product made dense, a float64 copy, ``np.linalg.inv``,
  ``B = P / -diag(P)`` (what ``recflow.model.ease`` did before);
- **ours**: ``baselines.gram`` (a block of columns at a time) straight to float64, inverted in
  its own memory (``ease_weights(..., overwrite=True)``: Cholesky, LAPACK potrf/potri).

Both give the same weights (the sums of their absolute values agree to 1e-5). Usage::

    .venv/bin/python bench/ease_memory.py [--items 3706 9742 10677] [--users 20000]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp

from recflow.evaluation.baselines import EASE_BUDGET, ease_bytes, gram
from recflow.model.ease import ease_weights, interactions

LAMBDA = 200.0


def synthetic(n_users: int, n_items: int, per_user: int, seed: int = 0) -> sp.csr_array:
    """Users with ~``per_user`` items each, item popularity Zipf-like (cost only)."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    counts = rng.poisson(per_user, n_users).clip(5, n_items)
    items = np.concatenate([
        rng.choice(n_items, c, replace=False, p=popularity / popularity.sum()) for c in counts
    ])  # fmt: skip
    users = np.repeat(np.arange(n_users), counts)
    return interactions(users, items, n_users, n_items)


def textbook(x: sp.csr_array) -> np.ndarray:
    g = (x.T @ x).toarray().astype(np.float64)
    g[np.diag_indices_from(g)] += LAMBDA
    p = np.linalg.inv(g)
    b = p / -np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def ours(x: sp.csr_array) -> np.ndarray:
    return ease_weights(gram(x, np.float64), LAMBDA, overwrite=True)


def child(how: str, n_users: int, n_items: int, per_user: int) -> None:
    x = synthetic(n_users, n_items, per_user)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    weights = {"textbook": textbook, "ours": ours}[how](x)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(peak * 1024, seconds, float(np.abs(weights, dtype=np.float64).sum()))


def measure(how: str, args: argparse.Namespace, n_items: int) -> tuple[int, float, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", how, "--users", str(args.users),
         "--per-user", str(args.per_user), "--items", str(n_items)],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    peak, seconds, total = out.stdout.split()[-3:]
    return int(peak), float(seconds), float(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[3706, 9742, 10677])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--per-user", type=int, default=60)
    parser.add_argument("--child", choices=["textbook", "ours"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.users, args.items[0], args.per_user)
        return
    print(f"{args.users} synthetic users, ~{args.per_user} items each, λ {LAMBDA}; peak memory "
          f"above the interactions, and seconds (the budget: {EASE_BUDGET / 2**30:.0f} GiB)\n")  # fmt: skip
    print(
        "| items | textbook GiB | ours GiB | ratio | textbook s | ours s | ratio | budgeted GiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n_items in args.items:
        (tp, ts, tw), (op, os_, ow) = (measure(h, args, n_items) for h in ("textbook", "ours"))
        assert abs(tw - ow) <= 1e-5 * tw, f"the weights differ: {tw} against {ow}"
        print(f"| {n_items:,} | {tp / 2**30:.2f} | {op / 2**30:.2f} | {op / tp:.2f} | {ts:.1f} | "
              f"{os_:.1f} | {os_ / ts:.2f} | {ease_bytes(n_items) / 2**30:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
