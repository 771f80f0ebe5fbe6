"""What the pipeline costs per dataset: wall time and peak memory of every step of ``main``.

For each dataset (ml-100k: the real files of ../shared/data/ml-100k packed as the official zip;
ml-1m, ml-10m, ml-25m: recflow.testing.archives' synthetic zips) runs, with a fresh tracking store and data dir,

    mlflow run . -e main -P dataset=<name> -P data_url=<zip> -P checksum=sha256:<hex>
        -P n_trials=<n> [-P key=value ...] --env-manager local

sampling the process tree every 0.2 s (/proc: VmRSS of every process, children through
/proc/<pid>/task/*/children). A process counts towards the step whose ``steps.<name>`` command
line it or its nearest such ancestor has (training children of hpo count towards hpo); a step's
wall time is from its first to its last sample, and its peak RSS is the largest sum over its
processes in one sample. The MLflow runs' start/end times are printed beside it as a cross-check.
Then ``steps.recommend --users all`` with the registered champion is measured the same way.
Prints a Markdown table. Usage::

    .venv/bin/python bench/cost_table.py --datasets ml-100k --n_trials 2
    .venv/bin/python bench/cost_table.py --param n_jobs=2 --synthetic-dir /tmp/synth
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from recflow.data.datasets import get_spec
from recflow.testing.archives import dataset_zip
from recflow.testing.runs import PROJECT, archive_params, mlflow_run, runs_by_step, seconds, store
from recflow.tracking.cache import entry_point_defaults

STEPS = ("main", "download", "preprocess", "hpo", "train_best", "register", "recommend")
INTERVAL = 0.2
MIB = 1024


@dataclass
class Usage:
    """What the sampler saw of one step."""

    first: float = float("inf")
    last: float = 0.0
    peak_kib: int = 0
    pids: set[int] = field(default_factory=set)


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def _proc(pid: int) -> tuple[str, int]:
    """Command line and VmRSS (KiB) of ``pid``; ('', 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except (FileNotFoundError, ProcessLookupError):
        return "", 0
    return cmd, rss


def _step_of(cmd: str) -> str | None:
    return next((s for s in STEPS if f"steps.{s} " in cmd + " "), None)


class Sampler(threading.Thread):
    """Samples the process tree under ``root`` until stopped."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.usage = root, {s: Usage() for s in ("mlflow run", *STEPS)}
        self.stop = threading.Event()
        self.tree_peak_kib = 0  # the whole tree's largest sum in one sample

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(INTERVAL)

    def sample(self) -> None:
        now, totals = time.perf_counter(), {}
        stack = [(self.root, "mlflow run")]
        while stack:
            pid, owner = stack.pop()
            cmd, rss = _proc(pid)
            if not cmd:
                continue
            owner = _step_of(cmd) or owner
            totals[owner] = totals.get(owner, 0) + rss
            self.usage[owner].pids.add(pid)
            stack += [(c, owner) for c in _children(pid)]
        self.tree_peak_kib = max(self.tree_peak_kib, sum(totals.values()))
        for owner, rss in totals.items():
            u = self.usage[owner]
            u.first, u.last = min(u.first, now), now
            u.peak_kib = max(u.peak_kib, rss)


def measure(cmd: list[str], env: dict[str, str], cwd: Path = PROJECT) -> tuple[float, Sampler]:
    """Run ``cmd`` in ``cwd`` (output to our stderr); return its wall time and what the sampler
    saw."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=sys.stderr)
    sampler = Sampler(proc.pid)
    sampler.start()
    code = proc.wait()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {code}")
    return wall, sampler


def mlflow_durations(uri: str) -> dict[str, float]:
    """Seconds per step from the runs' start and end times (the last run of each step)."""
    return {s: seconds(r) for s, r in runs_by_step(uri).items() if s in STEPS and r.info.end_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml-100k,ml-1m,ml-10m,ml-25m")
    parser.add_argument("--n_trials", type=int, default=10)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra -P for main (repeatable), e.g. n_jobs=2")  # fmt: skip
    parser.add_argument("--synthetic-dir", type=Path, help="where zips are kept (default: tmp)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic datasets")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cost-table-") as tmp:
        zips = args.synthetic_dir or Path(tmp) / "zips"
        zips.mkdir(parents=True, exist_ok=True)
        for name in args.datasets.split(","):
            path = dataset_zip(name, zips, args.seed)
            where = store(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp)))
            uri, env = where.uri, where.env
            params = [*archive_params(path, name), f"n_trials={args.n_trials}", *args.param]
            cmd = mlflow_run("main", params)
            print(f"{name}: {' '.join(cmd)}", file=sys.stderr)
            # Run from the scratch folder: a new SQLite store puts its artifacts in ./mlruns.
            wall, sampler = measure(cmd, env, cwd=where.folder)
            usage = sampler.usage
            logged = mlflow_durations(uri)
            out = where.folder / "recs.parquet"
            rec_wall, rec = measure(
                [sys.executable, "-m", "steps.recommend", "--users", "all",
                 "--model_uri", entry_point_defaults()["recommend"]["model_uri"],
                 "--output", str(out)], env,
            )  # fmt: skip
            import pyarrow.parquet as pq

            n_recs = pq.ParquetFile(out).metadata.num_rows
            ratings = _ratings(path, name)
            for step in ("download", "preprocess", "hpo", "train_best", "register"):
                u = usage[step]
                seen = u.last - u.first if u.pids else float("nan")
                rows.append((name, ratings, step, seen, logged.get(step), u.peak_kib / MIB))
            rows.append((name, ratings, "main (total)", wall, logged.get("main"),
                         sampler.tree_peak_kib / MIB))  # fmt: skip
            r = rec.usage["recommend"]
            rows.append((name, ratings, f"recommend all ({n_recs:,} rows)", rec_wall,
                         mlflow_durations(uri).get("recommend"), r.peak_kib / MIB))  # fmt: skip
            # Each dataset's rows as soon as they are measured: a later dataset may take hours.
            for row in rows[-7:]:
                print(*row, sep=" | ", flush=True)
    print(f"\nn_trials={args.n_trials} {' '.join(args.param)}")
    print("| dataset | ratings | step | wall s | MLflow run s | peak RSS MiB |")
    print("|---|---:|---|---:|---:|---:|")
    for name, ratings, step, wall, logged, rss in rows:
        run_s = f"{logged:.1f}" if logged is not None else "-"
        print(f"| {name} | {ratings:,} | {step} | {wall:.1f} | {run_s} | {rss:,.0f} |")
    print(
        "\nwall s: first to last 0.2 s sample of the step's processes (main (total): the whole "
        "`mlflow run`); peak RSS: largest sum over the step's process tree in one sample "
        "(main (total): the whole tree's, `mlflow run` and steps.main included)."
    )


def _ratings(path: Path, name: str) -> int:
    """Lines of the ratings file in the zip (less the header for csv layouts)."""
    import zipfile

    spec = get_spec(name)
    with zipfile.ZipFile(path) as zf, zf.open(f"{spec.folder}/{spec.ratings}") as f:
        n = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))
    return n - (spec.fmt == "csv")


if __name__ == "__main__":
    main()
