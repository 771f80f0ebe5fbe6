"""Models registered before the package was split into subpackages still load and answer.

A pyfunc model pickles its class by path (``recflow.serving.RecommenderModel``). The archive
holds a checkerboard model saved by the code as it stood before the split (commit 8fb8525,
``tests/helpers.save_checkerboard_pyfunc``), with the requests it was asked then and its answers.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest

from recflow.serving.pyfunc import RecommenderModel

ARCHIVE = Path(__file__).parent / "data" / "model-before-subpackages.tar.gz"


@pytest.mark.parametrize("request_name", ["users", "items", "history"])
def test_a_model_saved_before_the_split_loads_and_answers_as_it_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request_name: str
) -> None:
    # Loading puts the model's own code folder first on sys.path: undo that after the test.
    monkeypatch.setattr(sys, "path", list(sys.path))
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(tmp_path, filter="data")
    model = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    # In a process that has recflow imported (batch scoring, the register step), the pickled
    # class path resolves to today's class, which must read the old bundle.
    assert type(model.unwrap_python_model()) is RecommenderModel
    request = pd.read_parquet(tmp_path / f"request_{request_name}.parquet")
    expected = pd.read_parquet(tmp_path / f"answer_{request_name}.parquet")
    pd.testing.assert_frame_equal(model.predict(request, params={"k": 5}), expected)
