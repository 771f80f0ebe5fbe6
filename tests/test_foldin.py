"""Histories folded in at request time and similar items, in-process on the checkerboard model
(even users like even items, odd users odd items), plus bad histories and batch scoring."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from recflow.errors import UserError
from recflow.model import foldin
from recflow.serving import batch, parsing
from tests.helpers import save_checkerboard_pyfunc

NEW = 999  # a user the model never saw


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("foldin")
    python_model, train = save_checkerboard_pyfunc(tmp_path)
    return python_model, mlflow.pyfunc.load_model(str(tmp_path / "pyfunc")), train


def ask(model, rows: list[dict], **params) -> pd.DataFrame:
    return model.predict(None, pd.DataFrame.from_records(rows), {"k": 5, **params})


@pytest.mark.parametrize("block", [[0, 2, 4], [1, 3, 5]])
def test_a_new_user_whose_history_lies_in_one_block_gets_that_block(saved, block) -> None:
    direct, _, _ = saved
    out = ask(direct, [{"user_id": NEW, "history": block}])
    assert len(out) == 5 and set(out.source) == {"history"}
    assert {i % 2 for i in out.item_id} == {block[0] % 2}  # the block's parity
    assert not set(out.item_id) & set(block)  # the history is not recommended back
    assert out["history_ignored"].tolist() == [0] * 5
    assert out["rank"].tolist() == [1, 2, 3, 4, 5] and out.score.is_monotonic_decreasing


def test_a_known_users_history_adds_to_what_the_model_knew(saved) -> None:
    direct, _, train = saved
    seen = set(train.loc[train.user_id == 0, "item_id"])
    before = ask(direct, [{"user_id": 0}], k=20, filter_seen=False)
    # User 0 likes even items; a history of odd items moves them towards the odd block.
    after = ask(direct, [{"user_id": 0, "history": [1, 3, 5, 7, 9, 11]}], k=20)
    assert set(after.source) == {"history"}
    assert not set(after.item_id) & (seen | {1, 3, 5, 7, 9, 11})
    odd_before = before.set_index("item_id").score.loc[[13, 15, 17, 19]]
    odd_after = after.set_index("item_id").score.loc[[13, 15, 17, 19]]
    assert (odd_after > odd_before).all()


def test_the_same_request_gets_the_same_answer_alone_or_in_company(saved) -> None:
    direct, loaded, _ = saved
    alone = ask(direct, [{"user_id": NEW, "history": [0, 2, 4]}])
    again = ask(direct, [{"user_id": NEW, "history": [0, 2, 4]}])
    pd.testing.assert_frame_equal(alone, again)
    company = ask(
        direct,
        [{"user_id": 3}, {"user_id": NEW, "history": [0, 2, 4]}, {"user_id": 5, "history": [1]}],
    )
    mine = company[company.user_id == NEW].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, alone)
    # Through MLflow's pyfunc (schema checks, rows without a history as NaN) as well.
    rows = pd.DataFrame.from_records([{"user_id": NEW, "history": [0, 2, 4]}, {"user_id": 3}])
    through = loaded.predict(rows, params={"k": 5})
    pd.testing.assert_frame_equal(through[through.user_id == NEW].reset_index(drop=True), alone)
    assert set(through.loc[through.user_id == 3, "source"]) == {"model"}


def test_unknown_history_items_are_ignored_and_counted(saved) -> None:
    direct, _, _ = saved
    out = ask(
        direct, [{"user_id": NEW, "history": [0, 2, 4, 12345]}, {"user_id": 7, "history": []}]
    )
    assert out.loc[out.user_id == NEW, "history_ignored"].eq(1).all()
    assert set(out.loc[out.user_id == NEW, "source"]) == {"history"}
    assert set(out.loc[out.user_id == 7, "source"]) == {"model"}  # empty history: as before
    only_unknown = ask(direct, [{"user_id": NEW, "history": [12345, 54321]}])
    assert set(only_unknown.source) == {"popular"}
    assert only_unknown["history_ignored"].eq(2).all()


def test_recent_items_weigh_more() -> None:
    assert foldin.recency_weights(3, 0) is None
    w = foldin.recency_weights(11, 5.0)
    assert w.mean() == pytest.approx(1.0) and w[5] == pytest.approx(w[0] / 2)
    assert np.all(np.diff(w) < 0)  # latest first


def test_similar_items_are_block_mates(saved) -> None:
    direct, loaded, _ = saved
    out = loaded.predict(pd.DataFrame({"item_id": [4, 7, 12345]}), params={"k": 5})
    assert list(out.columns) == parsing.SIMILAR_COLS
    for item, rows in out[out.similar_to != 12345].groupby("similar_to"):
        assert {i % 2 for i in rows.item_id} == {item % 2} and item not in set(rows.item_id)
        assert set(rows.source) == {"similar"} and rows.score.is_monotonic_decreasing
        assert rows.title.str.startswith("T").all()
        assert (rows.score <= 1.0 + 1e-6).all()  # cosines
    assert set(out.loc[out.similar_to == 12345, "source"]) == {"popular"}


# Bad requests that MLflow's pyfunc refuses before our code sees them (the signature types the
# column or param): our message, and MLflow's words the pyfunc caller gets instead.
MLFLOW_CHECKS_FIRST = {
    "'item_id' values must be integers": "Incompatible input types for column item_id",
    "half_life must be a number": "Failed to validate type and shape for 'half_life'",
}


@pytest.mark.parametrize(
    ("rows", "params", "message"),
    [
        ([{"user_id": 1, "history": "1,2"}], {}, "must be a list of item IDs, got str"),
        ([{"user_id": 1, "history": 5}], {}, "must be a list of item IDs, got int"),
        ([{"user_id": 1, "history": {"a": 1}}], {}, "must be a list of item IDs, got dict"),
        ([{"user_id": 1, "history": [1.5]}], {}, "must hold integer item IDs only"),
        ([{"user_id": 1, "history": ["a"]}], {}, "must hold integer item IDs only"),
        ([{"user_id": 1, "history": [True]}], {}, "must hold integer item IDs only"),
        ([{"user_id": 1, "history": [[1]]}], {}, "must hold integer item IDs only"),
        ([{"user_id": 1, "history": [1, [2]]}], {}, "must hold integer item IDs only"),
        ([{"user_id": 1, "history": np.array(5)}], {}, "must be a list of item IDs, got ndarray"),
        ([{"user_id": 1, "history": np.ones((2, 2))}], {}, "must be a list of item IDs"),
        ([{"user_id": 1, "history": [2**70]}], {}, "must hold integer item IDs only"),
        (
            [{"user_id": 1, "history": list(range(parsing.MAX_HISTORY + 1))}],
            {},
            f"has {parsing.MAX_HISTORY + 1} items; at most {parsing.MAX_HISTORY}",
        ),
        (
            [{"user_id": u, "history": list(range(400))} for u in range(13)],
            {},
            f"at most {parsing.MAX_REQUEST_HISTORY} history items per request, got 5200",
        ),
        ([{"user_id": 1, "item_id": 2}], {}, "not both"),
        ([{"item_id": 2, "history": [1]}], {}, "'history' goes with 'user_id' rows"),
        ([{"item_id": "x"}], {}, "'item_id' values must be integers"),
        # A float: the signature types half_life as a double, so pyfunc would say -1 as "-1.0".
        ([{"user_id": 1, "history": [1]}], {"half_life": -0.5}, "half_life must be a number >= 0"),
        ([{"user_id": 1, "history": [1]}], {"half_life": "x"}, "half_life must be a number"),
    ],
)
def test_bad_requests_say_what_is_wrong(saved, rows, params, message) -> None:
    direct, loaded, _ = saved
    frame = pd.DataFrame.from_records(rows)
    with pytest.raises(parsing.BadRequest, match=re.escape(message)) as ours:
        direct.predict(None, frame, params)
    # Through pyfunc (what the server calls): our own message, word for word, except where the
    # signature types a column or param and MLflow refuses the wrong type before our code runs
    # (MLFLOW_CHECKS_FIRST says which, and in what words). Either is a 400 from the server.
    with pytest.raises(MlflowException) as caught:
        loaded.predict(frame, params=params)
    said = caught.value.message
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    if message in MLFLOW_CHECKS_FIRST:
        assert MLFLOW_CHECKS_FIRST[message] in said and "Can not safely" in said
    else:
        assert said == ours.value.message


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_batch_scoring_takes_a_history_column(saved, tmp_path: Path, suffix: str) -> None:
    _, loaded, _ = saved
    frame = pd.DataFrame({"user_id": [NEW, 2, 3], "history": [[0, 2, 4], [], [12345, 1]]})
    users = tmp_path / f"users{suffix}"
    if suffix == ".csv":
        frame.assign(history=frame.history.map(str)).to_csv(users, index=False)
    else:
        frame.to_parquet(users)
    wanted = batch.users_frame(str(users), loaded)
    out = pd.concat(list(batch.recommend(loaded, wanted, 5)))
    assert out.groupby("user_id").source.first().to_dict() == {
        2: "model", 3: "history", NEW: "history",
    }  # fmt: skip
    assert out.groupby("user_id").history_ignored.first().to_dict() == {2: 0, 3: 1, NEW: 0}
    assert not {0, 2, 4} & set(out.loc[out.user_id == NEW, "item_id"])


def test_batch_scoring_has_no_history_limits_but_one_history_per_user(
    saved, tmp_path: Path
) -> None:
    _, loaded, _ = saved
    users = tmp_path / "users.parquet"
    # Items 0-15 over and over: over the server's per-request limit, leaving 16-19 to recommend.
    long = list(range(16)) * (parsing.MAX_HISTORY // 16 + 1)
    assert len(long) > parsing.MAX_HISTORY
    pd.DataFrame({"user_id": [NEW], "history": [long]}).to_parquet(users)
    out = pd.concat(list(batch.recommend(loaded, batch.users_frame(str(users), loaded), 5)))
    assert not out.empty and set(out.source) == {"history"}
    assert set(out.item_id) == {16, 17, 18, 19}  # every item outside the history, none in it
    pd.DataFrame({"user_id": [NEW, NEW], "history": [[0], [2]]}).to_parquet(users)
    with pytest.raises(UserError, match=f"user {NEW} is in more than one row"):
        batch.users_frame(str(users), loaded)


def test_batch_scoring_rejects_a_bad_history_naming_the_file(saved, tmp_path: Path) -> None:
    _, loaded, _ = saved
    users = tmp_path / "users.csv"
    users.write_text('user_id,history\n1,"[1, 2]"\n2,"1 2 3"\n')
    with pytest.raises(UserError, match=r"users.csv: 'history' of row 1 is not a JSON list"):
        batch.users_frame(str(users), loaded)
    users.write_text('user_id,history\n1,"[1, 2.5]"\n')
    with pytest.raises(UserError, match=r"users.csv: 'history' of row 0 must hold integer"):
        batch.users_frame(str(users), loaded)


@pytest.mark.realdata
def test_new_users_on_real_ml100k_beat_popularity_and_a_retrained_model(
    shared_ml100k: Path,
) -> None:
    """bench/new_users.py's protocol, one split seed (measured: fold-in NDCG@10 0.404,
    popularity 0.266, retrained 0.311): a guard against a fold-in that quietly stops learning."""
    from recflow.data.datasets import get_spec, parse_items, parse_ratings
    from recflow.testing.newusers import one_seed

    spec = get_spec("ml-100k")
    ratings, items = parse_ratings(spec, shared_ml100k), parse_items(spec, shared_ml100k)
    result = one_seed(ratings, items, 1492)
    fold, popular = result["fold-in"]["ndcg"], result["popularity"]["ndcg"]
    assert fold > 1.3 * popular, result
    assert fold > 0.85 * result["retrained"]["ndcg"], result
