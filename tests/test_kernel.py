"""The training kernel's membership check: its index of seen items and its two ways of reading it.

(That the kernel trains as rankfmc's own does is checked in test_model.py.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recflow.model import kernel
from recflow.model.recommender import FMParams, Recommender


def test_seen_items_index_each_users_distinct_items() -> None:
    rng = np.random.default_rng(3)
    users = rng.integers(0, 7, 300).astype(np.int32)
    items = rng.integers(0, 21, 300).astype(np.int32)  # 21 items: the bitmap's last byte is partial
    users[:5] = 6  # a user whose items arrive unordered and repeated
    ptr, idx, bits = kernel.seen_items(users, items, 8, 21)  # user 7 has no items
    pairs = set(zip(users.tolist(), items.tolist(), strict=True))
    for u in range(8):
        row = idx[ptr[u] : ptr[u + 1]]
        assert row.tolist() == sorted({i for v, i in pairs if v == u})
        unpacked = np.unpackbits(bits[u], bitorder="little")[:21]
        assert np.flatnonzero(unpacked).tolist() == row.tolist()


def test_without_room_for_a_bitmap_only_the_rows_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "BITMAP_BYTES", 10)
    ptr, idx, bits = kernel.seen_items(
        np.array([0, 1], np.int32), np.array([5, 80], np.int32), 2, 90
    )
    assert bits.size == 0 and ptr.tolist() == [0, 1, 2] and idx.tolist() == [5, 80]


@pytest.mark.parametrize("features", ["none", "item"])
def test_bitmap_and_binary_search_train_identically(
    monkeypatch: pytest.MonkeyPatch, features: str
) -> None:
    # Both answer "has this user seen that item?" the same, so the training is the same bit for bit.
    rng = np.random.default_rng(5)
    heavy = pd.DataFrame({"user_id": 0, "item_id": np.arange(1, 70)})  # all items but one
    light = pd.DataFrame({"user_id": rng.integers(1, 50, 900), "item_id": rng.integers(0, 70, 900)})
    train = pd.concat([heavy, light]).drop_duplicates().reset_index(drop=True)
    items = np.arange(70)
    itf = pd.DataFrame({"item_id": items, "g": (items % 4 == 0).astype(float)})
    params = FMParams(factors=4, epochs=3, features=features, max_samples=30)
    # Which index each epoch was handed: the kernel reads the bitmap when it has rows, else it
    # binary-searches the users' sorted items.
    bitmap_rows: list[int] = []
    train_epoch = kernel.train_epoch

    def spy(rows, pairs, weight, seen, *rest) -> None:
        bitmap_rows.append(seen[2].shape[0])
        train_epoch(rows, pairs, weight, seen, *rest)

    monkeypatch.setattr(kernel, "train_epoch", spy)
    n_users = train.user_id.nunique()
    with_bits = Recommender.fit(train, params, 2, item_features=itf)
    assert bitmap_rows == [n_users] * 3
    monkeypatch.setattr(kernel, "BITMAP_BYTES", 0)
    searched = Recommender.fit(train, params, 2, item_features=itf)
    assert bitmap_rows == [n_users] * 3 + [0] * 3  # the second fit searched every epoch
    np.testing.assert_array_equal(with_bits.user_emb, searched.user_emb)
    np.testing.assert_array_equal(with_bits.item_emb, searched.item_emb)


@pytest.mark.parametrize("rank_weight", [1.0, 0.5, 0.0])
def test_warp_weighs_a_step_by_its_rank_weight_to_the_power_rank_weight(
    rank_weight: float,
) -> None:
    # Worked by hand: every weight 0, so every item scores 0 and the first negative drawn
    # violates the margin (1 draw: rank estimate 7 // 1 of 8 items, weight log 7 / log 8), the
    # logistic factor is 1 / (e^0 + 1) = 1/2, and without regularisation the positive's bias
    # moves by rate * weight ** rank_weight / 2 and the negative's by as much the other way.
    n_items, factors, rate = 8, 2, 0.1
    pairs = np.array([[0, 3]], np.int32)
    w = (
        np.zeros(n_items, np.float32), np.zeros(0, np.float32),
        np.zeros((1, factors), np.float32), np.zeros((n_items, factors), np.float32),
        np.zeros((0, factors), np.float32), np.zeros((0, factors), np.float32),
    )  # fmt: skip
    kernel.train_epoch(
        np.arange(1, dtype=np.int32), pairs, np.ones(1, np.float32),
        kernel.seen_items(pairs[:, 0], pairs[:, 1], 1, n_items), np.zeros((1, 0), np.float32),
        np.zeros((n_items, 0), np.float32), w, 0.0, 0.0, rate, 20, kernel.lcg_states(1),
        rank_weight,
    )  # fmt: skip
    step = rate * (np.log(7) / np.log(8)) ** rank_weight / 2
    moved = np.flatnonzero(w[0])
    assert w[0][3] == pytest.approx(step, rel=1e-6)
    assert len(moved) == 2 and w[0][moved[moved != 3][0]] == pytest.approx(-step, rel=1e-6)
