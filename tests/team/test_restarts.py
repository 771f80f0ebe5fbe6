"""Services restarting under running work: the tracking server mid-main (in its hpo step), the
optuna database mid-study."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from recflow.hpo.workers import count
from recflow.testing.services import MlflowServer, Postgres
from tests.helpers import ONE_MODEL, PROJECT, Spawned, mlflow_cmd, step_lines, study_trials
from tests.team.helpers import (
    SLOW_SPACE,
    hpo_worker,
    pg_ctl,
    running_trial_of,
    team_env,
    wait_for_output,
)

pytestmark = pytest.mark.slow


def test_a_server_restart_mid_main_is_ridden_out(
    server: MlflowServer, postgres: Postgres, archive: Path, tmp_path: Path
) -> None:
    """The tracking server restarts while main's hpo step runs a trial: the step (its trial's
    calls retried) and main waiting for it ride it out and finish, and the champion loads."""
    srv = MlflowServer(postgres.url("mlflow"), server.artifacts).start()
    env = team_env(srv.url, tmp_path, "team-restart-main")
    params = ("dataset=ml-100k", f"data_url={archive}", "n_trials=2", ONE_MODEL,
              "model_name=restarted")  # fmt: skip
    main = Spawned(mlflow_cmd("main", *params), tmp_path / "main.log", env=env, cwd=PROJECT)
    try:
        client = MlflowClient(srv.url)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert main.poll() is None, main.output()[-4000:]
            exp = client.get_experiment_by_name("team-restart-main")
            trials = exp and client.search_runs(
                [exp.experiment_id],
                "attributes.status = 'RUNNING' and params.trial_number LIKE '%'",
            )
            if trials:
                break
            time.sleep(0.5)
        else:
            pytest.fail("main's hpo never started a trial run:\n" + main.output()[-4000:])
        srv.stop()
        time.sleep(3)
        srv.start()
        out = main.finish(timeout=900)
        assert main.returncode == 0, out[-4000:]
        steps = step_lines(out)
        assert [state for state, _ in steps.values()] == ["ran"] * 5
        (tmp_path / "champion").mkdir()  # where it is downloaded to, not a folder left in /tmp
        loaded = mlflow.pyfunc.load_model(
            "models:/restarted@champion", dst_path=str(tmp_path / "champion")
        )
        assert len(loaded.predict(pd.DataFrame({"user_id": [1]}), params={"k": 3})) == 3
    finally:
        main.kill_tree()
        srv.stop()


def test_a_postgres_restart_mid_study_is_ridden_out(
    server: MlflowServer, prepared: str, tmp_path: Path
) -> None:
    """The study's database restarts (an immediate stop, as a crash) while a worker is mid-trial:
    the worker carries on and the study ends with exactly n_trials complete trials.

    Regression: a worker died when a storage call met the restart (one restart mid-trial in
    three). The database stays down until the worker has met the outage (its storage call failed
    and is retried), so the restart catches a worker that does not ride it out every time."""
    pg = Postgres().start()
    try:
        storage = pg.create_database("optuna")
        store = optuna.storages.RDBStorage(storage)
        space = tmp_path / "slow.yaml"
        space.write_text(SLOW_SPACE)
        env = team_env(server.url, tmp_path, "team-pg-restart") | {"RECFLOW_HEARTBEAT_SECONDS": "2"}
        worker = hpo_worker(env, prepared, storage, 3, space, tmp_path / "worker.log")
        try:
            running_trial_of(worker, lambda: study_trials("shared", store))
            store.remove_session()
            store.engine.dispose()
            pg_ctl(pg, "-m", "immediate", "stop")  # a crash: no connection is closed cleanly
            # Heartbeats (every 2 s) and each epoch's report reach the storage within seconds;
            # the worker warns as it retries (recflow/hpo/storage.py).
            wait_for_output(worker, "optuna database unreachable", timeout=60)
            pg_ctl(pg, "-o", pg.opts, "-l", str(pg.root / "server.log"), "-w", "start")
            out = worker.finish(timeout=900)
            assert worker.returncode == 0, out[-4000:]
        finally:
            worker.kill_tree()
        study = optuna.load_study(study_name="shared", storage=optuna.storages.RDBStorage(storage))
        assert count(study, TrialState.COMPLETE) == 3
    finally:
        pg.stop()
