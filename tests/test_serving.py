"""The pyfunc model in-process: save -> load -> predict, ranking, filtering, cold start, errors."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from recflow import serving
from tests.helpers import save_checkerboard_pyfunc


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
