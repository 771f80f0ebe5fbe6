"""Batch scoring at ML-25M scale: the streaming ``recommend`` step's wall time and peak memory.

Builds an ML-25M-shaped served model directly (``recflow.testing.models.random_model``: random
float32 embeddings, 64 columns, for 162,541 users and 59,047 items, a long-tailed seen table of
~19M rows) and logs it into a temporary tracking store, then runs ``python -m steps.recommend
--users <first N users | all>`` in a fresh process at each user count, to show that peak memory
does not grow with the users (each batch is streamed to disk). Prints wall time, rows and peak
RSS of each run, and the ratios between the smallest and the largest count. Usage::

    .venv/bin/python bench/recommend_scale.py                   # 40,000 and all 162,541 users
    .venv/bin/python bench/recommend_scale.py --users 20000,all
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

from recflow.constants import USER_COL
from recflow.testing.models import log_served, random_model

PROJECT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and last output line of ``cmd`` in a fresh process.

    Peak RSS is the child's VmHWM, read every 50 ms while it runs (a high-water mark, so only
    growth in its last 50 ms could be missed). Its ru_maxrss would not do: it starts from this
    process's RSS at fork, and this process holds the ~1.5 GB it built the model with.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=PROJECT, env=env, stdout=subprocess.PIPE, text=True)
    proc_dir, argv, peak = Path(f"/proc/{proc.pid}"), [c.encode() for c in cmd], 0.0
    while proc.poll() is None:
        try:
            if (proc_dir / "cmdline").read_bytes().split(b"\0")[:-1] == argv:  # exec'd
                hwm = (proc_dir / "status").read_text().split("VmHWM:")[1].split()[0]
                peak = max(peak, int(hwm) / 1024)
        except (OSError, IndexError):
            pass  # exiting
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().strip().splitlines()
    proc.stdout.close()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed")
    return wall, peak, out[-1] if out else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="40000,all", help="user counts, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recommend-scale-") as tmp:
        folder = Path(tmp)
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{folder}/mlflow.db")
        os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
        model, seen = random_model(np.random.default_rng(args.seed))
        uri = log_served(model, seen, folder)
        print(f"model: {len(model.user_ids):,} users x {len(model.item_ids):,} items x "
              f"{model.item_emb.shape[1]} dims, {len(seen):,} seen rows")  # fmt: skip
        counts = args.users.split(",")
        rows = []
        for count in counts:
            users = "all"
            if count != "all":
                users = str(folder / f"users-{count}.csv")
                pd.DataFrame({USER_COL: np.arange(1, int(count) + 1)}).to_csv(users, index=False)
            out = str(folder / "recs.parquet")
            cmd = [sys.executable, "-m", "steps.recommend", "--model_uri", uri, "--users", users]
            wall, rss, line = run([*cmd, "--output", out], env)
            n = len(pd.read_parquet(out, columns=[USER_COL]))
            rows.append(("streaming", count, wall, n, rss))
            print(f"users={count}: {wall:.1f} s, {n:,} rows, peak RSS {rss:,.0f} MiB ({line})")
    print("\n| path | users | wall s | rows | peak RSS MiB |\n|---|---|---|---|---|")
    for path, count, wall, n, rss in rows:
        print(f"| {path} | {count} | {wall:.1f} | {n:,} | {rss:,.0f} |")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"\npeak RSS {b[1]} / {a[1]} users = {b[4] / a[4]:.2f}x for {b[3] / a[3]:.1f}x rows")


if __name__ == "__main__":
    main()
