"""The search space, trials as nested runs, pruning, and studies that resume and are shared."""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest
import sqlalchemy.exc
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from recflow.errors import UserError
from recflow.hpo import space as spaces
from recflow.hpo import workers
from recflow.hpo.attrs import TRIAL_NUMBER_TAG, TRIAL_RUN, TRIAL_STATE_TAG, WORKER_RUN
from recflow.hpo.liveness import end_dead_trial_runs, fail_stale_trials
from recflow.hpo.objective import MAX_PATIENCE, PATIENCE, Objective, auto_patience, parse_patience
from recflow.hpo.sampling import TrialSeededTPE, make_pruner
from recflow.hpo.space import DEFAULT_SPACE, Dimension, load_space, max_epochs, suggest, warm_start
from recflow.hpo.storage import connection_lost, open_storage
from recflow.hpo.workers import count
from recflow.tracking.contracts import load_best_params
from tests.helpers import PROJECT, Spawned, fails, ok, runs_of, study_trials


def test_default_space_loads_and_respects_conditions() -> None:
    space = load_space(DEFAULT_SPACE)
    names = [d.name for d in space]
    assert {"factors", "loss", "max_samples", "learning_rate", "epochs", "features"} <= set(names)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        params = suggest(trial, space)
        # max_samples only applies to WARP, beta only with side features.
        assert ("max_samples" in trial.params) == (params.loss == "warp")
        assert ("beta" in trial.params) == (params.features != "none")
        study.tell(trial, 0.0)


def test_the_default_space_keeps_its_cheaper_bounds_only_at_scale() -> None:
    space = load_space(DEFAULT_SPACE)
    assert spaces.at_scale(space, spaces.LARGE - 1) == (space, {})
    capped, applied = spaces.at_scale(space, spaces.LARGE)
    assert applied == spaces.AT_SCALE == {"factors": 64, "max_samples": 50, "epochs": 40}
    by_name = {d.name: d for d in capped}
    assert (by_name["factors"].low, by_name["factors"].high) == (16, 64)
    assert by_name["max_samples"].high == 50 and by_name["max_samples"].log
    assert by_name["max_samples"].when == (("loss", ("warp",)),)
    assert max_epochs(capped) == 40
    untouched = {d.name: d for d in space if d.name not in spaces.AT_SCALE}
    assert untouched == {n: d for n, d in by_name.items() if n not in spaces.AT_SCALE}
    # A bound already under its cap, or a cap under the low bound, is left as it is.
    narrow = [Dimension("factors", "int", 8, 32), Dimension("max_samples", "int", 80, 120)]
    assert spaces.at_scale(narrow, spaces.LARGE) == (narrow, {})


def test_hpo_caps_only_the_default_space_at_scale(
    prep_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spaces, "LARGE", 1)  # the fixture's data counts as large
    args = ["--preprocess_run_id", prep_id, "--n_trials", "1", "--pruner", "none"]
    default = mlflow.get_run(ok("hpo", [*args, "--storage", str(tmp_path / "a.log")]))
    assert {k: v for k, v in default.data.params.items() if k.startswith("space.")} == {
        "space.factors_capped_at": "64", "space.max_samples_capped_at": "50",
        "space.epochs_capped_at": "40",
    }  # fmt: skip
    trial = trial_runs(default.info.run_id)[0]
    assert int(trial.data.params["factors"]) <= 64 and int(trial.data.params["epochs"]) <= 40
    own = tmp_path / "space.yaml"
    own.write_text("factors: {type: int, low: 100, high: 128}\nepochs: 2\n")
    given = mlflow.get_run(
        ok("hpo", [*args, "--storage", str(tmp_path / "b.log"), "--search_space", str(own)])
    )
    assert not any(k.startswith("space.") for k in given.data.params)
    assert int(trial_runs(given.info.run_id)[0].data.params["factors"]) >= 100


def test_a_plain_value_fixes_a_parameter_and_warm_start_respects_the_space(
    tmp_path: Path,
) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(
        "epochs: 30\nloss: warp\nfactors: {type: int, low: 32, high: 64}\n"
        "max_samples: {type: int, low: 5, high: 50, when: {loss: warp}}\n"
    )
    space = load_space(path)
    trial = optuna.create_study().ask()
    params = suggest(trial, space)
    assert (params.epochs, params.loss) == (30, "warp")
    assert set(trial.params) == {"factors", "max_samples"}  # fixed values are not searched
    assert max_epochs(space) == 30
    # The default factors (20) is outside 32..64: left to the sampler; max_samples applies
    # because the fixed loss is warp.
    assert warm_start(space) == {"max_samples": 20}


