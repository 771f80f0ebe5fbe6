"""Batch scoring at ML-25M scale: the streaming ``recommend`` step vs concatenating every batch.

Builds an ML-25M-shaped served model directly (random float32 embeddings, 64 columns, for
162,541 users and 59,047 items, a long-tailed seen table of ~19M rows) with
``recflow.serving.pyfunc.write_bundle`` and ``log_model`` into a temporary tracking store, then runs,
each in a fresh process:

- new: ``python -m steps.recommend --users <first N users | all>`` (streams each batch to disk),
  at two user counts, to show peak memory does not grow with the users;
- old: the same model, users and batches, but every batch concatenated in memory and written
  once at the end (what ``recommend`` did before), at the largest count.

Prints wall time, rows and peak RSS of each process, and the old / new ratios. Usage::

    .venv/bin/python bench/recommend_scale.py                   # 40,000 and all 162,541 users
    .venv/bin/python bench/recommend_scale.py --users 20000,all --no-old
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

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recflow.constants import GENRES_COL, ITEM_COL, TITLE_COL, USER_COL  # noqa: E402
from recflow.model.recommender import FMParams, Recommender  # noqa: E402

# DIM: 32 factors, stored as [v, x v] side by side, as bench/serve_scale.py.
N_USERS, N_ITEMS, N_SEEN, DIM = 162_541, 59_047, 19_000_000, 64

# The pre-streaming path: same loading, user list and batches, all rows held until the end.
OLD = """
import sys, pandas as pd, mlflow.pyfunc
from pathlib import Path
from recflow.serving import batch
model = mlflow.pyfunc.load_model(sys.argv[1])
ids = batch.users_frame(sys.argv[2], model)
recs = pd.concat(list(batch.recommend(model, ids, 10)), ignore_index=True)
out = Path(sys.argv[3]); staged = out.with_name(f".{out.name}.part")
recs.to_parquet(staged, index=False); staged.replace(out)
print(f"wrote {len(recs)} recommendations")
"""


def build_model(rng: np.random.Generator, folder: Path) -> str:
    """Write and log an ML-25M-shaped served model; return its model URI."""
    import mlflow

    from recflow.serving.bundle import write_bundle
    from recflow.serving.packaging import log_model

    user_ids = np.arange(1, N_USERS + 1)
    item_ids = np.sort(rng.choice(np.arange(1, 209_172), N_ITEMS, replace=False))
    model = Recommender(
        FMParams(factors=DIM // 2), user_ids, item_ids,
        rng.standard_normal((N_USERS, DIM), dtype=np.float32) * 0.3,
        rng.standard_normal((N_ITEMS, DIM), dtype=np.float32) * 0.3,
        rng.standard_normal(N_ITEMS, dtype=np.float32),
    )  # fmt: skip
    items = pd.DataFrame(
        {
            ITEM_COL: item_ids,
            TITLE_COL: [f"Movie {i} (2000)" for i in item_ids],
            GENRES_COL: "Drama|Comedy",
        }
    )
    # Long-tailed: lognormal activity per user, Zipf-like item popularity.
    sizes = np.maximum(1, rng.lognormal(0, 1.1, N_USERS))
    sizes = np.maximum(1, (sizes / sizes.sum() * N_SEEN).astype(np.int64))
    pop = 1.0 / (np.arange(1, N_ITEMS + 1) + 50.0) ** 1.1
    seen = pd.DataFrame(
        {
            USER_COL: np.repeat(user_ids, sizes),
            ITEM_COL: item_ids[rng.choice(N_ITEMS, int(sizes.sum()), p=pop / pop.sum())],
        }
    ).drop_duplicates()
    write_bundle(folder / "bundle", model, items, seen)
    with mlflow.start_run():
        info = log_model(folder / "bundle", example_users=[1, 2])
    print(f"model: {N_USERS:,} users x {N_ITEMS:,} items x {DIM} dims, {len(seen):,} seen rows")
    return info.model_uri


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and last output line of ``cmd`` in a fresh process.

    Peak RSS is the child's VmHWM, read every 50 ms while it runs (a high-water mark, so only
    growth in its last 50 ms could be missed). Its ru_maxrss would not do: it starts from this
    process's RSS at fork, and this process holds the ~1.5 GB it built the model with.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
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
    parser.add_argument("--no-old", action="store_true", help="skip the concatenating path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recommend-scale-") as tmp:
        folder = Path(tmp)
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{folder}/mlflow.db")
        os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
        uri = build_model(np.random.default_rng(args.seed), folder)
        counts = args.users.split(",")
        rows = []
        for count in counts:
            users = "all"
            if count != "all":
                users = str(folder / f"users-{count}.csv")
                pd.DataFrame({USER_COL: np.arange(1, int(count) + 1)}).to_csv(users, index=False)
            out = str(folder / "recs.parquet")
            new = [sys.executable, "-m", "steps.recommend", "--model_uri", uri, "--users", users]
            wall, rss, line = run([*new, "--output", out], env)
            n = len(pd.read_parquet(out, columns=[USER_COL]))
            rows.append(("new (streaming)", count, wall, n, rss))
            print(f"new  users={count}: {wall:.1f} s, {n:,} rows, peak RSS {rss:,.0f} MiB ({line})")
            if not args.no_old and count == counts[-1]:
                wall, rss, line = run([sys.executable, "-c", OLD, uri, users, out], env)
                n = len(pd.read_parquet(out, columns=[USER_COL]))
                rows.append(("old (concatenating)", count, wall, n, rss))
                print(f"old  users={count}: {wall:.1f} s, {n:,} rows, peak RSS {rss:,.0f} MiB")
    print("\n| path | users | wall s | rows | peak RSS MiB |\n|---|---|---|---|---|")
    for path, count, wall, n, rss in rows:
        print(f"| {path} | {count} | {wall:.1f} | {n:,} | {rss:,.0f} |")
    new_rows = [r for r in rows if r[0].startswith("new")]
    if len(new_rows) >= 2:
        a, b = new_rows[0], new_rows[-1]
        print(
            f"\nnew: peak RSS {b[1]} / {a[1]} users = {b[4] / a[4]:.2f}x for {b[3] / a[3]:.1f}x rows"
        )
    old = [r for r in rows if r[0].startswith("old")]
    if old:
        print(
            f"old / new at {old[0][1]} users: wall {old[0][2] / new_rows[-1][2]:.2f}x, "
            f"peak RSS {old[0][4] / new_rows[-1][4]:.2f}x"
        )


if __name__ == "__main__":
    main()
