"""Implicit feedback, k-core filtering, the three splits and side features."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recflow.data import preprocess as P
from recflow.errors import UserError

COLS = ["user_id", "item_id", "rating", "timestamp"]


def random_ratings(seed: int = 0, n_users: int = 150, n_items: int = 80) -> pd.DataFrame:
    """Unique (user, item) pairs, 8-40 per user, distinct timestamps in random order."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), size=rng.integers(8, 41), replace=False)
        rows += [(u, int(i), float(rng.integers(1, 6))) for i in items]
    df = pd.DataFrame(rows, columns=COLS[:3])
    df["timestamp"] = 10**9 + rng.permutation(len(df))
    return df


def pairs(df: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(df["user_id"], df["item_id"], strict=True))


def rows(df: pd.DataFrame) -> set[tuple]:
    return set(df[COLS].itertuples(index=False, name=None))


@pytest.fixture
def big() -> pd.DataFrame:
    return random_ratings()


# --- to_implicit and k_core -------------------------------------------------------------------


def test_to_implicit_keeps_ratings_at_or_above_the_threshold(ratings: pd.DataFrame) -> None:
    before = ratings.copy()
    out = P.to_implicit(ratings, 4)
    assert rows(out) == rows(ratings[ratings["rating"] >= 4])
    assert len(out) < len(ratings)  # the fixture has ratings below 4, so something was dropped
    assert list(out.index) == list(range(len(out)))
    pd.testing.assert_frame_equal(ratings, before)


def test_to_implicit_zero_keeps_everything(ratings: pd.DataFrame) -> None:
    assert rows(P.to_implicit(ratings, 0)) == rows(ratings)
    assert len(P.to_implicit(ratings, 0)) == len(ratings)


def test_negative_strengths_are_kept_only_from_minus_infinity() -> None:
    dislikes = pd.DataFrame(
        {"user_id": [1, 1, 2], "item_id": [1, 2, 1], "rating": [-1.0, 0.0, 2.0], "timestamp": 0}
    )
    assert len(P.to_implicit(dislikes, 0)) == 2
    assert len(P.to_implicit(dislikes, float("-inf"))) == 3


def test_to_implicit_keeps_the_latest_of_duplicate_pairs() -> None:
    df = pd.DataFrame(
        [
            (1, 10, 2.0, 300),
            (1, 10, 5.0, 100),
            (1, 10, 4.0, 200),
            (2, 10, 3.0, 50),
            (1, 11, 1.0, 1),
        ],
        columns=COLS,
    )
    out = P.to_implicit(df, 0)
    assert rows(out) == {(1, 10, 2.0, 300), (2, 10, 3.0, 50), (1, 11, 1.0, 1)}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("repeats", [False, True])
def test_to_implicit_orders_rows_as_a_stable_pandas_sort_would(seed: int, repeats: bool) -> None:
    # The fast path (unique pairs) packs keys into integers; both paths must give pandas' order,
    # ties on (user, timestamp) included, since the row order decides a seeded split.
    rng = np.random.default_rng(seed)
    n = 400
    df = pd.DataFrame({
        "user_id": rng.integers(-3, 12, n) * 10**6,
        "item_id": rng.permutation(n) if not repeats else rng.integers(0, 30, n),
        "rating": rng.integers(1, 6, n).astype(np.float32),
        "timestamp": rng.integers(0, 4, n) + 1_500_000_000,  # many ties within a user
    })  # fmt: skip
    expected = df.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    expected = expected.drop_duplicates(["user_id", "item_id"], keep="last")
    out = P.to_implicit(df, 0)
    pd.testing.assert_frame_equal(out, expected.reset_index(drop=True))


def test_k_core_iterates_to_a_fixed_point() -> None:
    # One pass drops user 3 and item 10; that leaves user 1 and item 12 with one interaction
    # each, and dropping those leaves user 2 and item 11 with one: the whole chain unravels.
    # The 2x2 block of users 4-5 and items 20-21 survives.
    chain = [(1, 10), (1, 11), (2, 11), (2, 12), (3, 12)]
    block = [(4, 20), (4, 21), (5, 20), (5, 21)]
    df = pd.DataFrame(chain + block, columns=["user_id", "item_id"])
    before = df.copy()
    out = P.k_core(df, 2, 2)
    assert pairs(out) == set(block)
    assert list(out.index) == list(range(len(out)))
    pd.testing.assert_frame_equal(df, before)


