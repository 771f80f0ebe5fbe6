"""hpo workers on hosts of their own (network namespaces), one cut off from the network mid-trial."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from recflow.hpo.workers import count
from recflow.testing.services import MlflowServer, NetHost, Postgres
from tests.helpers import PROJECT, Spawned, free_port, study_trials
from tests.team.helpers import (
    SLOW_SPACE,
    hpo_worker_args,
    prepare_on,
    running_trial_of,
    team_env,
)

pytestmark = pytest.mark.slow


def test_a_worker_cut_off_by_the_network_loses_its_trial_once_and_exits_cleanly(
    archive: Path, tmp_path: Path
) -> None:
    """Two hpo workers on hosts of their own (network namespaces) share a study in PostgreSQL.
    One's link is cut mid-trial: the other fails that trial once its heartbeat is stale and runs
    a replacement. The link comes back: the cut-off worker's late result is dropped, not counted
    twice, and it finishes the study cleanly with the other."""
    if not NetHost.available():
        pytest.skip("network namespaces need root and iproute2")
    hosts = [NetHost(1), NetHost(2)]
    pg = None
    srv = None
    workers: list[Spawned] = []
    try:
        for h in hosts:
            h.delete()  # left over from an interrupted run
            h.create()
        pg = Postgres(listen="*", clients="10.77.0.0/16").start()
        port = free_port()
        allowed = ",".join(
            f"{a}:{port}" for a in ("127.0.0.1", "localhost", *(h.gateway for h in hosts))
        )
        srv = MlflowServer(
            pg.create_database("mlflow"), tmp_path / "artifacts", port=port, host="0.0.0.0",
            extra=("--allowed-hosts", allowed),
        ).start()  # fmt: skip
        mlflow.set_tracking_uri(srv.url)
        env = team_env(srv.url, tmp_path, "team-partition") | {"RECFLOW_HEARTBEAT_SECONDS": "2"}
        prep = prepare_on(srv.url, archive, tmp_path / "data", "team-partition")
        pg.create_database("optuna")
        store = optuna.storages.RDBStorage(pg.url("optuna"))
        space = tmp_path / "slow.yaml"
        space.write_text(SLOW_SPACE)
        n_trials = 4

        def trials() -> list[optuna.trial.FrozenTrial]:
            return study_trials("shared", store)

        def worker_on(h: NetHost) -> Spawned:
            there = env | {"MLFLOW_TRACKING_URI": f"http://{h.gateway}:{port}"}
            storage = f"postgresql://recflow@{h.gateway}:{pg.port}/optuna"
            cmd = hpo_worker_args(prep, storage, n_trials, space)
            log = tmp_path / f"{h.name}.log"
            return Spawned(h.run(cmd), log, env=there, cwd=PROJECT)

        cut_off = worker_on(hosts[0])
        workers.append(cut_off)
        running_trial_of(cut_off, trials)
        other = worker_on(hosts[1])
        workers.append(other)
        running_trial_of(other, trials)
        lost = running_trial_of(cut_off, trials)
        hosts[0].cut()
        deadline = time.monotonic() + 600
        while trials()[lost.number].state == TrialState.RUNNING:
            assert time.monotonic() < deadline, (
                "the other worker never failed the lost trial; its output:\n"
                + other.output()[-4000:]
            )
            time.sleep(0.5)
        hosts[0].restore()
        outputs = [w.finish(timeout=900) for w in workers]
    finally:
        for w in workers:
            w.kill_tree()
        for h in hosts:
            h.delete()
        if sys.exc_info()[0] is not None:  # the checks below will not run: stop the services
            if srv is not None:
                srv.stop()
            if pg is not None:
                pg.stop()
    try:
        study = optuna.load_study(study_name="shared", storage=store)
        client = MlflowClient()
        exp = client.get_experiment_by_name("team-partition")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        complete = [r for r in runs if r.data.tags.get("trial_state") == "COMPLETE"]
        late = client.get_run(lost.user_attrs["mlflow_run_id"])
        study_complete = count(study, TrialState.COMPLETE)
        # Measured, and printed before the checks so a failure shows them too.
        print(f"\ntrials lost: {max(0, n_trials - study_complete)}; counted twice: "
              f"{len(complete) - study_complete}; study complete trials: {study_complete} of "
              f"{n_trials}; lost trial {lost.number}: {study.trials[lost.number].state.name}, its "
              f"run {late.info.status} ({late.data.tags.get('trial_state')})")  # fmt: skip
        for w, out in zip(workers, outputs, strict=True):
            assert w.returncode == 0, out[-4000:]
        # Two workers ending trials together may both start the last one (run_worker's
        # docstring): one more than asked, never fewer.
        assert n_trials <= study_complete <= n_trials + 1
        assert study.trials[lost.number].state == TrialState.FAIL
        assert len(complete) == study_complete  # the late result was not counted as well
        assert late.info.status == "KILLED"
        # The cut-off worker finished the trial after all and found it failed: dropped as late.
        assert late.data.tags.get("trial_state") == "LATE", late.data.tags
        assert not [r for r in runs if r.info.status == "RUNNING"]
    finally:
        if srv is not None:
            srv.stop()
        if pg is not None:
            pg.stop()
