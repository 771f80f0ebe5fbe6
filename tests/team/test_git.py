"""main run from a git URL, its environment built from conda.yaml by uv; versions and
subdirectories of the URL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from recflow.testing.services import MlflowServer
from tests.helpers import ONE_MODEL, last_run_id, mlflow_run, step_lines
from tests.team.helpers import git_env

pytestmark = pytest.mark.slow


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