def _k_core_reference(df: pd.DataFrame, min_user: int, min_item: int) -> set[tuple[int, int]]:
    # Remove one offending pair at a time until none is left: slow, obviously right.
    kept = set(pairs(df))
    while True:
        users = pd.Series([u for u, _ in kept]).value_counts()
        items = pd.Series([i for _, i in kept]).value_counts()
        bad = [(u, i) for u, i in kept if users[u] < min_user or items[i] < min_item]
        if not bad:
            return kept
        kept -= set(bad)


# On this data (22, 28) takes 12 rounds to settle on ~2,100 rows; (30, 40) unravels to nothing.
@pytest.mark.parametrize(("min_user", "min_item"), [(1, 1), (10, 5), (22, 28), (30, 40)])
def test_k_core_matches_a_reference(big: pd.DataFrame, min_user: int, min_item: int) -> None:
    out = P.k_core(big, min_user, min_item)
    assert pairs(out) == _k_core_reference(big, min_user, min_item)
    if len(out):
        assert out["user_id"].value_counts().min() >= min_user
        assert out["item_id"].value_counts().min() >= min_item


# --- splits ----------------------------------------------------------------------------------


def check_split(df: pd.DataFrame, s: P.Splits) -> None:
    """Properties every split has: disjoint, drawn from df, valid/test known to train."""
    train, valid, test = rows(s.train), rows(s.valid), rows(s.test)
    assert len(train) == len(s.train) and len(valid) == len(s.valid) and len(test) == len(s.test)
    assert not (train & valid or train & test or valid & test)
    assert train | valid | test <= rows(df)
    for part in (s.valid, s.test):
        assert set(part["user_id"]) <= set(s.train["user_id"])
        assert set(part["item_id"]) <= set(s.train["item_id"])
        assert not part.empty
        assert list(part.index) == list(range(len(part)))


@pytest.mark.parametrize("how", P.SPLITS)
def test_split_on_the_tiny_ratings(ratings: pd.DataFrame, how: str) -> None:
    before = ratings.copy()
    s = P.split(ratings, how, 0.2, 0.2, np.random.default_rng(0))
    check_split(ratings, s)
    pd.testing.assert_frame_equal(ratings, before)


@pytest.mark.parametrize("how", P.SPLITS)
def test_split_on_larger_data(big: pd.DataFrame, how: str) -> None:
    s = P.split(big, how, 0.2, 0.1, np.random.default_rng(1))
    check_split(big, s)
    n = len(big)
    # Only a few valid/test rows fall away for lack of a training user or item.
    assert len(s.test) / n == pytest.approx(0.2, abs=0.02)
    assert len(s.valid) / n == pytest.approx(0.1, abs=0.02)
    assert len(s.train) / n == pytest.approx(0.7, abs=0.02)


def test_random_split_sizes_are_exact_before_filtering(big: pd.DataFrame) -> None:
    s = P.split(big, "random", 0.2, 0.1, np.random.default_rng(2))
    n = len(big)
    assert len(s.train) == n - round(0.2 * n) - round(0.1 * n)


def half_up(x: float) -> int:
    return math.floor(x + 0.5)


@pytest.mark.parametrize("how", ["user", "time"])
def test_per_user_splits_hold_out_each_users_fraction(big: pd.DataFrame, how: str) -> None:
    s = P.split(big, how, 0.2, 0.1, np.random.default_rng(3))
    sizes = big["user_id"].value_counts()
    train_sizes = s.train["user_id"].value_counts()
    for user, size in sizes.items():
        held = min(half_up(size * 0.3), size - 1)
        assert train_sizes[user] == size - held, user


