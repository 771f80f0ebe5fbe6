"""hpo on real ML-100K run by two versions of recflow/hpo/workers.py: wall time and its ratio,
the share of the time the trial threads were busy, and whether repeated runs gave one study.

Each version is a git revision (its ``recflow/hpo/workers.py``), a file, or ``.`` (the working
tree). One preprocess run; every hpo run gets the same seed, ``n_trials`` and ``n_jobs``, in a
study of its own; the versions alternate (A B B A, then again) so drift on a shared machine
falls on both. Usage:

    .venv/bin/python bench/hpo_workers.py --workers old=261b15d new=. --rounds 2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import tempfile
import time
from pathlib import Path
from types import ModuleType

import optuna
from hpo_speed import download_ml100k, invoke, last_run_id  # bench/, beside this file

import recflow.hpo.tune as tune
from recflow.hpo.storage import open_storage
from steps import hpo, preprocess

ROOT = Path(__file__).resolve().parent.parent


def load_worker(name: str, spec: str, folder: Path) -> ModuleType:
    """The workers module of a git revision, a file, or (``.``) the working tree."""
    if spec == ".":
        return importlib.import_module("recflow.hpo.workers")
    path = Path(spec)
    if not path.is_file():
        path = folder / f"workers_{name}.py"
        source = f"{spec}:recflow/hpo/workers.py"
        path.write_text(subprocess.run(["git", "show", source], cwd=ROOT, check=True,
                                       capture_output=True, text=True).stdout)  # fmt: skip
    module_spec = importlib.util.spec_from_file_location(f"workers_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def busy_share(study: optuna.Study, n_jobs: int) -> float:
    """Trial time over n_jobs times the span from the first trial's start to the last's end."""
    trials = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    work = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    return work / (n_jobs * span.total_seconds())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", nargs=2, required=True, metavar="NAME=REV|FILE|.")
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="A B B A blocks")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    versions = dict(spec.split("=", 1) for spec in args.workers)
    modules = {name: load_worker(name, spec, folder) for name, spec in versions.items()}
    first, second = versions
    raw = download_ml100k("bench-workers-")
    invoke(preprocess.main, ["--raw_run_id", raw])
    prep = last_run_id("preprocess")
    journal = str(Path(os.environ["RECFLOW_DATA_DIR"]) / "bench.journal")
    wall = {name: 0.0 for name in versions}
    busy: dict[str, list[float]] = {name: [] for name in versions}
    outcomes: dict[str, list[list]] = {name: [] for name in versions}
    for i, name in enumerate([first, second, second, first] * args.rounds):
        tune.run_worker = modules[name].run_worker
        study_name = f"{name}-{i}"
        start = time.perf_counter()
        invoke(hpo.main, [
            "--preprocess_run_id", prep, "--n_trials", str(args.n_trials),
            "--n_jobs", str(args.n_jobs), "--study_name", study_name, "--storage", journal,
        ])  # fmt: skip
        seconds = time.perf_counter() - start
        study = optuna.load_study(study_name=study_name, storage=open_storage(journal, folder))
        states = [t.state.name for t in study.trials]
        wall[name] += seconds
        busy[name].append(busy_share(study, args.n_jobs))
        outcomes[name].append([(t.number, t.params, t.state, t.value) for t in study.trials])
        print(
            f"{study_name}: {seconds:6.1f} s, {len(states)} trials ({states.count('PRUNED')} "
            f"pruned), best {study.best_value:.4f}, threads busy {busy[name][-1]:.2f}",
            flush=True,
        )
    for name in versions:
        same = all(o == outcomes[name][0] for o in outcomes[name])
        print(
            f"{name} ({versions[name]}): {wall[name]:.1f} s in all, threads busy "
            f"{min(busy[name]):.2f}-{max(busy[name]):.2f}, repeats identical: {same}"
        )
    print(f"wall {second}/{first}: {wall[second] / wall[first]:.3f}")


if __name__ == "__main__":
    main()
