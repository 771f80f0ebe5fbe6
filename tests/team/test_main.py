"""Team members running main against one server: two at once, its cache, registry and serving,
and a server that cannot be reached."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient

from recflow.testing.services import MlflowServer
from tests.helpers import MLFLOW, ONE_MODEL, free_port, last_run_id, mlflow_run, step_lines
from tests.team.helpers import team_env

pytestmark = pytest.mark.slow


def test_two_mains_together_then_a_colleague_reuses_them_and_serves(
    server: MlflowServer, archive: Path, tmp_path: Path, short_temp: Path
) -> None:
    """Two users start the same main at the same moment against one server (sharing a data
    folder, as on one machine): both succeed, and each chain of runs is its own. A colleague with
    an empty data folder then reuses every step (the cache lives on the server), and the champion,
    a version one of the two registered, serves from the registry. The models the steps
    downloaded from the server (register, when it compares one with the other; recommend) leave
    no copy behind."""
    env = team_env(server.url, tmp_path, "team-main") | {"TMPDIR": str(short_temp)}
    # The experiment exists first: `mlflow run` itself creates a missing one without handling a
    # concurrent creation, so one of two first runs dies in MLflow's CLI (RESOURCE_ALREADY_EXISTS,
    # seen in CI) before any of our code runs.
    MlflowClient().create_experiment("team-main")
    params = ("dataset=ml-100k", f"data_url={archive}", "n_trials=2", ONE_MODEL,
              "model_name=team-model")  # fmt: skip
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
        # Artifacts went through the server's proxy, not to a path the client had to reach.
        assert train.info.artifact_uri.startswith("mlflow-artifacts:/")

    colleague = team_env(server.url, tmp_path / "colleague", "team-main") | {
        "TMPDIR": str(short_temp)
    }
    again = step_lines(mlflow_run(colleague, "main", *params).stdout)
    assert {state for state, _ in again.values()} == {"reused"}
    assert {step: run_id for step, (_, run_id) in again.items()} in chains
    champion = client.get_model_version_by_alias("team-model", "champion")
    assert champion.run_id in {c["train_best"] for c in chains}
    out = tmp_path / "top3.csv"
    mlflow_run(env, "recommend", "model_uri=models:/team-model@champion", "k=3", f"output={out}")
    assert len(pd.read_csv(out)) == 3 * 40  # k for each of the 40 users
    assert not list(short_temp.rglob("MLmodel")), list(short_temp.rglob("MLmodel"))

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
