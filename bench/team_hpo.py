"""Wall time of one vs two `hpo` workers on the same study in PostgreSQL, as a ratio.

Setup (not timed): a throwaway PostgreSQL cluster and an `mlflow server` with a database backend
and proxied artifacts (tests/services.py), tracking through the server as a team would; then
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
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.main_cache import client_env, ml100k_zip, preflight, scratch  # noqa: E402
from recflow.hpo.attrs import WORKER  # noqa: E402
from tests.services import PASSWORD, team_services  # noqa: E402

RUN_ID = re.compile(r"Run \(ID '([0-9a-f]{32})'\) succeeded")
# --space equal-cost: only parameters that barely change a trial's cost are searched (BPR samples
# one negative per positive; factors, epochs and features keep their defaults), so both studies
# train about the same amount whichever configurations TPE picks.
EQUAL_COST_SPACE = """\
loss: {type: categorical, choices: [bpr]}
alpha: {type: float, low: 1.0e-4, high: 0.1, log: true}
sigma: {type: float, low: 0.01, high: 0.5, log: true}
learning_rate: {type: float, low: 0.005, high: 0.15, log: true}
"""


def mlflow_run(mlflow_exe: Path, entry_point: str, params: dict[str, object]) -> list[str]:
    """The `mlflow run` command line of one entry point of this project."""
    cmd = [str(mlflow_exe), "run", str(ROOT), "-e", entry_point, "--env-manager", "local"]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    return cmd


def check(proc: subprocess.Popen, cmd: list[str], log: Path) -> str:
    """Wait for ``proc``; return its log. Exits with the log's tail when it failed."""
    code = proc.wait()
    text = log.read_text()
    if code:
        tail = "\n".join(text.splitlines()[-30:])
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {code}):\n{tail}")
    return text


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (so it can be stopped with its trials)."""
    with log.open("w") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def run_step(cmd: list[str], env: dict[str, str], log: Path) -> str:
    """Run one setup step to the end; return the ID of its run."""
    text = check(start(cmd, env, log), cmd, log)
    found = RUN_ID.findall(text)
    if not found:
        raise SystemExit(f"no run ID in the output of `{' '.join(cmd)}`; see {log}")
    return found[-1]


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
    mlflow_exe = preflight()
    workers: list[subprocess.Popen] = []
    with (
        scratch("recflow-bench-team-", args.keep) as tmp,
        team_services(tmp / "artifacts") as (pg, server),
    ):
        try:
            # Clients get the password from PGPASSWORD, never from a URL MLflow would record.
            os.environ["PGPASSWORD"] = PASSWORD
            env = client_env(mlflow_exe, server.url, tmp / "data")
            archive = ml100k_zip(tmp)
            raw = run_step(
                mlflow_run(mlflow_exe, "download", {"dataset": "ml-100k", "data_url": archive}),
                env, tmp / "download.log",
            )  # fmt: skip
            prep = run_step(
                mlflow_run(mlflow_exe, "preprocess", {"raw_run_id": raw}),
                env,
                tmp / "preprocess.log",
            )
            hpo_params = {"preprocess_run_id": prep, "n_trials": args.n_trials, "pruner": "none"}
            if args.space == "equal-cost":
                space = tmp / "equal_cost_space.yaml"
                space.write_text(EQUAL_COST_SPACE)
                hpo_params["search_space"] = space
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
                cmd = mlflow_run(
                    mlflow_exe, "hpo", hpo_params | {"storage": storage, "study_name": name}
                )
                logs = [tmp / f"hpo-{name}-{i}.log" for i in range(n_workers)]
                begin = time.perf_counter()
                workers = [start(cmd, env, log) for log in logs]
                outputs = [check(w, cmd, log) for w, log in zip(workers, logs, strict=True)]
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
                if w.poll() is None:
                    os.killpg(w.pid, signal.SIGTERM)
                    w.wait()


if __name__ == "__main__":
    main()