def test_the_best_configuration_keeps_the_spaces_fixed_values(prep_id: str, tmp_path: Path) -> None:
    # optuna records only what it sampled: train_best must still get a fixed loss and weighting.
    own = tmp_path / "space.yaml"
    own.write_text(
        "loss: bpr\nuser_weight: 0.5\nfactors: {type: int, low: 4, high: 8}\nepochs: 2\n"
    )
    args = ["--preprocess_run_id", prep_id, "--n_trials", "1", "--pruner", "none"]
    run = mlflow.get_run(
        ok("hpo", [*args, "--storage", str(tmp_path / "s.log"), "--search_space", str(own)])
    )
    best = load_best_params(run.info.run_id, tmp_path / "best")
    assert (best.loss, best.user_weight) == ("bpr", 0.5) and 4 <= best.factors <= 8
    assert run.data.params["best.user_weight"] == "0.5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("factors: [1, 2", "cannot read search space"),
        ("- just a list", "non-empty mapping"),
        ("factorz: {type: int, low: 2, high: 4}", "unknown parameter"),
        ("factors: {type: int, low: 8, high: 2}", "invalid spec"),
        ("alpha: {type: float, low: 0, high: 1, log: true}", "invalid spec"),
        ("loss: {type: categorical}", "invalid spec"),
        ("max_samples: {type: int, low: 2, high: 9, when: {loss: warp}}", "listed before it"),
        ("epochs: many", "invalid value"),
        ("loss: hinge", "invalid value"),
    ],
)
def test_bad_search_space_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_space(path)


def test_same_seed_gives_same_trials() -> None:
    space = load_space(DEFAULT_SPACE)

    def sample(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=TrialSeededTPE(seed), direction="maximize")
        study.optimize(lambda t: suggest(t, space).factors / 100, n_trials=15)
        return [t.params for t in study.trials]

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


def test_workers_with_the_same_seed_draw_different_configurations() -> None:
    """Two workers on one study, each with its own sampler seeded alike, taking turns."""
    space = load_space(DEFAULT_SPACE)
    storage = optuna.storages.InMemoryStorage()
    workers = [
        optuna.create_study(
            study_name="shared", storage=storage, sampler=TrialSeededTPE(5),
            direction="maximize", load_if_exists=True,
        )
        for _ in range(2)
    ]  # fmt: skip
    for i in range(24):
        study = workers[i % 2]
        trial = study.ask()
        study.tell(trial, suggest(trial, space).factors / 100)
    configs = [tuple(sorted(t.params.items())) for t in workers[0].trials]
    assert len(configs) == 24 and len(set(configs)) == 24


def trial_runs(hpo_run_id: str) -> list[mlflow.entities.Run]:
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{hpo_run_id}'",
        output_format="list",
    )


def test_trials_are_child_runs_with_learning_curves(prep_id: str, tmp_path: Path) -> None:
    journal = tmp_path / "j.log"
    hpo_id = ok(
        "hpo", ["--preprocess_run_id", prep_id, "--n_trials", "4", "--storage", str(journal)]
    )
    run = mlflow.get_run(hpo_id)
    trials = trial_runs(hpo_id)
    assert run.data.metrics["n_complete"] == 4
    assert len(trials) == 4 + run.data.metrics["n_pruned"] + run.data.metrics["n_fail"]
    client = mlflow.MlflowClient()
    for t in trials:
        if t.data.tags["trial_state"] == "COMPLETE":
            epochs = int(t.data.params["epochs"])
            history = client.get_metric_history(t.info.run_id, "ndcg_at_10")
            ran = len(history)
            assert [m.step for m in history] == list(range(1, ran + 1))
            # Scored at its best epoch; stopped at the cap or `patience` epochs after the best.
            patience = int(run.data.params["early_stopping.patience"])
            best_epoch = int(t.data.metrics["best_epoch"])
            assert t.data.metrics["best_ndcg_at_10"] == max(m.value for m in history)
            assert history[best_epoch - 1].value == t.data.metrics["best_ndcg_at_10"]
            assert ran == epochs or ran - best_epoch == patience
            assert {"best_precision_at_10", "best_recall_at_10", "best_mrr_at_10"} <= set(
                t.data.metrics
            )
    best = run.data.tags["recflow.best_trial_run_id"]
    assert best in {t.info.run_id for t in trials}
    plots = {a.path for a in client.list_artifacts(hpo_id, "plots")}
    assert "plots/optimization_history.png" in plots


