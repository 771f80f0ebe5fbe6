"""A brand-new local tracking store opened by several processes at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import mlflow
import pytest

from recflow.tracking.store import prepare_store, sqlite_path

PROCESSES = 6


def _first_open(uri: str, start, results) -> None:
    start.wait()  # every process has imported MLflow: they open the store together
    try:
        prepare_store(uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("together")
        with mlflow.start_run():
            mlflow.log_metric("ok", 1)
        results.put("ok")
    except Exception as e:  # the test reports what went wrong
        results.put(f"{type(e).__name__}: {e}"[:300])


@pytest.mark.slow
def test_processes_opening_a_new_sqlite_store_together_all_succeed(tmp_path: Path) -> None:
    # Without prepare_store's lock, every one of three tries had a process fail.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_first_open, args=(uri, start, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert outcomes == ["ok"] * PROCESSES
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("together")
    assert len(client.search_runs([exp.experiment_id])) == PROCESSES


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///mlflow.db", Path("mlflow.db")),
        ("sqlite:////tmp/a/b.db", Path("/tmp/a/b.db")),
        ("sqlite://", None),
        ("http://127.0.0.1:5000", None),
        ("postgresql://u@h/db", None),
        ("file:///tmp/mlruns", None),
    ],
)
def test_sqlite_path(uri: str, expected: Path | None) -> None:
    assert sqlite_path(uri) == expected


def test_a_dataset_another_run_logged_at_the_same_moment_is_logged_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two mains started together on one PostgreSQL-backed server: both preprocess runs looked
    the split up, missed it, and the second insert failed on the datasets' unique key
    (psycopg UniqueViolation), failing that main. The retry finds the first run's dataset."""
    from mlflow.exceptions import MlflowException

    from recflow.tracking import contracts

    calls: list[str] = []

    def log_input(dataset: object, context: str) -> None:
        calls.append(context)
        if len(calls) == 1:
            raise MlflowException("BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key")

    monkeypatch.setattr(contracts.mlflow, "log_input", log_input)
    contracts.log_input(object(), "test")  # type: ignore[arg-type]
    assert calls == ["test", "test"]

    def refused(dataset: object, context: str) -> None:
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: run gone")

    monkeypatch.setattr(contracts.mlflow, "log_input", refused)
    with pytest.raises(MlflowException, match="run gone"):
        contracts.log_input(object(), "test")  # type: ignore[arg-type]
