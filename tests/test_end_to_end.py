"""`mlflow run . -e main` as a user runs it: a real subprocess, a loopback HTTP source, the cache.

What main decides without running a step (force takes every step past the cache) and the
pipeline's quality on real data are tested in process.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest

from recflow.testing.archives import ml100k_files, write_zip
from recflow.tracking import pipeline
from steps import main
from tests.helpers import ONE_MODEL, invoke, mlflow_run, ok, sha256, step_lines, user_env


def run_main(
    env: dict[str, str], cwd: Path, *params: str
) -> tuple[dict[str, tuple[str, str]], str]:
    """Run main in ``cwd`` with the given -P params; return {step: (ran|reused, run ID)} and the
    output."""
    proc = mlflow_run(env, "main", *params, cwd=cwd)
    return step_lines(proc.stdout), proc.stdout + proc.stderr


@pytest.mark.slow
def test_main_runs_then_reuses_every_step(tmp_path: Path, http_dir, short_temp: Path) -> None:
    env = user_env(tmp_path) | {"TMPDIR": str(short_temp)}
    root, base = http_dir
    archive = write_zip(root / "ml-100k.zip", ml100k_files())
    checksum = sha256(archive)
    params = (
        "dataset=ml-100k",
        f"data_url={base}/ml-100k.zip",
        f"checksum={checksum}",
        "n_trials=3",
        ONE_MODEL,
    )

    first, _ = run_main(env, tmp_path, *params)
    assert [state for state, _ in first.values()] == ["ran"] * 5, first
    second, out = run_main(env, tmp_path, *params)
    assert {s: (state, rid) for s, (state, rid) in second.items()} == {
        s: ("reused", rid) for s, (_, rid) in first.items()
    }
    assert re.search(r"model movielens-rankfm version 1: .*ndcg_at_10=", out)
    # Each step's temp files went with it. What is left is the `mlflow run` command's own empty
    # folder, one per main (MLflow's, for parameters of type path), not one more per step.
    left = list(short_temp.iterdir())
    assert len(left) <= 2 and all(d.is_dir() and not any(d.iterdir()) for d in left), left

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    parents = {client.get_run(rid).data.tags.get("mlflow.parentRunId") for _, rid in first.values()}
    assert len(parents) == 1 and None not in parents  # all five are children of the first main
    assert str(client.get_model_version_by_alias("movielens-rankfm", "champion").version) == "1"
    # main's own run carries the outcome, so that the UI shows it without opening a step.
    main_run = client.get_run(parents.pop())
    # The artifacts went beside the store, not into the project's folder (the working directory
    # of a user's `mlflow run`, but not of this test's).
    artifacts = Path(main_run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tmp_path), artifacts
    assert main_run.info.run_name == "main · ml-100k"
    trained = client.get_run(first["train_best"][1]).data.metrics
    for key in ("test_ndcg_at_10", "popularity_ndcg_at_10", "test_coverage_at_10"):
        assert main_run.data.metrics[key] == trained[key]
    assert main_run.data.metrics["model_version"] == 1
    assert main_run.data.tags["recflow.promoted"] == "true"
    assert main_run.data.tags["recflow.promotion_reason"]
    experiment = client.get_experiment(main_run.info.experiment_id)
    assert (experiment.experiment_id, experiment.name) == ("0", "movielens-rankfm")
    # force=true re-runs everything: test_main_with_force_reruns_every_step, in process.


def test_main_with_force_reruns_every_step(
    trained: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`main --force true` runs every step again, even where the store holds a reusable run.

    In process: no step really runs (``mlflow.run`` is stubbed, and each step "runs" as the
    store's existing run of it); what is checked is that force takes every step past the cache.
    """
    ids = {
        "download": trained["raw"], "preprocess": trained["preprocess"], "hpo": trained["hpo"],
        "train_best": trained["train"],
        "register": ok("register", ["--train_run_id", trained["train"], "--model_name", "m"]),
    }  # fmt: skip

    def cache(experiment_id: str, step: str, params: dict[str, str], version: str) -> None:
        raise AssertionError(f"forced, yet the cache was asked for a {step} run")

    def submit(uri: str, entry_point: str, **kwargs: object) -> SimpleNamespace:
        return SimpleNamespace(run_id=ids[entry_point])

    monkeypatch.setattr(pipeline, "find_reusable_run", cache)
    monkeypatch.setattr(pipeline.mlflow, "run", submit)
    result = invoke(main.main, ["--dataset", "ml-100k", "--model_name", "m", "--force", "true"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    forced = step_lines(result.output)
    assert [state for state, _ in forced.values()] == ["ran"] * 5
    assert {step: run_id for step, (_, run_id) in forced.items()} == ids
    # Unforced, the same main asks the cache first and reuses what it finds.
    monkeypatch.setattr(
        pipeline, "find_reusable_run", lambda e, step, p, v: mlflow.get_run(ids[step])
    )
    result = invoke(main.main, ["--dataset", "ml-100k", "--model_name", "m"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert [state for state, _ in step_lines(result.output).values()] == ["reused"] * 5


@pytest.mark.slow
def test_main_fails_with_the_steps_error(tmp_path: Path, http_dir) -> None:
    """A step's error reaches the user through main, and both runs are FAILED. (That the next
    main reuses only the steps that finished: test_faults.py's kill-anywhere chain.)"""
    root, base = http_dir
    write_zip(root / "ml-100k.zip", ml100k_files())
    # A well-formed checksum of other bytes: only the download can tell. The first step, so the
    # failed main costs the fewest processes (each starts MLflow anew, ~4 s).
    other = "sha256:" + "0" * 64
    env = user_env(tmp_path)
    proc = mlflow_run(
        env, "main", "dataset=ml-100k", f"data_url={base}/ml-100k.zip", f"checksum={other}",
        ok=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "checksum mismatch for" in proc.stderr, proc.stderr[-2000:]
    assert "step download failed" in proc.stderr

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    failed = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="attributes.status = 'FAILED'",
        output_format="list",
    )
    assert {r.data.tags.get("recflow.step") for r in failed} == {"download", "main"}


@pytest.mark.slow
@pytest.mark.realdata
def test_pipeline_on_real_ml100k_beats_popularity(
    tmp_path: Path, shared_ml100k: Path, tracking: str
) -> None:
    """The steps on real data, in process: what is proved is the model's quality, and the real
    `mlflow run` is test_main_runs_then_reuses_every_step's."""
    files = {name: (shared_ml100k / name).read_bytes() for name in ("u.data", "u.item", "u.user")}
    archive = write_zip(tmp_path / "real" / "ml-100k.zip", files)
    raw = ok("download", ["--dataset", "ml-100k", "--data_url", str(archive)])
    prep = ok("preprocess", ["--raw_run_id", raw])
    tuned = ok("hpo", ["--preprocess_run_id", prep, "--n_trials", "2"])
    # One model, not train_best's default ensemble of five: the ensemble only repeats the
    # training (test_blend and test_steps cover it).
    args = ["--preprocess_run_id", prep, "--hpo_run_id", tuned, "--ensemble", "1"]
    metrics = mlflow.get_run(ok("train_best", args)).data.metrics
    assert metrics["test_ndcg_at_10"] > metrics["popularity_ndcg_at_10"], metrics