def test_the_quartile_pruner_prunes_only_the_bottom_quarter() -> None:
    from optuna.trial import create_trial

    study = optuna.create_study(direction="maximize", pruner=make_pruner("quartile", 40))
    for v in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        study.add_trial(create_trial(value=v, intermediate_values={5: v}))
    pruned = {}
    for v in (0.15, 0.35, 0.65):
        trial = study.ask()
        trial.report(v, 5)
        pruned[v] = trial.should_prune()
        study.tell(trial, state=TrialState.PRUNED)
    assert pruned == {0.15: True, 0.35: False, 0.65: False}


class _PruneAfterTwo(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.last_step is not None and trial.last_step >= 2


def test_pruned_trial_is_finished_and_tagged(prep_id: str, tmp_path: Path) -> None:
    from recflow.tracking.contracts import load_prepared

    data = load_prepared(prep_id, tmp_path)
    (tmp_path / "space.yaml").write_text("epochs: {type: int, low: 5, high: 8}\n")
    space = load_space(tmp_path / "space.yaml")
    with mlflow.start_run() as parent:
        study = optuna.create_study(direction="maximize", pruner=_PruneAfterTwo())
        study.optimize(Objective(data, space, "ndcg@10", 1, parent.info.run_id), n_trials=3)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 3
    runs = trial_runs(parent.info.run_id)
    assert len(runs) == 3  # one run per trial, so the loop below checks each
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "PRUNED"
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "ndcg_at_10")
        assert [m.step for m in history] == [1, 2]


def test_auto_patience_waits_longer_only_where_epochs_are_cheap() -> None:
    assert auto_patience(65_000) == MAX_PATIENCE  # ML-100K's training split
    assert auto_patience(700_000) == PATIENCE  # ML-1M's
    assert auto_patience(2_000_000) == PATIENCE  # a tuning sample of big data
    assert PATIENCE < auto_patience(150_000) < MAX_PATIENCE
    assert parse_patience("auto") == "auto"
    assert parse_patience("0") == 0 and parse_patience("5.0") == 5  # MLproject passes floats
    for bad in ("-2", "1.5", "later"):
        with pytest.raises(UserError, match="patience must be 'auto'"):
            parse_patience(bad)


def test_patience_zero_trains_every_epoch(prep_id: str, tmp_path: Path) -> None:
    from recflow.tracking.contracts import load_prepared

    data = load_prepared(prep_id, tmp_path)
    (tmp_path / "space.yaml").write_text(
        "epochs: 12\nlearning_rate: {type: float, low: 0.001, high: 0.002}\n"
    )
    space = load_space(tmp_path / "space.yaml")
    with mlflow.start_run() as parent:
        study = optuna.create_study(direction="maximize")
        study.optimize(Objective(data, space, "ndcg@10", 1, parent.info.run_id, patience=0), 1)
    (run,) = trial_runs(parent.info.run_id)
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "ndcg_at_10")
    assert len(history) == 12
    assert study.trials[0].value == max(m.value for m in history)


def test_study_with_other_metric_is_refused_untouched(prep_id: str, tmp_path: Path) -> None:
    journal = tmp_path / "j.log"
    common = ["--preprocess_run_id", prep_id, "--storage", str(journal), "--study_name", "s"]
    ok("hpo", [*common, "--n_trials", "2"])
    before = journal.read_bytes()
    fails("hpo", [*common, "--n_trials", "4", "--metric", "recall@10"], "was created with metric")
    assert journal.read_bytes() == before


def test_a_named_study_on_other_data_is_refused_untouched(
    raw_id: str, prep_id: str, tmp_path: Path
) -> None:
    """Regression: a study name reused on a new preprocess run (the data grew, or was split
    again) continued the old study, and the hpo run reported the old data's best trial."""
    journal = tmp_path / "j.log"
    named = ["--storage", str(journal), "--study_name", "nightly", "--n_trials", "1"]
    ok("hpo", ["--preprocess_run_id", prep_id, *named])
    before = journal.read_bytes()
    other = ok("preprocess", ["--raw_run_id", raw_id, "--seed", "7"])
    fails("hpo", ["--preprocess_run_id", other, *named], "study 'nightly' was tuned on other data")
    assert journal.read_bytes() == before


def test_unreachable_storage_is_refused(prep_id: str) -> None:
    url = "sqlite:////nonexistent-dir/optuna.db"
    fails("hpo", ["--preprocess_run_id", prep_id, "--storage", url], "cannot open optuna storage")


