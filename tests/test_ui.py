"""What the MLflow UI shows after the steps, read from the REST API its pages call."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import requests

from recflow import constants as C
from recflow.testing.services import MlflowServer
from tests.helpers import ok


@pytest.mark.slow
def test_the_ui_sees_named_runs_datasets_linked_metrics_and_the_training_view(
    tmp_path: Path, tiny_zip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = MlflowServer(f"sqlite:///{tmp_path}/ui.db", tmp_path / "artifacts").start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        monkeypatch.setenv("RECFLOW_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(server.url)
        raw = ok("download", ["--dataset", "ml-100k", "--data_url", str(tiny_zip)])
        prep = ok("preprocess", ["--raw_run_id", raw])
        hpo = ok("hpo", ["--preprocess_run_id", prep, "--n_trials", "1", "--pruner", "none"])
        train = ok(
            "train_best", ["--preprocess_run_id", prep, "--hpo_run_id", hpo, "--ensemble", "1"]
        )

        def api(method: str, path: str, **kwargs: object) -> dict:
            """A call the UI's pages make; it must answer 200 within 30 s."""
            url = f"{server.url}/ajax-api/2.0/mlflow/{path}"
            resp = requests.request(method, url, timeout=30, **kwargs)
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:2000])
            return resp.json()

        # The experiment page: our name, and the training-runs view rather than GenAI's.
        experiment = api("GET", "experiments/get", params={"experiment_id": "0"})["experiment"]
        tags = {t["key"]: t["value"] for t in experiment["tags"]}
        assert experiment["name"] == C.DEFAULT_EXPERIMENT_NAME
        assert tags[C.EXPERIMENT_KIND_TAG] == C.EXPERIMENT_KIND

        # The runs list: names, and the Dataset and Model columns' sources.
        search = {"experiment_ids": ["0"], "max_results": 100}
        found = api("POST", "runs/search", json=search)["runs"]
        runs = {r["info"]["run_id"]: r for r in found}
        assert runs[raw]["info"]["run_name"] == "download · ml-100k"
        assert runs[hpo]["info"]["run_name"] == "hpo · ml-100k · 1 trial"
        used = {d["dataset"]["name"] for d in runs[train]["inputs"]["dataset_inputs"]}
        assert used == {"ml-100k train+valid", "ml-100k test"}
        (output,) = runs[train]["outputs"]["model_outputs"]

        # The model's page: test metrics linked to it and to the test set.
        model = api("GET", f"logged-models/{output['model_id']}")["model"]
        linked = {m["key"]: m for m in model["data"]["metrics"]}
        assert linked["test_ndcg_at_10"]["dataset_name"] == "ml-100k test"
        on_run = {m["key"]: m["value"] for m in runs[train]["data"]["metrics"]}
        assert linked["test_ndcg_at_10"]["value"] == on_run["test_ndcg_at_10"]
    finally:
        server.stop()
