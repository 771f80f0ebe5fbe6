"""Implicit filtering, k-core, the three splits and side features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recflow import preprocess
from recflow.errors import UserError


def big(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {"user_id": rng.integers(1, 101, 4000), "item_id": rng.integers(1, 81, 4000),
         "rating": rng.integers(1, 6, 4000).astype(float), "timestamp": rng.permutation(4000)}
    )  # fmt: skip
    return preprocess.to_implicit(df, 0)


def test_to_implicit_filters_and_keeps_latest_duplicate(ratings: pd.DataFrame) -> None:
    before = ratings.copy()
    assert len(preprocess.to_implicit(ratings, 0)) == len(ratings)
    assert (preprocess.to_implicit(ratings, 4).rating >= 4).all()
    dup = pd.concat([ratings, ratings.iloc[[0]].assign(rating=1.0, timestamp=10**9)])
    kept = preprocess.to_implicit(dup, 0)
    assert len(kept) == len(ratings)
    row = kept[(kept.user_id == ratings.user_id[0]) & (kept.item_id == ratings.item_id[0])]
    assert row.rating.item() == 1.0
    pd.testing.assert_frame_equal(ratings, before)  # inputs are not mutated


def test_k_core_reaches_a_fixed_point() -> None:
    core = preprocess.k_core(big(), 30, 30)
    assert (core.user_id.value_counts() >= 30).all() and (core.item_id.value_counts() >= 30).all()
    assert len(core) < len(big())


@pytest.mark.parametrize("how", preprocess.SPLITS)
def test_splits_are_disjoint_sized_and_known(how: str) -> None:
    df = big()
    parts = preprocess.split(df, how, 0.2, 0.1, np.random.default_rng(1))
    keys = [
        set(zip(p.user_id, p.item_id, strict=True)) for p in (parts.train, parts.valid, parts.test)
    ]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert len(parts.test) / len(df) == pytest.approx(0.2, abs=0.03)
    assert len(parts.valid) / len(df) == pytest.approx(0.1, abs=0.03)
    for part in (parts.valid, parts.test):
        assert set(part.user_id) <= set(parts.train.user_id)
        assert set(part.item_id) <= set(parts.train.item_id)
    again = preprocess.split(df, how, 0.2, 0.1, np.random.default_rng(1))
    pd.testing.assert_frame_equal(again.test, parts.test)
    other = preprocess.split(df, how, 0.2, 0.1, np.random.default_rng(2))
    if how != "time":  # time is deterministic by construction
        assert not other.test.equals(parts.test)


def test_time_split_holds_out_each_users_latest() -> None:
    df = big()
    parts = preprocess.split(df, "time", 0.2, 0.1, np.random.default_rng(0))
    last_train = parts.train.groupby("user_id").timestamp.max()
    first_valid = parts.valid.groupby("user_id").timestamp.min()
    first_test = parts.test.groupby("user_id").timestamp.min()
    last_valid = parts.valid.groupby("user_id").timestamp.max()
    assert (first_valid > last_train.reindex(first_valid.index)).all()
    common = first_test.index.intersection(last_valid.index)
    assert (first_test[common] > last_valid[common]).all()


def test_bad_split_input_is_refused(ratings: pd.DataFrame) -> None:
    with pytest.raises(UserError, match="unknown split"):
        preprocess.split(ratings, "fold", 0.2, 0.1, np.random.default_rng(0))
    with pytest.raises(UserError, match="sum to less than 1"):
        preprocess.split(ratings, "random", 0.6, 0.5, np.random.default_rng(0))
    one = ratings.iloc[:1]
    with pytest.raises(UserError, match="leaves the (valid|test) set empty"):
        preprocess.split(one, "user", 0.2, 0.1, np.random.default_rng(0))


def test_features_and_metadata() -> None:
    users = pd.DataFrame(
        {"user_id": [1, 2], "gender": ["F", "M"], "age": [23, 56], "occupation": ["a", "b"]}
    )
    uf = preprocess.user_features(users, np.array([2, 1, 3]))
    assert uf.user_id.tolist() == [1, 2, 3]
    assert (
        uf.loc[0, "gender_F"] == 1.0 and uf.loc[0, "age_18"] == 1.0 and uf.loc[1, "age_56"] == 1.0
    )
    assert (uf.iloc[2, 1:] == 0).all()  # no demographics: zeros
    items = pd.DataFrame({"item_id": [5, 6], "title": ["A", "B"], "genres": ["Drama|War", ""]})
    itf = preprocess.item_features(items, np.array([6, 5]))
    assert itf.columns.tolist() == ["item_id", "genre_Drama", "genre_War"]
    assert itf.loc[0, ["genre_Drama", "genre_War"]].tolist() == [1.0, 1.0]
    meta = preprocess.item_metadata(items, np.array([5, 7]))
    assert meta.title.tolist() == ["A", ""]