@pytest.mark.parametrize("value", ["0", "soon", "-5"])
def test_bad_heartbeat_setting_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RECFLOW_HEARTBEAT_SECONDS", value)
    with pytest.raises(UserError, match="RECFLOW_HEARTBEAT_SECONDS must be a whole number"):
        open_storage(f"sqlite:///{tmp_path / 'o.db'}", tmp_path)


def test_a_trial_killed_before_naming_its_worker_is_failed_once_old(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "j.log"), tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    study_id = storage.get_study_id_from_name("s")
    now = datetime.datetime.now(datetime.UTC)
    for started in (now - datetime.timedelta(minutes=5), now):
        template = optuna.trial.create_trial(state=TrialState.RUNNING)
        template.datetime_start = started
        storage.create_new_trial(study_id, template_trial=template)
    fail_stale_trials(study, storage)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.RUNNING]


def test_a_dead_trials_runs_are_ended_even_before_it_named_its_run(tracking: str) -> None:
    client = MlflowClient()
    worker = client.create_run("0")
    trial_run = client.create_run(
        "0",
        tags={"mlflow.parentRunId": worker.info.run_id, TRIAL_NUMBER_TAG: "3"},
    )
    other = client.create_run("0", tags={"mlflow.parentRunId": worker.info.run_id})
    dead = optuna.trial.create_trial(
        state=TrialState.FAIL, user_attrs={WORKER_RUN: worker.info.run_id}
    )
    dead.number = 3
    end_dead_trial_runs(optuna.create_study(), dead)
    status = [client.get_run(r.info.run_id).info.status for r in (worker, trial_run, other)]
    assert status == ["KILLED", "KILLED", "RUNNING"]


def test_rerun_continues_study_to_n_trials(prep_id: str, tmp_path: Path) -> None:
    common = [
        "--preprocess_run_id",
        prep_id,
        "--storage",
        str(tmp_path / "j.log"),
        "--pruner",
        "none",
    ]
    first = ok("hpo", [*common, "--n_trials", "3"])
    second = ok("hpo", [*common, "--n_trials", "5"])
    # Complete trials count (on this tiny catalogue the second warm start diverges: FAILED).
    complete = [
        [t for t in trial_runs(run) if t.data.tags["trial_state"] == "COMPLETE"]
        for run in (first, second)
    ]
    assert [len(c) for c in complete] == [3, 2]
    assert mlflow.get_run(second).data.metrics["n_complete"] == 5
    third = ok("hpo", [*common, "--n_trials", "5"])  # nothing left to do
    assert trial_runs(third) == []


# Slow trials on tiny data, so a process can be killed mid-study.
SLOW_SPACE = """\
factors: {type: int, low: 4, high: 8}
epochs: {type: int, low: 150, high: 160}
"""


@pytest.fixture
def processes() -> Iterator[list[Spawned]]:
    """Processes a test starts; killed with their training children at teardown, should an
    assertion stop the test early."""
    started: list[Spawned] = []
    yield started
    for proc in started:
        proc.kill_tree()


def hpo_process(prep_id: str, tmp_path: Path, n_trials: int, log: str) -> Spawned:
    """An hpo worker on the shared study; its output goes to ``tmp_path / log``."""
    space = tmp_path / "slow.yaml"
    space.write_text(SLOW_SPACE)
    args = [
        sys.executable, "-m", "steps.hpo", "--preprocess_run_id", prep_id,
        "--n_trials", str(n_trials), "--storage", str(tmp_path / "j.log"),
        "--study_name", "shared", "--pruner", "none", "--search_space", str(space),
    ]  # fmt: skip
    return Spawned(args, tmp_path / log, cwd=PROJECT, env=os.environ.copy())


def load(tmp_path: Path) -> optuna.Study:
    storage = open_storage(str(tmp_path / "j.log"), tmp_path)
    return optuna.load_study(study_name="shared", storage=storage)