def test_time_split_holds_out_each_users_latest(big: pd.DataFrame) -> None:
    s = P.split(big, "time", 0.2, 0.1, np.random.default_rng(4))
    for user, group in big.groupby("user_id"):
        train = s.train[s.train["user_id"] == user]
        valid = s.valid[s.valid["user_id"] == user]
        test = s.test[s.test["user_id"] == user]
        # Train is never filtered: it is exactly the user's earliest interactions.
        earliest = group.nsmallest(len(train), "timestamp")
        assert rows(train) == rows(earliest)
        if len(valid):
            assert train["timestamp"].max() < valid["timestamp"].min()
        if len(test):
            assert pd.concat([train, valid])["timestamp"].max() < test["timestamp"].min()
    # Time order does not depend on the seed.
    other = P.split(big, "time", 0.2, 0.1, np.random.default_rng(99))
    pd.testing.assert_frame_equal(s.test, other.test)


def test_time_split_on_the_tiny_ratings(ratings: pd.DataFrame) -> None:
    s = P.split(ratings, "time", 0.2, 0.2, np.random.default_rng(0))
    # Five interactions per user: the 5th (latest) goes to test, the 4th to valid.
    latest = ratings.sort_values("timestamp").groupby("user_id").tail(1)
    fourth = ratings.sort_values("timestamp").groupby("user_id").nth(-2)
    assert rows(s.test) <= rows(latest) and rows(s.valid) <= rows(fourth)
    assert rows(s.train) == rows(ratings) - rows(latest) - rows(fourth)


@pytest.mark.parametrize("how", ["random", "user"])
def test_seed_decides_the_split(big: pd.DataFrame, how: str) -> None:
    a = P.split(big, how, 0.2, 0.1, np.random.default_rng(5))
    b = P.split(big, how, 0.2, 0.1, np.random.default_rng(5))
    c = P.split(big, how, 0.2, 0.1, np.random.default_rng(6))
    for name in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert rows(a.test) != rows(c.test)


@pytest.mark.parametrize(
    ("how", "test_size", "valid_size", "empty"),
    [
        ("random", 0.01, 0.2, "test"),  # round(30 * 0.01) == 0
        ("user", 0.2, 0.05, "valid"),  # five per user: floor(5 * 0.25 + 0.5) - 1 == 0
        ("time", 0.05, 0.2, "test"),
    ],
)
def test_split_that_leaves_a_set_empty_is_refused(
    ratings: pd.DataFrame, how: str, test_size: float, valid_size: float, empty: str
) -> None:
    with pytest.raises(UserError, match=f"leaves the {empty} set empty"):
        P.split(ratings, how, test_size, valid_size, np.random.default_rng(0))


def test_split_with_one_interaction_per_user_is_refused() -> None:
    df = pd.DataFrame([(u, u, 5.0, u) for u in range(1, 50)], columns=COLS)
    for how in ("user", "time"):  # no user can give up their only interaction
        with pytest.raises(UserError, match="set empty"):
            P.split(df, how, 0.3, 0.3, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("test_size", "valid_size"),
    [(0, 0.1), (1, 0.1), (0.1, 0), (0.1, 1), (-0.1, 0.1), (0.5, 0.5), (0.6, 0.6)],
)
def test_bad_sizes_are_refused(ratings: pd.DataFrame, test_size: float, valid_size: float) -> None:
    with pytest.raises(UserError, match="must each be in"):
        P.split(ratings, "random", test_size, valid_size, np.random.default_rng(0))


def test_unknown_split_is_refused(ratings: pd.DataFrame) -> None:
    with pytest.raises(UserError, match="unknown split 'stratified'"):
        P.split(ratings, "stratified", 0.2, 0.2, np.random.default_rng(0))


# --- side features ---------------------------------------------------------------------------


@pytest.fixture
def users() -> pd.DataFrame:
    """ML-100K style demographics: exact ages."""
    return pd.DataFrame(
        {
            "user_id": [5, 1, 2, 3, 4, 6, 7],
            "gender": ["M", "F", "M", "F", "M", "F", "M"],
            "age": [7, 18, 24, 25, 49, 50, 73],
            "occupation": ["student", "writer", "student", "artist", "writer", "artist", "none"],
        }
    )


