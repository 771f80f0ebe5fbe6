"""What a change costs the default ``main``: two checkouts of the project, run in turn, one ratio.

For each round, runs the default ``main`` of the ``--before`` checkout (e.g. a ``git worktree``
of an older commit) and of this one on the same archive, each in a fresh tracking store and
data dir, as a user would::

    mlflow run <checkout> -e main --env-manager local -P dataset=<name> -P data_url=<zip>
        -P checksum=<sha256> [-P key=value ...]

and prints every step's wall time (its MLflow run's start to end) and the whole ``mlflow run``'s,
both sides and the ratio after / before. Rounds alternate the order, so a machine that slows or
speeds up during the bench charges both sides alike. Usage::

    git worktree add /tmp/before <commit>
    .venv/bin/python -m recflow.testing.archives --shape ml-1m --out /tmp/synth
    .venv/bin/python bench/main_cost.py --before /tmp/before --zip /tmp/synth/ml-1m.zip \
        --dataset ml-1m [--rounds 2] [--param n_jobs=2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from recflow.constants import STEPS
from recflow.testing.runs import PROJECT, archive_params, mlflow_run, run, runs_by_step, seconds
from recflow.testing.runs import store as new_store


def one_main(project: Path, zip_path: Path, dataset: str, extra: list[str]) -> dict[str, float]:
    """The default ``main`` of ``project`` in a fresh store, removed after: seconds per step and
    in all."""
    with tempfile.TemporaryDirectory(prefix=f"main-cost-{project.name}-") as folder:
        where = new_store(Path(folder))
        params = [*archive_params(zip_path, dataset), *extra]
        wall, _ = run(mlflow_run("main", params, project), where, "main.log")
        runs = runs_by_step(where.uri)
    return {**{s: seconds(runs[s]) for s in (*STEPS, "main") if s in runs}, "mlflow run": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--zip", type=Path, required=True, help="the dataset's archive")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra -P for both mains (repeatable)")  # fmt: skip
    args = parser.parse_args()
    sides = {"before": args.before.resolve(), "after": PROJECT}
    times: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for i in range(args.rounds):
        order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
        for side in order:
            times[side].append(one_main(sides[side], args.zip, args.dataset, args.param))
            print(f"round {i + 1} {side}: {times[side][-1]['mlflow run']:.0f} s", flush=True)
    print(f"\n{args.dataset} ({args.zip.name}), default main {' '.join(args.param)}, "
          f"{args.rounds} round(s); before = {sides['before']}")  # fmt: skip
    print("| step | before s | after s | after / before |")
    print("|---|---:|---:|---:|")
    for step in [*STEPS, "main", "mlflow run"]:
        b = np.mean([t.get(step, np.nan) for t in times["before"]])
        a = np.mean([t.get(step, np.nan) for t in times["after"]])
        print(f"| {step} | {b:.1f} | {a:.1f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
