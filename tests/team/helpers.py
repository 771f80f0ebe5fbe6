"""A team member's shell, hpo workers sharing a study, and waiting on them."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from recflow.hpo.attrs import TRIAL_RUN, WORKER
from recflow.testing.services import PASSWORD, MlflowServer, Postgres
from tests.helpers import MLFLOW, PROJECT, Spawned, ok, user_env

# Slow trials on tiny data, so a worker can be killed in the middle of one; alpha is continuous,
# so two draws of the same configuration can only come from workers drawing in lockstep.
SLOW_SPACE = """\
factors: {type: int, low: 4, high: 8}
epochs: {type: int, low: 150, high: 160}
alpha: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


def team_env(url: str, tmp_path: Path, experiment: str = "Default") -> dict[str, str]:
    """A team member's shell: the server URL, the database password, their own data folder."""
    return user_env(tmp_path, url) | {"MLFLOW_EXPERIMENT_NAME": experiment, "PGPASSWORD": PASSWORD}


def prepare_on(url: str, archive: Path, data_dir: Path, experiment: str) -> str:
    """Download and preprocess ``archive`` on the server at ``url``, in process (what the tests
    using it prove starts after the split; a real `mlflow run` of both cost ~10 s more); returns
    the preprocess run's ID. MLflow in this process points back where it was."""
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", url)
        mp.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
        mp.setenv("RECFLOW_DATA_DIR", str(data_dir))
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(url)
        try:
            raw = ok("download", ["--dataset", "ml-100k", "--data_url", str(archive)])
            return ok("preprocess", ["--raw_run_id", raw])
        finally:
            mlflow.set_tracking_uri(previous)


def hpo_worker_args(prep: str, storage: str, n_trials: int, space: Path) -> list[str]:
    """`mlflow run -e hpo` of one shared study, one slow trial at a time."""
    return [
        MLFLOW, "run", str(PROJECT), "-e", "hpo", "--env-manager", "local",
        "-P", f"preprocess_run_id={prep}", "-P", f"storage={storage}", "-P", "study_name=shared",
        "-P", f"n_trials={n_trials}", "-P", "pruner=none", "-P", f"search_space={space}",
        # One slow trial at a time per worker: trials train all their epochs, one per worker.
        "-P", "patience=0", "-P", "n_jobs=1",
    ]  # fmt: skip


def hpo_worker(
    env: dict[str, str], prep: str, storage: str, n_trials: int, space: Path, log: Path,
    host: str = "",
) -> Spawned:  # fmt: skip
    """An `mlflow run -e hpo` worker in its own process group. With ``host``, the worker runs
    under that host name (a UTS namespace), so only heartbeats can tell when it died."""
    args = hpo_worker_args(prep, storage, n_trials, space)
    if host:
        args = ["unshare", "--uts", "sh", "-c", f"hostname {host} && exec {shlex.join(args)}"]
    return Spawned(args, log, env=env, cwd=PROJECT)


def can_fake_hosts() -> bool:
    """Whether this process may give a child a host name of its own (a UTS namespace)."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode == 0


def pg_ctl(pg: Postgres, *args: str) -> None:
    """``pg_ctl`` on ``pg``'s cluster, as the user it runs as."""
    subprocess.run(
        [*pg.as_user, str(pg.bin / "pg_ctl"), "-D", str(pg.data), *args],
        check=True, capture_output=True, cwd=pg.root, timeout=120,
    )  # fmt: skip


def wait_for_output(proc: Spawned, text: str, timeout: float) -> None:
    """Wait until ``proc`` has written ``text``; fail the test if it exits first or the
    ``timeout`` (seconds) passes."""
    deadline = time.monotonic() + timeout
    while text not in proc.output():
        assert proc.poll() is None, f"exited before writing {text!r}:\n" + proc.output()[-4000:]
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} within {timeout:.0f} s:\n" + proc.output()[-4000:])
        time.sleep(0.2)


def running_trial_of(
    worker: Spawned, trials: Callable[[], list[optuna.trial.FrozenTrial]]
) -> optuna.trial.FrozenTrial:
    """Wait until ``worker`` is in the middle of one of the study's ``trials`` (its MLflow run
    open: a trial is RUNNING in the study a moment before); return it."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker.output()[-4000:]
        mine = [t for t in trials() if t.state == TrialState.RUNNING and TRIAL_RUN in t.user_attrs
                and _is_child_of(t, worker)]  # fmt: skip
        if mine:
            return mine[0]
        time.sleep(0.2)
    pytest.fail("the worker never started a trial")


def _is_child_of(trial: optuna.trial.FrozenTrial, proc: subprocess.Popen) -> bool:
    """Whether ``trial`` runs in ``proc``'s process tree (same host: its recorded pid)."""
    pid = str(trial.user_attrs.get(WORKER, "")).rpartition(":")[2]
    if not pid.isdigit():
        return False
    try:
        return os.getpgid(int(pid)) == proc.pid
    except ProcessLookupError:
        return False


def git_env(server: MlflowServer, tmp_path: Path, env_root: Path) -> dict[str, str]:
    """A user's environment for `--env-manager uv`: environments built in ``env_root``. A fresh
    uv environment has no bytecode; where the CI machine sets PYTHONDONTWRITEBYTECODE, every
    process in it would compile mlflow afresh (3 s each), so it writes bytecode as a user's does."""
    env = team_env(server.url, tmp_path, "team-git") | {"MLFLOW_ENV_ROOT": str(env_root)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env
