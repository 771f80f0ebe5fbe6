"""hpo workers sharing one study in PostgreSQL: a killed worker, bad databases, a race to create
the study."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from recflow.hpo import storage as storage_module
from recflow.hpo.attrs import WORKER, WORKER_RUN
from recflow.hpo.space import DEFAULT_SPACE, Dimension, load_space
from recflow.hpo.storage import open_storage, open_study
from recflow.hpo.workers import count
from recflow.testing.services import PASSWORD, MlflowServer, Postgres
from steps import hpo
from tests.helpers import Spawned, free_port, invoke, runs_of, study_trials
from tests.team.helpers import (
    SLOW_SPACE,
    can_fake_hosts,
    hpo_worker,
    running_trial_of,
    team_env,
)

pytestmark = pytest.mark.slow


def test_distributed_workers_share_a_postgres_study_and_survive_a_killed_one(
    server: MlflowServer, postgres: Postgres, prepared: str, tmp_path: Path
) -> None:
    storage = postgres.create_database("optuna_workers")
    space = tmp_path / "slow.yaml"
    space.write_text(SLOW_SPACE)
    # Short heartbeats: a dead worker's trial is failed after 6 silent seconds, not 90.
    env = team_env(server.url, tmp_path, "team-hpo") | {"RECFLOW_HEARTBEAT_SECONDS": "2"}
    n_trials = 8
    store = optuna.storages.RDBStorage(storage)

    def trials() -> list[optuna.trial.FrozenTrial]:
        return study_trials("shared", store)

    # The doomed worker claims to be another machine, so its trials are only failed through
    # their stopped heartbeats, as for a machine that died. Without a host of its own, the
    # same-host PID check would fail its trial instead, and the test would prove nothing about
    # heartbeats.
    if not can_fake_hosts():
        pytest.skip("`unshare --uts` is unavailable: the doomed worker cannot be another host")
    doomed_host = "doomed-host"
    workers: list[Spawned] = []

    try:
        # Three workers overlap: the doomed one dies mid-trial while the survivor is mid-trial,
        # and a latecomer joins after the kill.
        doomed = hpo_worker(
            env, prepared, storage, n_trials, space, tmp_path / "doomed.log", host=doomed_host
        )
        workers.append(doomed)
        running_trial_of(doomed, trials)
        survivor = hpo_worker(env, prepared, storage, n_trials, space, tmp_path / "survivor.log")
        workers.append(survivor)
        running_trial_of(survivor, trials)
        killed_trial = running_trial_of(doomed, trials)
        doomed.kill_tree()
        # A new worker joins after the kill and helps finish the study.
        latecomer = hpo_worker(env, prepared, storage, n_trials, space, tmp_path / "late.log")
        workers.append(latecomer)
        outputs = [w.finish(timeout=900) for w in (survivor, latecomer)]
        for w, out in zip((survivor, latecomer), outputs, strict=True):
            assert w.returncode == 0, out[-4000:]
    finally:
        for w in workers:
            w.kill_tree()

    study = optuna.load_study(study_name="shared", storage=store)
    complete = count(study, TrialState.COMPLETE)
    # Two workers ending trials within milliseconds may each start one more (run_worker's
    # docstring): seen once under heavy load, 9 of 8.
    assert n_trials <= complete <= n_trials + 1
    killed = study.trials[killed_trial.number]
    assert killed.state == TrialState.FAIL
    # Recorded on another host, so the same-host PID check skipped it: heartbeats failed it.
    assert str(killed.user_attrs[WORKER]).startswith(f"{doomed_host}:"), killed.user_attrs

    client = MlflowClient()
    exp = client.get_experiment_by_name("team-hpo")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    running = [(r.info.run_name, r.data.tags.get("recflow.step")) for r in runs
               if r.info.status == "RUNNING"]  # fmt: skip
    assert not running, f"orphan runs (killed trial {killed.number})"
    hpo_runs = {r.info.run_id: r for r in runs if r.data.tags.get("recflow.step") == "hpo"}
    assert len(hpo_runs) == 3
    assert hpo_runs[killed.user_attrs[WORKER_RUN]].info.status == "KILLED"
    assert client.get_run(killed.user_attrs["mlflow_run_id"]).info.status == "KILLED"

    # No configuration was tried twice, though every worker seeds its sampler alike.
    configs = [tuple(sorted(t.params.items())) for t in study.trials if t.params]
    assert len(set(configs)) == len(configs)

    # Every trial ran once, as a child of the hpo run of the worker that ran it.
    trial_runs = [r for r in runs if "trial_number" in r.data.params]
    numbers = Counter(r.data.params["trial_number"] for r in trial_runs)
    assert max(numbers.values()) == 1
    by_number = {int(r.data.params["trial_number"]): r for r in trial_runs}
    for t in study.trials:
        run = by_number[t.number]
        assert run.data.tags["mlflow.parentRunId"] == t.user_attrs[WORKER_RUN]
        if t.number != killed.number:
            expected = "FAILED" if t.state == TrialState.FAIL else t.state.name
            assert run.data.tags["trial_state"] == expected
    complete_by_worker = Counter(
        r.data.tags["mlflow.parentRunId"] for r in trial_runs
        if r.data.tags.get("trial_state") == "COMPLETE"
    )  # fmt: skip
    assert sum(complete_by_worker.values()) == complete
    assert len(complete_by_worker) >= 2, "the work was shared"

    # Both surviving workers report the study's best, whoever found it.
    for run in hpo_runs.values():
        if run.info.status != "FINISHED":
            continue
        assert run.data.metrics["best_ndcg_at_10"] == pytest.approx(study.best_value)
        # The tuned epochs are the best trial's best epoch, not the cap it was sampled with.
        tuned = {**study.best_params, "epochs": study.best_trial.user_attrs["best_epoch"]}
        assert {
            k.removeprefix("best."): v for k, v in run.data.params.items() if k.startswith("best.")
        } == {k: str(v) for k, v in tuned.items()}


@pytest.mark.parametrize(
    ("url_of", "password", "message"),
    [
        (lambda pg: f"postgresql://recflow@127.0.0.1:{free_port()}/optuna", PASSWORD,
         "Connection refused"),
        (lambda pg: pg.url("postgres"), "wrong", 'password authentication failed for user'),
        (lambda pg: pg.url("postgres").replace("recflow@", "recflow:wrong@"), "",
         "recflow:***@"),
    ],
    ids=["unreachable", "wrong-password", "password-in-url"],
)  # fmt: skip
def test_a_bad_optuna_database_is_a_clear_error(
    postgres: Postgres, prepared: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, url_of, password: str, message: str,
) -> None:  # fmt: skip
    """In process: the message is the step's own (what `mlflow run` adds to a failed step, the
    kill-anywhere and end-to-end tests show)."""
    monkeypatch.setenv("PGPASSWORD", password)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team-bad-db")
    url = url_of(postgres)
    before = {r.info.run_id for r in runs_of("hpo")}
    result = invoke(
        hpo.main, ["--preprocess_run_id", prepared, "--storage", url, "--n_trials", "1"]
    )
    assert result.exit_code != 0
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert error and "cannot open optuna storage" in error[0] and message in error[0], error
    assert "wrong@" not in result.output.replace(url, ""), "the password is not echoed"
    assert ("holds a password" in caplog.text) == ("wrong@" in url)
    (run,) = [r for r in runs_of("hpo") if r.info.run_id not in before]
    assert run.info.status == "FAILED" and run.data.params["storage"] == url


def test_workers_opening_an_empty_database_together_all_get_the_study(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers started at once race to create optuna's tables, then to create the study; none
    may fail for it, and all join the one study."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    space = load_space(DEFAULT_SPACE)
    for round_ in range(3):
        url = postgres.create_database(f"optuna_race_{round_}")
        tables, study = threading.Barrier(6), threading.Barrier(6)
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(_join_after, tables, study, url, space) for _ in range(6)]
        errors = [repr(f.exception()) for f in futures if f.exception() is not None]
        assert not errors, errors
        joined = [f.result() for f in futures]
        assert len(joined) == 6
        (summary,) = optuna.get_all_study_summaries(open_storage(url, Path("unused")))
        assert summary.study_name == "race"
        # Every worker holds the study the database holds, with the attributes it checks.
        assert {study_id for study_id, _ in joined} == {
            open_storage(url, Path("unused")).get_study_id_from_name("race")
        }
        assert all(attrs == summary.user_attrs for _, attrs in joined), (joined, summary)


def _join_after(
    tables: threading.Barrier, study: threading.Barrier, url: str, space: list[Dimension]
) -> tuple[int, dict[str, object]]:
    """Open the storage when every worker does, then the study when every worker does; the
    study's ID in the database and its user attributes."""
    tables.wait(timeout=120)  # a worker that failed first breaks it, not hangs the rest
    storage = open_storage(url, Path("unused"))
    study.wait(timeout=120)
    joined = open_study(
        storage, "race", "ndcg@10", space, optuna.samplers.RandomSampler(0),
        optuna.pruners.NopPruner(),
    )  # fmt: skip
    return storage.get_study_id_from_name("race"), joined.user_attrs


