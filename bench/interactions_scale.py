"""An interactions file of 20M rows with string IDs: the download and preprocess steps' wall time
and peak memory, against the same rows with integer IDs, measured in the same run.

Writes (in a temporary folder, removed after) a CSV of 20M interactions by ~140k users
(``cust-<uuid>``) of ~50k items (``SKU-000042``), with long-tailed item popularity and user
activity, 1-5 star ratings and epoch-second times, in time order, repeated (user, item) pairs
included as a log has them; and the same rows with integer IDs. For each file it runs
``python -m steps.download --dataset interactions`` and then ``python -m steps.preprocess`` in
fresh processes, against a tracking store of its own, and prints each step's wall seconds and
peak RSS, the string / integer ratios, and preprocess's targets (<= 90 s, <= 8 GiB on 2 cores).
Usage::

    .venv/bin/python bench/interactions_scale.py                 # 20M rows
    .venv/bin/python bench/interactions_scale.py --rows 2000000  # a quick look
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
TARGET_SECONDS, TARGET_GIB = 90, 8
STEPS = ("download", "preprocess")


def write_files(folder: Path, rows: int, users: int, items: int, seed: int) -> None:
    """``strings.csv`` and ``integers.csv``: the same interactions with string / integer IDs."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.2, users)  # a few very active users, many occasional ones
    popularity = 1.0 / (np.arange(items) + 20.0) ** 1.1  # a long tail of rarely bought items
    u = rng.choice(users, size=rows, p=activity / activity.sum())
    i = rng.permutation(items)[rng.choice(items, size=rows, p=popularity / popularity.sum())]
    t = np.sort(rng.integers(1_672_531_200, 1_704_067_200, rows))  # 2023, in time order
    r = rng.integers(1, 6, rows).astype(np.int8)
    user_ids = pa.array([f"cust-{uuid.UUID(bytes=rng.bytes(16))}" for _ in range(users)])
    item_ids = pa.array([f"SKU-{k:06d}" for k in range(items)])
    names = ["user_id", "item_id", "rating", "timestamp"]
    for name, ids in (("strings", (user_ids, item_ids)), ("integers", None)):
        with pacsv.CSVWriter(folder / f"{name}.csv", _schema(ids is not None, names)) as out:
            for start in range(0, rows, 2_000_000):
                part = slice(start, start + 2_000_000)
                uu, ii = pa.array(u[part]), pa.array(i[part])
                if ids is not None:
                    uu, ii = ids[0].take(uu), ids[1].take(ii)
                out.write_table(
                    pa.table([uu, ii, pa.array(r[part]), pa.array(t[part])], names=names)
                )


def _schema(strings: bool, names: list[str]):
    import pyarrow as pa

    kind = pa.string() if strings else pa.int64()
    return pa.schema(list(zip(names, [kind, kind, pa.int8(), pa.int64()], strict=True)))


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and last output line of ``cmd`` in a fresh process: its
    ru_maxrss from wait4 (this process holds little, so the fork's copy does not count)."""
    log = cwd / "step.log"
    t0 = time.perf_counter()
    with log.open("wb") as out:
        pid = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).pid
        _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    last = [line for line in text.splitlines() if line and not line.startswith("20")]
    return wall, usage.ru_maxrss / 1024, last[-1] if last else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=140_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1492)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # the child that writes
    args = parser.parse_args()
    if args.write:
        return write_files(args.write, args.rows, args.users, args.items, args.seed)
    print(f"load before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="interactions-scale-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--write", tmp, "--rows", str(args.rows), "--users",
             str(args.users), "--items", str(args.items), "--seed", str(args.seed)],
            check=True,
        )  # fmt: skip
        sizes = {n: (folder / f"{n}.csv").stat().st_size / 2**20 for n in ("strings", "integers")}
        print(f"wrote {args.rows:,} rows in {time.perf_counter() - t0:.0f} s: strings.csv "
              f"{sizes['strings']:,.0f} MiB, integers.csv {sizes['integers']:,.0f} MiB")  # fmt: skip
        figures: dict[tuple[str, str], tuple[float, float]] = {}
        for name in ("strings", "integers"):
            store = folder / f"store-{name}"
            store.mkdir()
            env = os.environ | {
                "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
                "RECFLOW_DATA_DIR": str(store / "data"), "MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONPATH": str(PROJECT),
            }  # fmt: skip
            py = [sys.executable, "-m"]
            subprocess.run([*py, "recflow.tracking.store"], cwd=store, env=env, check=True)
            data_url = str(folder / f"{name}.csv")
            for step, extra in zip(STEPS, (["--dataset", "interactions", "--data_url", data_url], []),
                                   strict=True):  # fmt: skip
                wall, peak, last = run([*py, f"steps.{step}", *extra], store, env)
                figures[(name, step)] = (wall, peak)
                print(f"{name:<8} {step:<10} {wall:6.1f} s  {peak:7,.0f} MiB  {last[:110]}")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    for step in STEPS:
        (ws, ms), (wi, mi) = figures[("strings", step)], figures[("integers", step)]
        print(f"{step}: string IDs / integer IDs: time {ws / wi:.2f}x, peak memory {ms / mi:.2f}x")
    wall, peak = figures[("strings", "preprocess")]
    ok = wall <= TARGET_SECONDS and peak <= TARGET_GIB * 1024
    print(f"preprocess with string IDs: {wall:.1f} s (target <= {TARGET_SECONDS} s), "
          f"{peak / 1024:.2f} GiB (target <= {TARGET_GIB} GiB): {'met' if ok else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
