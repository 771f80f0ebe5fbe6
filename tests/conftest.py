"""Shared fixtures: a temporary tracking store, tiny MovieLens-shaped data, a loopback server,
and pipeline runs (download, preprocess, hpo, train_best) in that store.

Plain helpers live in ``tests/helpers.py``; fixtures are found by pytest, never imported.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.helpers import SHARED_DATA, ok
from tests.synthetic import ml100k_files, write_zip


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point MLflow and the download cache at ``tmp_path``."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RECFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def tiny_zip(tmp_path: Path) -> Path:
    """A synthetic archive in the official ml-100k layout (40 users, 30 items)."""
    return write_zip(tmp_path / "ml-100k.zip", ml100k_files())


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on loopback: (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ratings() -> pd.DataFrame:
    """A MovieLens-shaped ratings frame: 6 users, 8 items, ratings 1-5, distinct timestamps."""
    rng = np.random.default_rng(7)
    rows = [
        (u, i, float(rng.integers(1, 6)), 1000 * u + t)
        for u in range(1, 7)
        for t, i in enumerate(rng.choice(np.arange(1, 9), size=5, replace=False))
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


@pytest.fixture
def checkerboard() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Known-answer data: even users like even items, odd users odd items.

    Train holds all but one liked item per user; that held-out item is the right answer. Each
    item is held out for one user only, so every item stays in train.
    """
    users, items = range(20), range(20)
    liked = [(u, i) for u in users for i in items if u % 2 == i % 2]
    df = pd.DataFrame(liked, columns=["user_id", "item_id"])
    held = df["item_id"] == (3 * df["user_id"]) % 20  # same parity as the user, one per user
    return df[~held].reset_index(drop=True), df[held].reset_index(drop=True)


@pytest.fixture
def shared_ml100k() -> Path:
    """The real ML-100K files, or a skip when ../shared/data is absent."""
    folder = SHARED_DATA / "ml-100k"
    if not (folder / "u.data").is_file():
        pytest.skip("real MovieLens data not available in ../shared/data")
    return folder


@pytest.fixture
def raw_id(tracking: str, tiny_zip: Path) -> str:
    """A download run of the tiny archive."""
    return ok("download", ["--dataset", "ml-100k", "--data_url", str(tiny_zip)])


@pytest.fixture
def prep_id(raw_id: str) -> str:
    """A preprocess run of ``raw_id``."""
    return ok("preprocess", ["--raw_run_id", raw_id])


@pytest.fixture
def trained(tracking: str, tiny_zip: Path) -> dict[str, str]:
    """The chain up to train_best (one HPO trial): {raw, preprocess, hpo, train} run IDs."""
    raw = ok("download", ["--dataset", "ml-100k", "--data_url", str(tiny_zip)])
    prep = ok("preprocess", ["--raw_run_id", raw])
    tuned = ok("hpo", ["--preprocess_run_id", prep, "--n_trials", "1", "--pruner", "none"])
    train = ok("train_best", ["--preprocess_run_id", prep, "--hpo_run_id", tuned])
    return {"raw": raw, "preprocess": prep, "hpo": tuned, "train": train}
