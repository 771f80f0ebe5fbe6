"""Tuning on a sample of users and validating on a sample: parsing, resolving, sampling, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recflow.data.preprocess import Prepared
from recflow.errors import UserError
from recflow.hpo import fidelity
from recflow.hpo.fidelity import Fidelity, apply, parse_users, resolve


def prepared(n_users: int = 100, per_user: int = 10) -> Prepared:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(1, n_users + 1), per_user)
    items = rng.integers(1, 50, len(users))
    frame = pd.DataFrame({"user_id": users, "item_id": items}).drop_duplicates()
    valid = frame.groupby("user_id").head(1)
    train = frame.drop(valid.index)
    uf = pd.DataFrame({"user_id": np.arange(1, n_users + 1), "f": 1.0})
    itf = pd.DataFrame({"item_id": np.arange(1, 50), "g": 1.0})
    return Prepared(train, valid, valid.iloc[:0], uf, itf, itf[["item_id"]])


@pytest.mark.parametrize(("text", "value"), [("auto", "auto"), ("ALL", "all"), ("250", 250),
                                             ("250.0", 250)])  # fmt: skip
def test_parse_users_accepts(text: str, value: str | int) -> None:
    assert parse_users("sample_users", text) == value


@pytest.mark.parametrize("text", ["0", "-3", "2.5", "many", "", "nan", "inf", "1e400"])
def test_parse_users_refuses_with_the_parameter_named(text: str) -> None:
    with pytest.raises(UserError, match="^eval_users must be 'auto', 'all' or a positive integer"):
        parse_users("eval_users", text)


def test_auto_keeps_small_data_whole_and_bounds_big_data(monkeypatch) -> None:
    data = prepared(100, 10)  # ~820 training rows, 100 validation users
    assert resolve(data, "auto", "auto") == Fidelity(None, None)
    assert resolve(data, "auto", "auto").label == ""
    monkeypatch.setattr(fidelity, "AUTO_TRAIN_ROWS", 450)
    monkeypatch.setattr(fidelity, "AUTO_EVAL_USERS", 20)
    got = resolve(data, "auto", "auto")
    # 450 rows' worth of users; 20 of their validation users.
    assert got == Fidelity(round(100 * 450 / len(data.train)), 20)
    assert got.label == f"users={got.sample_users},eval=20"
    assert resolve(data, "all", "all") == Fidelity(None, None)
    assert resolve(data, 100, 100) == Fidelity(None, None)  # "all of them" by number


def test_counts_beyond_the_data_are_refused() -> None:
    data = prepared(100, 10)
    with pytest.raises(UserError, match="sample_users=101 is more than the 100 users"):
        resolve(data, 101, "auto")
    with pytest.raises(UserError, match="eval_users=101 is more than the 100 users"):
        resolve(data, "all", 101)
    with pytest.raises(UserError, match="eval_users=40 is more than the .* validation users left"):
        apply(data, resolve(data, 20, 40), seed=1)


def test_a_sample_without_validation_users_names_the_parameter() -> None:
    data = prepared(100, 10)
    data = Prepared(data.train, data.valid[data.valid.user_id > 90], *list(vars(data).values())[2:])
    with pytest.raises(UserError, match="sample_users=1 leaves no validation user"):
        apply(data, Fidelity(1, None), seed=3)


def test_apply_samples_users_reproducibly_and_leaves_test_alone() -> None:
    data = prepared(100, 10)
    a = apply(data, Fidelity(30, 10), seed=7)
    b = apply(data, Fidelity(30, 10), seed=7)
    c = apply(data, Fidelity(30, 10), seed=8)
    pd.testing.assert_frame_equal(a.train, b.train)
    assert set(a.train.user_id) != set(c.train.user_id)
    assert a.train.user_id.nunique() == 30
    assert a.valid.user_id.nunique() == 10 and set(a.valid.user_id) <= set(a.train.user_id)
    assert set(a.valid.item_id) <= set(a.train.item_id)
    assert set(a.user_features.user_id) == set(a.train.user_id)
    assert set(a.item_features.item_id) == set(a.train.item_id)
    assert a.test is data.test and a.items is data.items
    # Validation sampled alone keeps every training user.
    v = apply(data, Fidelity(None, 10), seed=7)
    assert v.train.equals(data.train.reset_index(drop=True)) and v.valid.user_id.nunique() == 10
