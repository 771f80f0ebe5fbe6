"""Upstream run IDs left out: each step takes the latest finished run of the step before it."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from recflow.constants import UPSTREAM
from tests.helpers import COMMANDS, invoke, last_run_id, mlflow_run, ok, runs_of, user_env

QUICK = ["--n_trials", "1", "--pruner", "none"]


def picked(step: str, args: list[str]) -> tuple[str, str]:
    """Run ``step``, which must succeed; return its run ID and what it printed."""
    result = invoke(COMMANDS[step], args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return runs_of(step)[0].info.run_id, result.output


def test_steps_default_to_the_latest_finished_upstream_run(raw_id: str) -> None:
    """Regression: `mlflow run . -e hpo -P n_trials=50` stopped with "No value given for missing
    parameters: 'preprocess_run_id'"; upstream run IDs now default to the latest run."""
    older = ok("preprocess", ["--raw_run_id", raw_id])
    prep, out = picked("preprocess", [])
    assert f"raw_run_id not given: using the latest finished download run {raw_id}" in out
    assert mlflow.get_run(prep).data.tags["recflow.raw_run_id"] == raw_id

    tuned, out = picked("hpo", QUICK)
    assert f"using the latest finished preprocess run {prep}" in out
    assert mlflow.get_run(tuned).data.tags["recflow.preprocess_run_id"] == prep
    # The newest hpo run now belongs to the older split: train_best must not take it.
    ok("hpo", ["--preprocess_run_id", older, *QUICK])

    trained, out = picked("train_best", [])
    assert f"using the latest finished preprocess run {prep}" in out
    assert f"using the latest finished hpo run {tuned}" in out
    tags = mlflow.get_run(trained).data.tags
    assert (tags["recflow.preprocess_run_id"], tags["recflow.hpo_run_id"]) == (prep, tuned)

    _, out = picked("register", ["--model_name", "m"])
    assert f"using the latest finished train_best run {trained}" in out
    version = mlflow.MlflowClient().get_model_version_by_alias("m", "champion")
    assert version.tags["train_run_id"] == trained and version.tags["preprocess_run_id"] == prep


@pytest.mark.parametrize("step", list(UPSTREAM))
def test_with_nothing_to_pick_the_step_says_what_to_run(tracking: str, step: str) -> None:
    param, upstream = next(iter(UPSTREAM[step].items()))
    result = invoke(COMMANDS[step], [])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {param} not given and experiment 'movielens-rankfm' has no finished {upstream} run: "
        f"run `mlflow run . -e main` first, or pass -P {param}=<run ID>"
    )
    (run,) = runs_of(step)
    assert run.info.status == "FAILED"


@pytest.mark.slow
def test_hpo_as_our_users_type_it(tmp_path: Path, prep_id: str) -> None:
    """`mlflow run . -e hpo -P n_trials=2`, the regression's command, on the test's store (made
    in tmp_path, where ``user_env`` points: its download and preprocess runs were made in
    process; only the command typed needs a real `mlflow run`)."""
    env = user_env(tmp_path)
    assert env["MLFLOW_TRACKING_URI"] == mlflow.get_tracking_uri()
    proc = mlflow_run(env, "hpo", "n_trials=2")
    assert f"using the latest finished preprocess run {prep_id}" in proc.stdout
    run = mlflow.get_run(last_run_id(proc))
    assert run.data.metrics["n_complete"] == 2
    assert run.data.tags["recflow.preprocess_run_id"] == prep_id
