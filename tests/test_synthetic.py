"""bench/synthetic.py: a scaled-down ML-25M shape keeps the counts, the 20-per-user floor and
every item rated, without duplicates, reproducibly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from bench.synthetic import MIN_PER_USER, SHAPES, _cover, generate
from recflow.constants import ITEM_COL, USER_COL

# ML-25M's long tail on 400 items: half of them expect a rating or two, so some go unrated
# by the sampler and must be covered.
SMALL = dataclasses.replace(
    SHAPES["ml-25m"], n_users=300, n_items=400, n_ratings=15_000, max_user_id=400,
    max_item_id=900,
)  # fmt: skip


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return generate(SMALL, np.random.default_rng(3)).ratings


def test_counts_floor_and_no_duplicates(small: pd.DataFrame) -> None:
    assert len(small) == SMALL.n_ratings
    per_user = small[USER_COL].value_counts()
    assert per_user.size == SMALL.n_users
    assert per_user.min() >= MIN_PER_USER
    assert not small.duplicated([USER_COL, ITEM_COL]).any()


def test_every_item_rated_and_tail_long(small: pd.DataFrame) -> None:
    per_item = small[ITEM_COL].value_counts()
    assert per_item.size == SMALL.n_items
    assert per_item.median() < per_item.mean() / 2  # a long tail, not a flat one


def test_seeded_reproducibility(small: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(generate(SMALL, np.random.default_rng(3)).ratings, small)
    assert not generate(SMALL, np.random.default_rng(4)).ratings.equals(small)


def test_cover_fills_unrated_items_from_the_head() -> None:
    # 60 users rating items 0-3 each; items 4 and 5 are unrated.
    rng = np.random.default_rng(0)
    pos = np.tile(np.arange(4), 60)
    sizes = np.full(60, 4)
    theta = rng.dirichlet(np.ones(2), 60)
    out = _cover(rng, pos, sizes, theta, np.array([0, 1, 0, 1, 0, 1]), 6, min_donor=2)
    assert np.bincount(out, minlength=6).min() >= 1
    assert (out != pos).sum() == 2
    for row in out.reshape(60, 4):  # still no duplicates per user
        assert np.unique(row).size == 4
    unchanged = np.random.default_rng(0)
    again = _cover(unchanged, out, sizes, theta, np.array([0, 1, 0, 1, 0, 1]), 6)
    np.testing.assert_array_equal(again, out)
    assert unchanged.random() == np.random.default_rng(0).random()  # no randomness consumed
