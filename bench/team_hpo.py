"""Wall time of one vs two `hpo` workers on the same study in PostgreSQL, as a ratio.

Setup (not timed): a throwaway PostgreSQL cluster and an `mlflow server` with a database backend
and proxied artifacts (recflow/testing/services.py), tracking through the server as a team would; then
`mlflow run -e download` on a zip built from ../shared/data/ml-100k and `mlflow run -e preprocess`.
Timed: `mlflow run <project> -e hpo --env-manager local -P storage=<postgresql URL> -P
n_trials=20 -P pruner=none` (no pruning, so every trial trains all its epochs) as one process on
study `one`, then as two processes started at once on study `two`, waiting for both. Each study
gets its own fresh database, whose schema is created during setup so that neither configuration
times the table creation. After each configuration the study must have exactly n_trials COMPLETE
trials (read back with optuna); the script fails with a message otherwise.

Prints both wall times and their ratio. TPE picks other configurations in each study, and a
trial's cost depends on its factors, epochs, loss and side features, so the two studies can train
quite different amounts: the script also prints the seconds spent in trials per wall second of
each configuration, and `--space equal-cost` searches only parameters that barely change a
trial's cost. Usage:

    .venv/bin/python bench/team_hpo.py [--n-trials 20] [--space packaged|equal-cost] [--keep]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections import Counter

import optuna

from recflow.hpo.attrs import WORKER
from recflow.testing.archives import real_ml100k_zip
from recflow.testing.runs import Store, archive_params, mlflow_run, run, run_id, scratch
from recflow.testing.runs import store as make_store
from recflow.testing.services import PASSWORD, stop_group, team_services

# --space equal-cost: only parameters that barely change a trial's cost are searched (BPR samples
# one negative per positive; factors, epochs and features keep their defaults), so both studies
# train about the same amount whichever configurations TPE picks.
EQUAL_COST_SPACE = """\
loss: {type: categorical, choices: [bpr]}
alpha: {type: float, low: 1.0e-4, high: 0.1, log: true}
sigma: {type: float, low: 0.01, high: 0.5, log: true}
learning_rate: {type: float, low: 0.005, high: 0.15, log: true}
"""


def start(cmd: list[str], where: Store, log: str) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so it can be stopped with its trials)."""
    with (where.folder / log).open("w") as out:
        return subprocess.Popen(
            cmd, env=where.env, cwd=where.folder, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def check(proc: subprocess.Popen, cmd: list[str], where: Store, log: str) -> str:
    """Wait for ``proc``; return its log. Exits with the log's tail when it failed."""
    code = proc.wait()
    text = (where.folder / log).read_text()
    if code:
        tail = "\n".join(text.splitlines()[-30:])
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {code}):\n{tail}")
    return text


def step(entry: str, params: list[str], where: Store) -> str:
    """Run one setup step to the end; return the ID of its run."""
    run(mlflow_run(entry, params), where, f"{entry}.log")
    return run_id(where, f"{entry}.log")


def verify(url: str, name: str, n_trials: int) -> tuple[str, float]:
    """Fail unless study ``name`` has exactly ``n_trials`` COMPLETE trials; return a description
    and the seconds its trials took, summed."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    states = Counter(t.state.name for t in trials)
    if len(complete) != n_trials:
        raise SystemExit(
            f"FAIL: study {name!r} has {len(complete)} complete trials, not {n_trials} "
            f"(states {dict(states)})"
        )
    by_worker = Counter(str(t.user_attrs.get(WORKER, "?")).rpartition(":")[2] for t in complete)
    busy = sum(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_complete and t.datetime_start
    )
    distinct = len({tuple(sorted(t.params.items())) for t in complete})
    described = (
        f"{dict(states)}; complete by worker pid {dict(by_worker)}; "
        f"{distinct} distinct configurations; {busy:.0f} s summed over its trials"
    )
    return described, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=20, help="trials per study (default 20)")
    parser.add_argument(
        "--space", choices=("packaged", "equal-cost"), default="packaged",
        help="search space: the packaged one (default; the studies may train very different "
        "amounts) or one whose trials all cost about the same",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, artifacts)")
    args = parser.parse_args()
    workers: list[subprocess.Popen] = []
    with (
        scratch("recflow-bench-team-", args.keep) as tmp,
        team_services(tmp / "artifacts") as (pg, server),
    ):
        try:
            # Clients get the password from PGPASSWORD, never from a URL MLflow would record.
            os.environ["PGPASSWORD"] = PASSWORD
            where = make_store(tmp, server.url)
            raw = step("download", archive_params(real_ml100k_zip(tmp)), where)
            prep = step("preprocess", [f"raw_run_id={raw}"], where)
            hpo_params = [f"preprocess_run_id={prep}", f"n_trials={args.n_trials}", "pruner=none"]
            if args.space == "equal-cost":
                space = tmp / "equal_cost_space.yaml"
                space.write_text(EQUAL_COST_SPACE)
                hpo_params.append(f"search_space={space}")
            print(
                f"hpo on ML-100K preprocess run {prep}, n_trials={args.n_trials}, pruner=none, "
                f"{args.space} search space; tracking {server.url}, optuna in PostgreSQL; "
                f"logs in {tmp}"
            )

            times: dict[int, float] = {}
            busy: dict[int, float] = {}
            for n_workers, name in ((1, "one"), (2, "two")):
                storage = pg.create_database(f"optuna_{name}")
                optuna.storages.RDBStorage(storage).engine.dispose()  # the schema, untimed
                cmd = mlflow_run("hpo", [*hpo_params, f"storage={storage}", f"study_name={name}"])
                logs = [f"hpo-{name}-{i}.log" for i in range(n_workers)]
                begin = time.perf_counter()
                workers = [start(cmd, where, log) for log in logs]
                outputs = [check(w, cmd, where, log) for w, log in zip(workers, logs, strict=True)]
                times[n_workers] = time.perf_counter() - begin
                print(
                    f"{n_workers} worker{'s' if n_workers > 1 else ' '}: {times[n_workers]:7.1f} s"
                )
                for out in outputs:
                    study_lines = [line for line in out.splitlines() if line.startswith("study ")]
                    print(f"  {study_lines[-1] if study_lines else '(no study summary line)'}")
                described, busy[n_workers] = verify(storage, name, args.n_trials)
                print(f"  study {name}: {described}")

            ratio = times[2] / times[1]
            print(f"two / one worker wall time: {ratio:.3f} ({1 / ratio:.2f}x speedup)")
            # TPE picks other configurations in each study, so the studies may train very different
            # amounts: trial seconds per wall second is the throughput, whatever was trained.
            rate = {n: busy[n] / times[n] for n in times}
            print(
                f"trial seconds per wall second: one {rate[1]:.2f}, two {rate[2]:.2f} "
                f"(two / one {rate[2] / rate[1]:.2f}); trial seconds two / one "
                f"{busy[2] / busy[1]:.2f}"
            )
            print(f"OK: both studies have exactly {args.n_trials} complete trials")
        finally:
            for w in workers:
                stop_group(w)


if __name__ == "__main__":
    main()
