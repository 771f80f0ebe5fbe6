"""The pyfunc model in-process: save -> load -> predict, ranking, filtering, cold start, errors."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from recflow.evaluation.topk import top_k_finite
from recflow.model.recommender import FMParams, Recommender
from recflow.serving import bundle, parsing, pyfunc
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
    assert list(out.columns) == parsing.OUTPUT_COLS
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
        (pd.DataFrame({"user_id": [1]}), {"k": parsing.MAX_K + 1}, "k must be between"),
        (pd.DataFrame({"user_id": [1]}), {"k": "ten"}, "k must be an integer"),
        (pd.DataFrame({"user_id": ["a"]}), {}, "must be integers"),
        (pd.DataFrame({"user_id": [2.0**64]}), {}, "must be integers"),
        (pd.DataFrame({"user_id": range(parsing.MAX_USERS + 1)}), {}, "at most 1000 users"),
    ],
)
def test_bad_input_raises(saved, frame: pd.DataFrame, params: dict, message: str) -> None:
    direct, _, _ = saved
    with pytest.raises(parsing.BadRequest, match=message):
        direct.predict(None, frame, params)


def test_batch_scoring_lifts_the_per_request_limits(saved) -> None:
    direct, _, _ = saved
    many = pd.DataFrame({"user_id": np.arange(parsing.MAX_USERS + 1) % 20})
    direct.max_users = None
    try:
        assert len(direct.predict(None, many, {"k": 1})) == parsing.MAX_USERS + 1
        one = pd.DataFrame({"user_id": [1]})
        every = direct.predict(None, one, {"k": parsing.MAX_K + 1, "filter_seen": False})
        assert len(every) == len(direct.model.item_ids)  # k beyond the catalogue: all of it
    finally:
        del direct.max_users  # back to the class's limit


def test_seen_arrays_are_csr_over_model_positions() -> None:
    model = Recommender(
        FMParams(factors=1), np.array([10, 20]), np.array([1, 2, 3]),
        np.zeros((2, 2), np.float32), np.zeros((3, 2), np.float32), np.zeros(3, np.float32),
    )  # fmt: skip
    seen = pd.DataFrame(
        [(20, 3), (10, 1), (20, 1), (10, 1), (99, 2), (10, 7)], columns=["user_id", "item_id"]
    )
    arrays = bundle.seen_arrays(model, seen)
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
        bundle.write_bundle(tmp_path / name, model, items, seen)
        loaded = pyfunc.RecommenderModel.from_bundle(tmp_path / name)
        answers.append(loaded.predict(None, pd.DataFrame({"user_id": [0, 1]}), {"k": 20}))
    pd.testing.assert_frame_equal(answers[0], answers[1])


def test_the_test_splits_items_are_left_out_of_answers_too(tmp_path: Path) -> None:
    """Regression: the bundle's seen table is train+valid, so a served model recommended items
    of the user's test split (19 % of a top-10 in a review), which they had rated. Those are
    filtered now, for known users and their histories alike, and the scores are unchanged."""
    train, held = checkerboard_data()
    model = Recommender.fit(train, FMParams(factors=4, loss="bpr", epochs=2), seed=1)
    items = pd.DataFrame({"item_id": range(20), "title": "T", "genres": "G"})
    bundle.write_bundle(tmp_path / "old", model, items, train)  # as bundles were written
    bundle.write_bundle(tmp_path / "new", model, items, train, held)
    old, new = (pyfunc.RecommenderModel.from_bundle(tmp_path / n) for n in ("old", "new"))
    users = sorted(held.user_id.unique())
    asks = [
        pd.DataFrame({"user_id": users}),
        pd.DataFrame({"user_id": users, "history": [[3]] * len(users)}),
    ]
    for ask in asks:
        before, after = (m.predict(None, ask, {"k": 20}) for m in (old, new))
        theirs = set(map(tuple, held[["user_id", "item_id"]].to_numpy()))
        assert theirs & set(zip(before.user_id, before.item_id, strict=True))
        assert not theirs & set(zip(after.user_id, after.item_id, strict=True))
        kept = before.merge(after, on=["user_id", "item_id"], suffixes=("", "_after"))
        np.testing.assert_array_equal(kept.score, kept.score_after)
        unfiltered = new.predict(None, ask, {"k": 20, "filter_seen": False})
        pd.testing.assert_frame_equal(
            unfiltered, old.predict(None, ask, {"k": 20, "filter_seen": False})
        )


def _reference_predict(python_model, users: list[int], k: int, filter_seen: bool) -> pd.DataFrame:
    """predict's contract, one user at a time: score every item, drop seen ones, sort the rest
    best first (ties by item position), keep k; unknown users get the most popular items."""
    model = python_model.model
    popular = np.argsort(-python_model.popularity, kind="stable")
    rows, cols, scores = [], [], []
    for row, user in enumerate(users):
        p = model.user_positions(np.array([user]))[0]
        if p < 0:
            best, s = popular[:k], python_model.popularity
        else:
            s = model.scores(np.array([p]))[0]
            if filter_seen:
                lo, hi = python_model.seen_indptr[p], python_model.seen_indptr[p + 1]
                s[python_model.seen_indices[lo:hi]] = -np.inf
            best = np.argsort(-s, kind="stable")[:k]
            best = best[np.isfinite(s[best])]
        rows.append(np.full(len(best), row))
        cols.append(best)
        scores.append(s[best])
    row, col = np.concatenate(rows), np.concatenate(cols)
    known = model.user_positions(np.asarray(users))[row] >= 0
    return pd.DataFrame(
        {
            "user_id": np.asarray(users, dtype=np.int64)[row],
            "rank": np.concatenate([np.arange(1, len(c) + 1) for c in cols]),
            "item_id": model.item_ids[col],
            "title": python_model.titles[col],
            "genres": python_model.genres[col],
            "score": np.concatenate(scores).astype(float),
            "source": np.where(known, "model", "popular"),
        }
    )


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> pyfunc.RecommenderModel:
    """A random model of 40 users x 301 items with many tied scores, and seen items: user 100
    has seen all but 3 items, user 101 every item, user 102 none. Embeddings and biases are
    small multiples of 1/4, so every score is exact whatever order BLAS adds in."""
    rng = np.random.default_rng(10)
    n_users, n_items = 40, 301
    user_ids = np.arange(100, 100 + n_users)
    item_ids = np.sort(rng.choice(10_000, n_items, replace=False))
    user_emb = rng.integers(-8, 9, (n_users, 4)).astype(np.float32) / 4
    user_emb[-10:] = 0  # these users' scores are the item biases, which tie in fives
    model = Recommender(
        FMParams(factors=2), user_ids, item_ids, user_emb,
        rng.integers(-8, 9, (n_items, 4)).astype(np.float32) / 4,
        rng.integers(0, 60, n_items).astype(np.float32),
    )  # fmt: skip
    pairs = [(u, i) for u in user_ids[3:] for i in rng.choice(item_ids, 40)]
    pairs += [(100, i) for i in item_ids[3:]] + [(101, i) for i in item_ids]
    seen = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    items = pd.DataFrame({"item_id": item_ids, "title": [f"T{i}" for i in item_ids], "genres": "G"})
    folder = tmp_path_factory.mktemp("random")
    bundle.write_bundle(folder, model, items, seen)
    loaded = pyfunc.RecommenderModel.from_bundle(folder)
    return loaded


@pytest.mark.parametrize("k", [1, 10, 77, 301, parsing.MAX_K])
@pytest.mark.parametrize("filter_seen", [True, False])
def test_predict_equals_a_per_user_reference(
    random_model: pyfunc.RecommenderModel, k: int, filter_seen: bool
) -> None:
    """Guards the batched ranking (blocks of users, top-k bounded by set maxima, seen items set
    to -inf in place): same rows, ranks, items, scores and sources as ranking user by user, with
    unknown and repeated users, users who have seen (almost) everything, ties, k > n_items."""
    users = [*range(100, 140), 7, 100, 101, 99_999, 139]
    expected = _reference_predict(random_model, users, min(k, 301), filter_seen)
    got = random_model.predict(
        None, pd.DataFrame({"user_id": users}), {"k": k, "filter_seen": filter_seen}
    )
    pd.testing.assert_frame_equal(got, expected)


@pytest.mark.parametrize("block_bytes", [1, 4 * 301 * 7])
def test_predict_does_not_depend_on_the_block_size(
    random_model: pyfunc.RecommenderModel, block_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = pd.DataFrame({"user_id": [*range(100, 140), 5]})
    expected = random_model.predict(None, users, {"k": 10})
    monkeypatch.setattr(pyfunc, "BLOCK_BYTES", block_bytes)
    pd.testing.assert_frame_equal(random_model.predict(None, users, {"k": 10}), expected)


def test_no_users_gives_no_rows(random_model: pyfunc.RecommenderModel) -> None:
    out = random_model.predict(None, pd.DataFrame({"user_id": np.array([], dtype=np.int64)}))
    assert list(out.columns) == parsing.OUTPUT_COLS and out.empty


@pytest.mark.parametrize(
    ("n", "k"), [(1, 1), (5, 3), (130, 1), (1000, 10), (1000, 250), (997, 997)]
)
def test_top_k_finite_equals_a_full_sort(n: int, k: int) -> None:
    rng = np.random.default_rng(n + k)
    scores = rng.integers(0, 50, (6, n)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[0] = -np.inf
    rows, cols = top_k_finite(scores, k)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    finite = np.isfinite(np.take_along_axis(scores, order, axis=1))
    assert rows.tolist() == np.nonzero(finite)[0].tolist()
    assert cols.tolist() == order[finite].tolist()