def test_a_worker_cut_off_mid_transaction_does_not_lock_its_trial_for_good(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (team/test_partition.py in CI): a worker's link was cut between a storage
    statement on its trial and the commit. Its session stayed open on the database, idle in a
    transaction and holding the trial's row lock, and the other worker waited on that lock for
    good to fail the trial. Now the database ends such a session, and the lock with it."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    monkeypatch.setattr(storage_module, "IDLE_IN_TRANSACTION_SECONDS", 2)
    url = postgres.create_database("optuna_cut_mid_commit")
    cut_off = open_storage(url, Path("unused"))
    trial = optuna.create_study(storage=cut_off, study_name="cut").ask()
    # What the cut leaves: the trial's row locked, as optuna locks it to record a value, and the
    # commit never sent.
    session = cut_off.engine.connect()
    session.begin()
    session.execute(
        sqlalchemy.text("SELECT * FROM trials WHERE trial_id = :id FOR UPDATE"),
        {"id": trial._trial_id},
    )
    other = open_storage(url, Path("unused"))
    failed = threading.Event()

    def fail_the_trial() -> None:
        other.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        failed.set()

    threading.Thread(target=fail_the_trial, daemon=True).start()
    try:
        assert failed.wait(timeout=60), "the other worker still waits on the cut-off one's lock"
    finally:
        session.invalidate()
    assert other.get_trial(trial._trial_id).state == TrialState.FAIL


def test_a_storage_url_keeps_its_own_server_options_beside_the_timeout(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    url = postgres.create_database("optuna_url_options")
    own = "-c statement_timeout=1234 -c idle_in_transaction_session_timeout=45s"
    with_options = open_storage(f"{url}?options={quote(own)}", Path("unused"))
    plain = open_storage(url, Path("unused"))

    def setting(storage: optuna.storages.RDBStorage, name: str) -> str:
        with storage.engine.connect() as session:
            return session.execute(sqlalchemy.text(f"SHOW {name}")).scalar_one()

    assert setting(with_options, "statement_timeout") == "1234ms"
    # The user's timeout, not ours; without options=, ours (IDLE_IN_TRANSACTION_SECONDS).
    assert setting(with_options, "idle_in_transaction_session_timeout") == "45s"
    assert setting(plain, "idle_in_transaction_session_timeout") == "30s"
