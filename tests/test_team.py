"""Team scale on loopback: an MLflow server on PostgreSQL, distributed HPO, runs from a git URL.

Everything runs as separate processes, the way a team runs it: PostgreSQL and ``mlflow server``
(proxied artifacts) started by the fixtures, ``mlflow run`` clients that know only the server's
URL and ``PGPASSWORD``, and a ``git daemon`` serving the repository.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from recflow.hpo.attrs import WORKER, WORKER_RUN
from recflow.hpo.space import DEFAULT_SPACE, Dimension, load_space
from recflow.hpo.storage import open_storage, open_study
from recflow.hpo.workers import count
from recflow.testing.archives import ml100k_files, write_zip
from recflow.testing.services import PASSWORD, GitDaemon, MlflowServer, NetHost, Postgres
from tests.helpers import (
    MLFLOW,
    ONE_MODEL,
    PROJECT,
    RUN_ID,
    Spawned,
    free_port,
    last_run_id,
    mlflow_cmd,
    mlflow_run,
    ok,
    step_lines,
    user_env,
)

pytestmark = pytest.mark.slow

# Slow trials on tiny data, so a worker can be killed in the middle of one; alpha is continuous,
# so two draws of the same configuration can only come from workers drawing in lockstep.
SLOW_SPACE = """\
factors: {type: int, low: 4, high: 8}
epochs: {type: int, low: 150, high: 160}
alpha: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("server")
    srv = MlflowServer(postgres.create_database("mlflow"), root / "artifacts").start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def client_of(server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test process reads results through the server, like any team member."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    mlflow.set_tracking_uri(server.url)


def team_env(url: str, tmp_path: Path, experiment: str = "Default") -> dict[str, str]:
    """A team member's shell: the server URL, the database password, their own data folder."""
    return user_env(tmp_path, url) | {"MLFLOW_EXPERIMENT_NAME": experiment, "PGPASSWORD": PASSWORD}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_zip(tmp_path_factory.mktemp("www") / "ml-100k.zip", ml100k_files())


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


@pytest.fixture(scope="module")
def prepared(server: MlflowServer, archive: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A preprocess run on the server, made by one team member; returns its run ID."""
    return prepare_on(server.url, archive, tmp_path_factory.mktemp("member") / "data", "team-data")


def test_main_through_the_server_caches_registers_and_serves(
    server: MlflowServer, archive: Path, tmp_path: Path
) -> None:
    env = team_env(server.url, tmp_path, "team-main")
    params = ("dataset=ml-100k", f"data_url={archive}", "n_trials=2", ONE_MODEL,
              "model_name=team-model")  # fmt: skip
    first = step_lines(mlflow_run(env, "main", *params).stdout)
    assert [s for s, _ in first.values()] == ["ran"] * 5

    # A colleague with an empty data folder reuses every step: the cache lives on the server.
    colleague = team_env(server.url, tmp_path / "colleague", "team-main")
    again = mlflow_run(colleague, "main", *params).stdout
    second = step_lines(again)
    assert second == {step: ("reused", run_id) for step, (_, run_id) in first.items()}

    # Artifacts went through the server's proxy, not to a path the client had to reach.
    client = MlflowClient()
    train = client.get_run(first["train_best"][1])
    assert train.info.artifact_uri.startswith("mlflow-artifacts:/")
    champion = client.get_model_version_by_alias("team-model", "champion")
    assert champion.run_id == first["train_best"][1]

    # Serve the champion from the registry, as an on-call engineer would.
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [MLFLOW, "models", "serve", "-m", "models:/team-model@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "-p", str(port)],
        env=colleague, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        answer = None
        deadline = time.monotonic() + 180
        while answer is None and time.monotonic() < deadline:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                answer = requests.post(
                    f"http://127.0.0.1:{port}/invocations",
                    json={"dataframe_records": [{"user_id": 1}], "params": {"k": 3}},
                    timeout=30,
                )
            except requests.ConnectionError:
                time.sleep(1)
        assert answer is not None and answer.status_code == 200, answer and answer.text
        rows = answer.json()["predictions"]
        assert len(rows) == 3 and {r["user_id"] for r in rows} == {1}
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()


def test_two_mains_started_together_both_succeed_without_mixing(
    server: MlflowServer, archive: Path, tmp_path: Path
) -> None:
    """Two users start the same main at the same moment against one server (sharing a data
    folder, as on one machine): both succeed, each chain of runs is its own, and the champion is
    a version one of them registered, and loads."""
    env = team_env(server.url, tmp_path, "team-together")
    # The experiment exists first: `mlflow run` itself creates a missing one without handling a
    # concurrent creation, so one of two first runs dies in MLflow's CLI (RESOURCE_ALREADY_EXISTS,
    # seen in CI) before any of our code runs.
    MlflowClient().create_experiment("team-together")
    params = ("dataset=ml-100k", f"data_url={archive}", "n_trials=2", ONE_MODEL,
              "model_name=together")  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda _: mlflow_run(env, "main", *params, ok=False), range(2)))
    for proc in procs:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    client = MlflowClient()
    chains = []
    for proc in procs:
        main = client.get_run(last_run_id(proc))
        chain = {k.removeprefix("recflow.run."): v for k, v in main.data.tags.items()
                 if k.startswith("recflow.run.")}  # fmt: skip
        assert set(chain) == {"download", "preprocess", "hpo", "train_best", "register"}
        chains.append(chain)
        # Every step read its upstream from this main's own chain.
        train = client.get_run(chain["train_best"])
        assert train.data.params["preprocess_run_id"] == chain["preprocess"]
        assert train.data.params["hpo_run_id"] == chain["hpo"]
        assert client.get_run(chain["hpo"]).data.params["preprocess_run_id"] == chain["preprocess"]
        assert client.get_run(chain["register"]).data.params["train_run_id"] == chain["train_best"]
        model = client.get_logged_model(train.data.tags["recflow.model_uri"].split("/")[-1])
        assert model.source_run_id == chain["train_best"]
    champion = client.get_model_version_by_alias("together", "champion")
    assert champion.run_id in {c["train_best"] for c in chains}
    loaded = mlflow.pyfunc.load_model("models:/together@champion")
    assert len(loaded.predict(pd.DataFrame({"user_id": [1]}), params={"k": 3})) == 3


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
    assert count(study, TrialState.COMPLETE) == n_trials
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
    assert sum(complete_by_worker.values()) == n_trials
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
        assert study_complete == n_trials
        assert study.trials[lost.number].state == TrialState.FAIL
        assert len(complete) == n_trials  # the late result was not counted as well
        assert late.info.status == "KILLED"
        # The cut-off worker finished the trial after all and found it failed: dropped as late.
        assert late.data.tags.get("trial_state") == "LATE", late.data.tags
        assert not [r for r in runs if r.info.status == "RUNNING"]
    finally:
        if srv is not None:
            srv.stop()
        if pg is not None:
            pg.stop()


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


def study_trials(name: str, storage: optuna.storages.BaseStorage) -> list[optuna.trial.FrozenTrial]:
    """The trials of study ``name``; none while no worker has created it yet."""
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except KeyError:
        return []


def running_trial_of(
    worker: Spawned, trials: Callable[[], list[optuna.trial.FrozenTrial]]
) -> optuna.trial.FrozenTrial:
    """Wait until ``worker`` is in the middle of one of the study's ``trials``; return it."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker.output()[-4000:]
        mine = [t for t in trials() if t.state == TrialState.RUNNING and _is_child_of(t, worker)]
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


@pytest.fixture(scope="module")
def git_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """``git daemon`` on loopback serving recflow.git (the project plus a later commit) and
    mono.git (the project in pipelines/recflow/); yields the base URL and recflow's commits."""
    root = tmp_path_factory.mktemp("git")

    def git(*args: str, cwd: Path = root) -> str:
        ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
        return subprocess.run(
            ["git", *ident, *args], cwd=cwd, check=True, capture_output=True, text=True
        ).stdout.strip()

    work = root / "work"
    git("clone", "-q", str(PROJECT), str(work))
    (work / "CHANGES").write_text("a later commit\n")
    git("add", "CHANGES", cwd=work)
    git("commit", "-qm", "a later commit", cwd=work)
    commits = git("rev-parse", "HEAD~1", "HEAD", cwd=work).split()
    served = root / "served"
    git("clone", "-q", "--bare", str(work), str(served / "recflow.git"))

    mono = root / "mono"
    (mono / "pipelines").mkdir(parents=True)
    git("clone", "-q", str(PROJECT), str(mono / "pipelines" / "recflow"))
    shutil.rmtree(mono / "pipelines" / "recflow" / ".git")
    git("init", "-q", str(mono))
    git("add", ".", cwd=mono)
    git("commit", "-qm", "monorepo", cwd=mono)
    git("clone", "-q", "--bare", str(mono), str(served / "mono.git"))

    # Started with a deadline: the fixture fails if the daemon does not listen in time.
    daemon = GitDaemon(served).start()
    try:
        yield daemon.url, commits
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def env_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where `--env-manager uv` builds environments; shared, so later runs reuse the first's."""
    return tmp_path_factory.mktemp("envs")


def git_env(server: MlflowServer, tmp_path: Path, env_root: Path) -> dict[str, str]:
    return team_env(server.url, tmp_path, "team-git") | {"MLFLOW_ENV_ROOT": str(env_root)}


def test_main_from_a_git_url_builds_its_environment_from_conda_yaml(
    server: MlflowServer, git_daemon: tuple[str, list[str]], env_root: Path, archive: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    base, commits = git_daemon
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = mlflow_run(
        git_env(server, tmp_path, env_root), "main",
        "dataset=ml-100k", f"data_url={archive}", "n_trials=2", ONE_MODEL, "model_name=git-model",
        uri=f"{base}/recflow.git", cwd=empty, extra=("--env-manager", "uv"),
    )  # fmt: skip
    steps = step_lines(proc.stdout)
    assert list(steps) == ["download", "preprocess", "hpo", "train_best", "register"]
    main_run = mlflow.get_run(last_run_id(proc))
    assert main_run.data.tags["mlflow.source.git.commit"] == commits[-1]
    assert MlflowClient().get_model_version_by_alias("git-model", "champion")
    assert list(empty.iterdir()) == [], "nothing is written to the user's folder"

    # The environment is the one conda.yaml describes, with rankfmc built from source.
    (python,) = env_root.glob("mlflow-*/bin/python")
    wheel = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, rankfmc._rankfm;"
         "print(m.distribution('rankfmc').read_text('WHEEL'))"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "linux_x86_64" in wheel and "manylinux" not in wheel


def test_version_and_subdirectory_forms_of_a_git_url(
    server: MlflowServer, git_daemon: tuple[str, list[str]], env_root: Path, archive: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    base, commits = git_daemon
    env = git_env(server, tmp_path, env_root)
    common = ("dataset=ml-100k", f"data_url={archive}")
    uv = ("--env-manager", "uv")

    # -v <commit> checks out that commit, not the branch head.
    old = mlflow_run(env, "download", *common, uri=f"{base}/recflow.git", cwd=tmp_path,
                     extra=(*uv, "-v", commits[0]))  # fmt: skip
    assert mlflow.get_run(last_run_id(old)).data.tags["mlflow.source.git.commit"] == commits[0]

    # <repo>#<subdirectory> runs the project found in that folder of the repository.
    sub = mlflow_run(env, "download", *common, uri=f"{base}/mono.git#pipelines/recflow",
                     cwd=tmp_path, extra=uv)  # fmt: skip
    run = mlflow.get_run(last_run_id(sub))
    assert run.info.status == "FINISHED" and run.data.tags["recflow.step"] == "download"

    missing = mlflow_run(env, "download", *common, uri=f"{base}/mono.git#no/such/folder",
                         cwd=tmp_path, extra=uv, ok=False)  # fmt: skip
    assert missing.returncode != 0
    assert "no/such/folder" in missing.stderr


def test_an_unreachable_server_is_a_clear_error(archive: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = team_env(url, tmp_path) | {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    # A bare `mlflow run` fails in MLflow's own CLI (creating the run) with its traceback.
    proc = mlflow_run(env, "download", "dataset=ml-100k", f"data_url={archive}", ok=False)
    assert proc.returncode != 0
    assert url in proc.stderr and "Connection refused" in proc.stderr, proc.stderr[-3000:]

    # What `make main` runs before `mlflow run` (and every step before opening its run): one line.
    check = subprocess.run([sys.executable, "-m", "recflow.tracking.store"], env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert check.returncode != 0
    lines = check.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in check.stderr, check.stderr[-3000:]
    assert lines[0].startswith("Error: cannot reach the tracking server"), lines
    assert url in lines[0] and "Connection refused" in lines[0], lines


def test_a_server_restart_during_a_step_is_ridden_out(
    server: MlflowServer, postgres: Postgres, prepared: str, tmp_path: Path
) -> None:
    # A second server on the same database and artifact store, restarted mid-step.
    srv = MlflowServer(postgres.url("mlflow"), server.artifacts).start()
    journal = tmp_path / "study.journal"
    space = tmp_path / "slow.yaml"
    space.write_text(SLOW_SPACE)
    env = team_env(srv.url, tmp_path, "team-restart")
    args = [
        MLFLOW, "run", str(PROJECT), "-e", "hpo", "--env-manager", "local",
        "-P", f"preprocess_run_id={prepared}", "-P", f"storage={journal}", "-P", "n_trials=3",
        "-P", "pruner=none", "-P", f"search_space={space}", "-P", "study_name=restart",
    ]  # fmt: skip
    worker = Spawned(args, tmp_path / "worker.log", env=env, cwd=PROJECT)

    def trials() -> list[optuna.trial.FrozenTrial]:
        # The journal appears when the worker creates the study.
        return (
            study_trials("restart", open_storage(str(journal), tmp_path))
            if journal.exists()
            else []
        )

    try:
        running_trial_of(worker, trials)
        srv.stop()
        time.sleep(3)
        srv.start()
        out = worker.finish(timeout=900)
        assert worker.returncode == 0, out[-4000:]
    finally:
        worker.kill_tree()
        srv.stop()
    run = mlflow.get_run(RUN_ID.findall(out)[-1])
    assert run.info.status == "FINISHED" and run.data.metrics["n_complete"] == 3


def test_a_server_restart_mid_main_is_ridden_out(
    server: MlflowServer, postgres: Postgres, archive: Path, tmp_path: Path
) -> None:
    """The tracking server restarts while main is in its hpo step: main (and the step it is
    waiting for) ride it out and finish, and the champion loads."""
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
        loaded = mlflow.pyfunc.load_model("models:/restarted@champion")
        assert len(loaded.predict(pd.DataFrame({"user_id": [1]}), params={"k": 3})) == 3
    finally:
        main.kill_tree()
        srv.stop()


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
    server: MlflowServer, postgres: Postgres, prepared: str, tmp_path: Path,
    url_of, password: str, message: str,
) -> None:  # fmt: skip
    env = team_env(server.url, tmp_path, "team-bad-db") | {"PGPASSWORD": password}
    url = url_of(postgres)
    proc = mlflow_run(
        env, "hpo", f"preprocess_run_id={prepared}", f"storage={url}", "n_trials=1", ok=False
    )
    assert proc.returncode != 0
    error = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert error and "cannot open optuna storage" in error[0] and message in error[0], error
    assert "wrong@" not in proc.stderr.replace(url, ""), "the password is not echoed"
    assert ("holds a password" in proc.stderr) == ("wrong@" in url)
    (run,) = mlflow.search_runs(
        experiment_names=["team-bad-db"], output_format="list",
        filter_string=f"params.storage = '{url}'",
    )  # fmt: skip
    assert run.info.status == "FAILED"


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
