"""A real `mlflow models serve` process on loopback, queried over HTTP in every scoring format.

The server builds its own environment from the model's requirements with uv, so this also
proves the model loads without the project installed (its code travels with the model).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests

from recflow import constants as C
from tests.helpers import MLFLOW, free_port, ok

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(
    module_trained: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """One server for the module's tests (each start builds or checks the uv environment)."""
    trained, tmp_path = module_trained, tmp_path_factory.mktemp("serve")
    ok("register", ["--train_run_id", trained["train"], "--model_name", "served"])
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    cmd = [
        MLFLOW, "models", "serve", "-m", "models:/served@champion",
        "--env-manager", "uv", "--host", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    log = (tmp_path / "serve.log").open("w")
    # An empty working directory: nothing of the project is importable from there.
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        else:
            pytest.fail("server did not start: " + (tmp_path / "serve.log").read_text()[-3000:])
        yield url, trained
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def invoke(url: str, body: dict) -> requests.Response:
    return requests.post(f"{url}/invocations", json=body, timeout=30)


def same_answer(url: str, bodies: list[dict]) -> pd.DataFrame:
    """The one answer all ``bodies`` (a request in different formats) get."""
    answers = []
    for body in bodies:
        resp = invoke(url, body)
        assert resp.status_code == 200, resp.text
        answers.append(pd.DataFrame(resp.json()["predictions"]))
    for frame in answers[1:]:
        pd.testing.assert_frame_equal(frame, answers[0])
    return answers[0]


def seen_items(trained: dict[str, str]) -> pd.DataFrame:
    folder = Path(
        mlflow.artifacts.download_artifacts(run_id=trained["preprocess"], artifact_path=C.DATA_DIR)
    )
    return pd.concat(
        [pd.read_parquet(folder / C.TRAIN_FILE), pd.read_parquet(folder / C.VALID_FILE)]
    )


def test_served_model_answers_every_format(server) -> None:
    url, trained = server
    bodies = [
        {
            "dataframe_split": {"columns": ["user_id"], "data": [[1], [2], [99999]]},
            "params": {"k": 4},
        },
        {
            "dataframe_records": [{"user_id": 1}, {"user_id": 2}, {"user_id": 99999}],
            "params": {"k": 4},
        },
        {"inputs": {"user_id": [1, 2, 99999]}, "params": {"k": 4}},
    ]
    out = same_answer(url, bodies)
    assert list(out.columns) == ["user_id", "rank", "item_id", "title", "genres", "score", "source"]
    for _, rows in out.groupby("user_id"):
        assert rows["rank"].tolist() == [1, 2, 3, 4]
        assert rows["score"].is_monotonic_decreasing
        assert rows["title"].str.startswith("Movie ").all()
    assert set(out.loc[out.user_id == 99999, "source"]) == {"popular"}
    assert set(out.loc[out.user_id != 99999, "source"]) == {"model"}

    seen = seen_items(trained)
    for user in (1, 2):
        mine = set(seen.loc[seen.user_id == user, "item_id"])
        assert not mine & set(out.loc[out.user_id == user, "item_id"])
    # Without the filter, a user's many seen items come back (the synthetic users liked them).
    resp = invoke(url, {"inputs": {"user_id": [1]}, "params": {"k": 10, "filter_seen": False}})
    items = {r["item_id"] for r in resp.json()["predictions"]}
    assert items & set(seen.loc[seen.user_id == 1, "item_id"])


def test_served_model_folds_in_histories_and_finds_similar_items(server) -> None:
    url, trained = server
    known = sorted(set(seen_items(trained).item_id))
    history = [*known[:3], 999_999]  # the last one is unknown to the model
    bodies = [
        {
            "dataframe_records": [{"user_id": 99999, "history": history}, {"user_id": 1}],
            "params": {"k": 4},
        },
        {
            "dataframe_split": {
                "columns": ["user_id", "history"], "data": [[99999, history], [1, []]]
            },
            "params": {"k": 4},
        },
        {"inputs": {"user_id": [99999, 1], "history": [history, []]}, "params": {"k": 4}},
    ]  # fmt: skip
    out = same_answer(url, bodies).set_index("user_id")
    assert set(out.loc[99999, "source"]) == {"history"} and set(out.loc[1, "source"]) == {"model"}
    assert (
        out.loc[99999, "history_ignored"].eq(1).all() and out.loc[1, "history_ignored"].eq(0).all()
    )
    assert not set(out.loc[99999, "item_id"]) & set(history)

    item = known[0]
    resp = invoke(url, {"dataframe_records": [{"item_id": item}, {"item_id": 999_999}]})
    assert resp.status_code == 200, resp.text
    similar = pd.DataFrame(resp.json()["predictions"])
    assert list(similar.columns) == ["similar_to", "rank", "item_id", "title", "genres", "score",
                                     "source"]  # fmt: skip
    mates = similar[similar.similar_to == item]
    assert mates["rank"].tolist() == list(range(1, 11)) and item not in set(mates.item_id)
    assert set(mates.source) == {"similar"} and mates.score.is_monotonic_decreasing
    assert set(similar.loc[similar.similar_to == 999_999, "source"]) == {"popular"}

    resp = invoke(url, {"dataframe_records": [{"user_id": 1, "history": "1,50"}]})
    assert resp.status_code == 400
    assert "'history' of row 0 must be a list of item IDs" in resp.json()["message"]


BAD_REQUESTS = [
    {"dataframe_records": [{"uid": 1}]},
    {"dataframe_records": [{"user_id": "abc"}]},
    {"dataframe_records": [{"user_id": 1}], "params": {"k": 0}},
    {"dataframe_records": [{"user_id": 1}], "params": {"k": 10**6}},
    {"dataframe_records": [{"user_id": 1}], "params": {"k": "ten"}},
]


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server) -> None:
    url, _ = server
    for body in BAD_REQUESTS:
        resp = invoke(url, body)
        assert 400 <= resp.status_code < 500, (body, resp.status_code, resp.text)
        assert resp.json().get("message")
        assert invoke(url, {"inputs": {"user_id": [1]}}).status_code == 200
