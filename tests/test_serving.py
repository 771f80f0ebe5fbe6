"""The pyfunc model in-process: save -> load -> predict, ranking, filtering, cold start, errors."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from recflow import serving
from recflow.model import FMParams, Recommender
from tests.helpers import checkerboard_data, save_checkerboard_pyfunc


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    """One fitted, saved and reloaded model for the module (predict does not change it)."""
    tmp_path = tmp_path_factory.mktemp("saved")
    python_model, train = save_checkerboard_pyfunc(tmp_path)
    return python_model, mlflow.pyfunc.load_model(str(tmp_path / "pyfunc")), train


def test_round_trip_gives_the_same_answer(saved) -> None:
    direct, loaded, _ = saved
    users = pd.DataFrame({"user_id": [0, 1, 7]})
    pd.testing.assert_frame_equal(
        direct.predict(None, users, {"k": 4}), loaded.predict(users, params={"k": 4})
    )


def test_ranked_unseen_and_cold_start(saved) -> None:
    direct, _, train = saved
    out = direct.predict(None, pd.DataFrame({"user_id": [0, 1, 999]}), {"k": 3})
    assert list(out.columns) == serving.OUTPUT_COLS
    for user, rows in out.groupby("user_id"):
        assert rows["rank"].tolist() == [1, 2, 3] and rows.score.is_monotonic_decreasing
        if user != 999:
            assert not set(rows.item_id) & set(train.loc[train.user_id == user, "item_id"])
            # The checkerboard's answer: the held-out item has the user's parity.
            assert rows.item_id.iloc[0] % 2 == user % 2
    assert set(out.loc[out.user_id == 999, "source"]) == {"popular"}
    unfiltered = direct.predict(
        None, pd.DataFrame({"user_id": [0]}), {"k": 10, "filter_seen": False}
    )
    assert set(unfiltered.item_id) & set(train.loc[train.user_id == 0, "item_id"])


def test_a_user_who_saw_almost_everything_gets_fewer_rows(saved) -> None:
    direct, _, train = saved
    seen = train.loc[train.user_id == 0, "item_id"].nunique()  # 9 of 20 items
    out = direct.predict(None, pd.DataFrame({"user_id": [0]}), {"k": 20})
    assert len(out) == 20 - seen and np.isfinite(out.score).all()


@pytest.mark.parametrize(
    ("frame", "params", "message"),
    [
        (pd.DataFrame({"uid": [1]}), {}, "needs a 'user_id' column"),
        (pd.DataFrame({"user_id": [1.5]}), {}, "must be integers"),
        (pd.DataFrame({"user_id": [1]}), {"k": 0}, "k must be between"),
        (pd.DataFrame({"user_id": [1]}), {"k": serving.MAX_K + 1}, "k must be between"),
    ],
)
def test_bad_input_raises(saved, frame: pd.DataFrame, params: dict, message: str) -> None:
    direct, _, _ = saved
    with pytest.raises(ValueError, match=message):
        direct.predict(None, frame, params)


def test_seen_arrays_are_csr_over_model_positions() -> None:
    model = Recommender(
        FMParams(factors=1), np.array([10, 20]), np.array([1, 2, 3]),
        np.zeros((2, 2), np.float32), np.zeros((3, 2), np.float32), np.zeros(3, np.float32),
    )  # fmt: skip
    seen = pd.DataFrame(
        [(20, 3), (10, 1), (20, 1), (10, 1), (99, 2), (10, 7)], columns=["user_id", "item_id"]
    )
    arrays = serving.seen_arrays(model, seen)
    assert arrays["seen_indptr"].tolist() == [0, 2, 4]
    assert arrays["seen_indices"].tolist() == [0, 0, 2, 0]  # user 10: 1, 1; user 20: 3, 1
    assert arrays["popularity"].tolist() == [3, 1, 1]  # unknown user 99's item counts too


def test_a_seen_item_unknown_to_the_model_filters_nothing(tmp_path: Path) -> None:
    """Regression: a seen row whose item the model lacks had position -1, and so filtered the
    model's last item for that user."""
    train, _ = checkerboard_data()
    model = Recommender.fit(train, FMParams(factors=4, loss="bpr", epochs=2), seed=1)
    items = pd.DataFrame({"item_id": range(20), "title": "T", "genres": "G"})
    answers = []
    for name, seen in (
        ("plain", train),
        ("extra", pd.concat([train, pd.DataFrame({"user_id": [0], "item_id": [12345]})])),
    ):
        serving.write_bundle(tmp_path / name, model, items, seen)
        loaded = serving.RecommenderModel()
        loaded.load_context(serving._Context({serving.ARTIFACT_KEY: str(tmp_path / name)}))
        answers.append(loaded.predict(None, pd.DataFrame({"user_id": [0, 1]}), {"k": 20}))
    pd.testing.assert_frame_equal(answers[0], answers[1])