def test_user_features_one_hot(users: pd.DataFrame) -> None:
    before = users.copy()
    feats = P.user_features(users, np.array([7, 3, 1, 99, 5]))
    assert list(feats["user_id"]) == [1, 3, 5, 7, 99]
    assert list(feats.columns) == [
        "user_id", "gender_F", "gender_M",
        "age_1", "age_18", "age_25", "age_45", "age_50", "age_56",
        "occupation_artist", "occupation_none", "occupation_student", "occupation_writer",
    ]  # fmt: skip
    on = {
        u: sorted(c for c in feats.columns[1:] if row[c] == 1.0)
        for u, row in feats.set_index("user_id", drop=False).iterrows()
    }
    # Exact ages fall into ML-1M's buckets: 7 -> under 18, 73 -> 56+.
    assert on == {
        1: ["age_18", "gender_F", "occupation_writer"],
        3: ["age_25", "gender_F", "occupation_artist"],
        5: ["age_1", "gender_M", "occupation_student"],
        7: ["age_56", "gender_M", "occupation_none"],
        99: [],  # no demographics: all zeros
    }
    assert set(np.unique(feats.iloc[:, 1:].to_numpy())) == {0.0, 1.0}
    pd.testing.assert_frame_equal(users, before)


def test_user_features_ml1m_ages_map_to_themselves() -> None:
    ages = list(P.AGE_BINS)
    users = pd.DataFrame(
        {"user_id": range(len(ages)), "gender": "F", "age": ages, "occupation": "0"}
    )
    feats = P.user_features(users, np.arange(len(ages)))
    for uid, age in enumerate(ages):
        assert feats.loc[uid, f"age_{age}"] == 1.0
    assert feats.filter(like="age_").sum(axis=1).tolist() == [1.0] * len(ages)


def test_user_features_without_a_users_file() -> None:
    feats = P.user_features(None, np.array([3, 1, 2]))
    assert list(feats.columns) == ["user_id"] and list(feats["user_id"]) == [1, 2, 3]


@pytest.fixture
def items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [30, 10, 20, 40],
            "title": ["C (1999)", "A (1995)", "B (1997)", "D (2001)"],
            "genres": ["Drama", "Animation|Comedy", "Comedy|Drama", "Comedy"],
        }
    )


def test_item_features_flags_genres(items: pd.DataFrame) -> None:
    before = items.copy()
    feats = P.item_features(items, np.array([30, 10, 20, 99]))
    assert list(feats.columns) == ["item_id", "genre_Animation", "genre_Comedy", "genre_Drama"]
    assert feats.set_index("item_id").to_dict("index") == {
        10: {"genre_Animation": 1.0, "genre_Comedy": 1.0, "genre_Drama": 0.0},
        20: {"genre_Animation": 0.0, "genre_Comedy": 1.0, "genre_Drama": 1.0},
        30: {"genre_Animation": 0.0, "genre_Comedy": 0.0, "genre_Drama": 1.0},
        99: {"genre_Animation": 0.0, "genre_Comedy": 0.0, "genre_Drama": 0.0},
    }
    pd.testing.assert_frame_equal(items, before)


def test_item_without_genres_has_no_genre_flag(items: pd.DataFrame) -> None:
    # Regression: str.get_dummies turned "" into a bogus "genre_" column. The parsers map
    # "(no genres listed)" and ML-100K's "unknown" flag to "" (no genres), so it must stay zeros.
    items.loc[items["item_id"] == 40, "genres"] = ""
    feats = P.item_features(items, np.array([10, 20, 30, 40]))
    assert list(feats.columns) == ["item_id", "genre_Animation", "genre_Comedy", "genre_Drama"]
    assert feats.set_index("item_id").loc[40].sum() == 0.0


def test_item_metadata(items: pd.DataFrame) -> None:
    dup = pd.concat([items, items.assign(title="other")], ignore_index=True)
    before = dup.copy()
    meta = P.item_metadata(dup, np.array([40, 10, 99]))
    assert meta.to_dict("list") == {
        "item_id": [10, 40, 99],
        "title": ["A (1995)", "D (2001)", ""],
        "genres": ["Animation|Comedy", "Comedy", ""],
    }
    pd.testing.assert_frame_equal(dup, before)