def complete_so_far(tmp_path: Path) -> int:
    """Complete trials of the shared study while a worker runs; the worker creates the journal
    file before it writes the study into it."""
    if not (tmp_path / "j.log").exists():
        return 0
    trials = study_trials("shared", open_storage(str(tmp_path / "j.log"), tmp_path))
    return sum(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_killed_study_resumes_keeping_finished_trials(
    prep_id: str, tmp_path: Path, processes: list[Spawned]
) -> None:
    proc = hpo_process(prep_id, tmp_path, n_trials=6, log="first.log")
    processes.append(proc)
    deadline = time.monotonic() + 300
    while complete_so_far(tmp_path) < 2:
        assert proc.poll() is None, proc.output()[-4000:]
        assert time.monotonic() < deadline, "no 2 complete trials in 300 s\n" + proc.output()
        time.sleep(0.5)
    proc.kill_tree()
    finished = {t.number: t.value for t in load(tmp_path).get_trials(states=(TrialState.COMPLETE,))}
    assert 2 <= len(finished) < 6

    resumed = hpo_process(prep_id, tmp_path, n_trials=6, log="resumed.log")
    processes.append(resumed)
    out = resumed.finish(timeout=600)
    assert resumed.returncode == 0, out[-4000:]
    study = load(tmp_path)
    after = {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(after) == 6
    assert {n: after[n] for n in finished} == finished


@pytest.mark.slow
def test_two_concurrent_workers_share_one_study(
    prep_id: str, tmp_path: Path, processes: list[Spawned]
) -> None:
    workers = [hpo_process(prep_id, tmp_path, n_trials=6, log=f"worker{n}.log") for n in (1, 2)]
    processes.extend(workers)
    for w in workers:
        out = w.finish(timeout=600)
        assert w.returncode == 0, out[-4000:]
    study = load(tmp_path)
    assert count(study, TrialState.COMPLETE) == 6
    hpo_runs = runs_of("hpo")
    assert len(hpo_runs) == 2
    per_worker = [
        [t for t in trial_runs(r.info.run_id) if t.data.tags["trial_state"] == "COMPLETE"]
        for r in hpo_runs
    ]
    assert all(per_worker), "both workers ran trials"
    assert sum(len(p) for p in per_worker) == 6
    numbers = [t.data.params["trial_number"] for p in per_worker for t in p]
    assert len(set(numbers)) == len(numbers)
    best = max(t.value for t in study.get_trials(states=(TrialState.COMPLETE,)))
    for r in hpo_runs:
        assert r.data.metrics["best_ndcg_at_10"] <= best
    assert max(r.data.metrics["best_ndcg_at_10"] for r in runs_of("hpo")) == pytest.approx(best)


def test_a_result_told_after_another_worker_failed_its_trial_is_dropped_and_its_run_late(
    tracking: str,
) -> None:
    """Regression (team/test_partition.py, under load): a trial that ended just before its
    worker was cut off tagged its run COMPLETE; once the link was back the run said COMPLETE and
    FINISHED though another worker had failed the trial meanwhile. The tell decides."""
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    client = MlflowClient()
    experiment = client.create_experiment("late")
    run_id = client.create_run(experiment, tags={TRIAL_STATE_TAG: "COMPLETE"}).info.run_id
    client.set_terminated(run_id, "FINISHED")  # as the objective left it
    trial.set_user_attr(TRIAL_RUN, run_id)
    study.tell(trial.number, state=TrialState.FAIL)  # another worker, its heartbeat stale
    assert workers._tell(study, workers._Ended(trial, value=0.5)) is False
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags[TRIAL_STATE_TAG]) == ("KILLED", "LATE")
    assert count(study, TrialState.COMPLETE) == 0


def lost_mid_query(then: type[Exception]) -> optuna.exceptions.StorageInternalError:
    """What optuna raised when PostgreSQL restarted under its trial query (a fault-suite run in
    CI): the query lost its connection, optuna's slower fallback query on the same session was
    refused with ``then``, and optuna wrapped that."""
    try:
        try:
            raise sqlalchemy.exc.OperationalError(
                "SELECT ...", {}, Exception("server closed the connection unexpectedly")
            )
        except sqlalchemy.exc.OperationalError:
            raise then("Can't reconnect until invalid transaction is rolled back")  # noqa: B904
    except then as e:
        try:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit."
            ) from e
        except optuna.exceptions.StorageInternalError as wrapped:
            return wrapped


def test_a_storage_error_that_comes_from_a_lost_connection_is_retried() -> None:
    refused = lost_mid_query(sqlalchemy.exc.PendingRollbackError)
    lost = connection_lost(refused)
    assert isinstance(lost, sqlalchemy.exc.OperationalError)
    assert "server closed the connection" in str(lost)
    # Errors of the data, not of the connection, are not retried.
    assert (
        connection_lost(sqlalchemy.exc.IntegrityError("INSERT ...", {}, Exception("dup"))) is None
    )
    assert connection_lost(optuna.exceptions.StorageInternalError("too long")) is None
