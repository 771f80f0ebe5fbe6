"""Team mode behind MLflow's own auth app (`mlflow server --app-name basic-auth`).

A real server with users and permissions: anonymous clients are refused, a read-only user can
load the champion but change nothing, the pipeline's account runs main end to end, and a wrong
password is a one-line error. Credentials travel only in MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD, never in a URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient

from recflow.testing.archives import ml100k_files, write_zip
from recflow.testing.services import MlflowServer
from tests.helpers import last_run_id, mlflow_run, step_lines, user_env

pytestmark = pytest.mark.slow

ADMIN, PIPELINE, READER = "admin", "pipeline", "reader"
PASSWORDS = {ADMIN: "admin-pw-8d1f", PIPELINE: "pipeline-pw-27c4", READER: "reader-pw-90ab"}
MODEL = "guarded"
EXPERIMENT = "guarded-runs"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """The auth app with nothing allowed by default, and two users besides the admin."""
    root = tmp_path_factory.mktemp("auth-server")
    # docs/team.md's configuration. Its credential cache spares a scrypt check per request: main
    # took 132 s through this server without it, 33 s with it.
    config = root / "auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"
    )
    srv = MlflowServer(
        f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", extra=("--app-name", "basic-auth"),
        env={"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORDS[ADMIN],
             "MLFLOW_FLASK_SERVER_SECRET_KEY": "csrf-key-for-tests"},
    ).start()  # fmt: skip
    with as_user(ADMIN):
        admin = get_app_client("basic-auth", tracking_uri=srv.url)
        for user in (PIPELINE, READER):
            admin.create_user(user, PASSWORDS[user])
    yield srv
    srv.stop()


class as_user:
    """Credentials in the environment, as a user's shell would hold them."""

    def __init__(self, user: str, password: str | None = None) -> None:
        self.values = {
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password or PASSWORDS[user],
        }

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pipeline_env(url: str, tmp_path: Path, user: str = PIPELINE, password: str | None = None):
    return user_env(tmp_path, url) | {
        "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": password or PASSWORDS[user],
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }


def test_anonymous_clients_get_401(server: MlflowServer) -> None:
    for path in ("/api/2.0/mlflow/experiments/search?max_results=1",
                 "/api/2.0/mlflow/registered-models/search"):  # fmt: skip
        assert requests.get(server.url + path, timeout=10).status_code == 401


def test_the_pipeline_account_runs_main_and_a_reader_only_reads(
    server: MlflowServer, tmp_path: Path
) -> None:
    archive = write_zip(tmp_path / "ml-100k.zip", ml100k_files())
    env = pipeline_env(server.url, tmp_path)
    # A real `mlflow run` of main (MLflow's CLI and each step's `mlflow.run` talk to the server
    # with the account's credentials), made cheap: one trial and one model, where tuning and
    # averaging more would only repeat calls the server has already allowed.
    proc = mlflow_run(env, "main", "dataset=ml-100k", f"data_url={archive}", "n_trials=1",
                      "ensemble=1", f"model_name={MODEL}")  # fmt: skip
    steps = step_lines(proc.stdout)
    assert [state for state, _ in steps.values()] == ["ran"] * 5
    main_run = last_run_id(proc)

    # The pipeline account owns what it created; it lets the reader read both.
    mlflow.set_tracking_uri(server.url)
    with as_user(PIPELINE):
        experiment = MlflowClient().get_experiment_by_name(EXPERIMENT).experiment_id
    with as_user(ADMIN):
        admin = get_app_client("basic-auth", tracking_uri=server.url)
        admin.grant_user_permission(READER, "experiment", experiment, "READ")
        admin.grant_user_permission(READER, "registered_model", MODEL, "READ")

    with as_user(READER):
        client = MlflowClient()
        assert client.get_run(main_run).info.status == "FINISHED"
        (tmp_path / "champion").mkdir()  # where it is downloaded to, not a folder left in /tmp
        champion = mlflow.pyfunc.load_model(
            f"models:/{MODEL}@champion", dst_path=str(tmp_path / "champion")
        )
        assert len(champion.predict(pd.DataFrame({"user_id": [1]}), params={"k": 3})) == 3
        version = client.get_model_version_by_alias(MODEL, "champion")
        refused = {
            "log a run": lambda: client.create_run(experiment),
            "register a version": lambda: client.create_model_version(
                MODEL, version.source, version.run_id
            ),
            "move the alias": lambda: client.set_registered_model_alias(MODEL, "champion", "1"),
            "delete the alias": lambda: client.delete_registered_model_alias(MODEL, "champion"),
        }
        for what, attempt in refused.items():
            with pytest.raises(MlflowException, match="PERMISSION_DENIED|403") as e:
                attempt()
            assert e.value.error_code == "PERMISSION_DENIED", what
    with as_user(PIPELINE):
        assert (
            MlflowClient().get_model_version_by_alias(MODEL, "champion").version == version.version
        )


def test_a_wrong_password_is_a_one_line_error(server: MlflowServer, tmp_path: Path) -> None:
    env = pipeline_env(server.url, tmp_path, password="not-the-password")
    # What `make main` runs before `mlflow run`, and every step before opening its run.
    proc = subprocess.run([sys.executable, "-m", "recflow.tracking.store"], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{server.url} refused the credentials of {PIPELINE}" in lines[0]
    assert "MLFLOW_TRACKING_PASSWORD" in lines[0] and "not-the-password" not in lines[0]
