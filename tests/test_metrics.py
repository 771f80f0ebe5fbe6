"""Ranking metrics: pinned values, a plain-Python reference, seen-item exclusion, metric names."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recflow.evaluation import accuracy, baselines, beyond, topk
from recflow.evaluation import names as N
from recflow.evaluation import report as R
from recflow.model.recommender import FMParams, Recommender


def as_pairs(sets: dict[int, set[int]]) -> tuple[np.ndarray, np.ndarray]:
    """{user: items} -> (user positions, item positions)."""
    u = [user for user, items in sets.items() for _ in items]
    i = [item for items in sets.values() for item in items]
    return np.asarray(u, dtype=np.int64), np.asarray(i, dtype=np.int64)


def matrix_scorer(scores: np.ndarray) -> accuracy.Scorer:
    return lambda users: scores[users]


def reference(
    scores: np.ndarray, seen: dict[int, set[int]], relevant: dict[int, set[int]], k: int
) -> dict[str, float]:
    """Metrics at k the slow, obvious way: one user at a time, sorted(), sets."""
    per_user: dict[str, list[float]] = {m: [] for m in N.METRICS}
    for user, rel in relevant.items():
        if not rel:
            continue
        candidates = [i for i in range(scores.shape[1]) if i not in seen.get(user, set())]
        ranking = sorted(candidates, key=lambda i: -scores[user, i])[:k]
        hits = [item in rel for item in ranking]
        dcg = sum(1 / math.log2(r + 2) for r, hit in enumerate(hits) if hit)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
        first = next((r + 1 for r, hit in enumerate(hits) if hit), None)
        per_user["precision"].append(sum(hits) / k)
        per_user["recall"].append(sum(hits) / len(rel))
        per_user["ndcg"].append(dcg / idcg)
        per_user["hit_rate"].append(float(any(hits)))
        per_user["mrr"].append(1 / first if first else 0.0)
    return {f"{m}_at_{k}": sum(v) / len(v) for m, v in per_user.items()}


# --- pinned values ---------------------------------------------------------------------------


def test_perfect_ranking_scores_one() -> None:
    n_items = 10
    relevant = {0: {7, 8, 9}, 1: {0, 1, 2}, 2: {4, 5, 6}}
    scores = np.zeros((3, n_items))
    for user, items in relevant.items():
        scores[user, list(items)] = [3.0, 2.0, 1.0]
    got = accuracy.evaluate(matrix_scorer(scores), n_items, as_pairs({}), as_pairs(relevant), 3)
    assert got == {name: 1.0 for name in N.metric_names(3)}
    # With k larger than the relevant sets, only precision falls (3 hits out of 10 slots).
    got = accuracy.evaluate(matrix_scorer(scores), n_items, as_pairs({}), as_pairs(relevant), 10)
    assert got == pytest.approx(
        {"precision_at_10": 0.3, "recall_at_10": 1.0, "ndcg_at_10": 1.0, "hit_rate_at_10": 1.0,
         "mrr_at_10": 1.0}
    )  # fmt: skip


def test_no_hits_scores_zero() -> None:
    n_items = 10
    relevant = {0: {0, 1}, 1: {2}}
    scores = np.tile(np.arange(n_items, dtype=float), (2, 1))  # items 0-2 rank last
    got = accuracy.evaluate(matrix_scorer(scores), n_items, as_pairs({}), as_pairs(relevant), 5)
    assert got == {name: 0.0 for name in N.metric_names(5)}


def test_hand_computed_example() -> None:
    # Items 0..5 score 10, 9, 8, 7, 6, 5. Item 0 is seen, so the top 3 is [1, 2, 3]; the relevant
    # items are {2, 3, 5}, so hits are [no, yes, yes].
    #   precision = 2/3, recall = 2/3, hit rate = 1, MRR = 1/2 (first hit at rank 2)
    #   DCG  = 1/log2(3) + 1/log2(4)          = 0.6309298 + 0.5       = 1.1309298
    #   IDCG = 1/log2(2) + 1/log2(3) + 1/log2(4) = 1 + 0.6309298 + 0.5 = 2.1309298
    #   NDCG = 1.1309298 / 2.1309298 = 0.5307212
    scores = np.array([[10.0, 9, 8, 7, 6, 5]])
    got = accuracy.evaluate(
        matrix_scorer(scores), 6, as_pairs({0: {0}}), as_pairs({0: {2, 3, 5}}), 3
    )
    assert got == pytest.approx(
        {"precision_at_3": 2 / 3, "recall_at_3": 2 / 3, "ndcg_at_3": 0.5307212,
         "hit_rate_at_3": 1.0, "mrr_at_3": 0.5},
        abs=1e-7,
    )  # fmt: skip


def test_mean_is_over_users_with_held_out_items() -> None:
    # User 0 hits at rank 1, user 1 misses, user 2 has nothing held out and does not count.
    scores = np.array([[3.0, 2, 1], [3.0, 2, 1], [3.0, 2, 1]])
    got = accuracy.evaluate(
        matrix_scorer(scores), 3, as_pairs({2: {0}}), as_pairs({0: {0}, 1: {2}}), 1
    )
    assert got["hit_rate_at_1"] == 0.5 and got["mrr_at_1"] == 0.5


def test_a_pair_held_out_twice_is_one_relevant_item() -> None:
    scores = np.array([[3.0, 2, 1]])
    relevant = (np.array([0, 0, 0]), np.array([0, 0, 2]))
    got = accuracy.evaluate(matrix_scorer(scores), 3, as_pairs({}), relevant, 1)
    assert got["recall_at_1"] == 0.5 and got["precision_at_1"] == 1.0


def test_no_held_out_interactions_is_an_error() -> None:
    with pytest.raises(ValueError, match="no held-out"):
        accuracy.evaluate(matrix_scorer(np.zeros((2, 3))), 3, as_pairs({0: {1}}), as_pairs({}), 2)


# --- against the reference -------------------------------------------------------------------


def random_case(
    seed: int, n_users: int = 60, n_items: int = 30
) -> tuple[np.ndarray, dict[int, set[int]], dict[int, set[int]]]:
    """Random scores (no ties) and disjoint random seen / held-out sets, some of them empty."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_users, n_items))
    seen, relevant = {}, {}
    for user in range(n_users):
        items = rng.permutation(n_items)
        n_seen = int(rng.integers(0, 26))  # up to 25 seen: some users have < k unseen items
        n_rel = int(rng.integers(0, 5)) if rng.random() < 0.8 else 0
        if n_seen:
            seen[user] = set(items[:n_seen].tolist())
        if n_rel:
            relevant[user] = set(items[n_seen : n_seen + n_rel].tolist())
    return scores, seen, relevant


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 10, 30])
@pytest.mark.parametrize("batch_size", [7, 1024])
def test_evaluate_matches_the_reference(seed: int, k: int, batch_size: int) -> None:
    scores, seen, relevant = random_case(seed)
    got = accuracy.evaluate(
        matrix_scorer(scores), scores.shape[1], as_pairs(seen), as_pairs(relevant), k, batch_size
    )
    expected = reference(scores, seen, relevant, k)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_seen_items_are_never_ranked() -> None:
    scores, seen, relevant = random_case(3)
    # Make every seen item the best-scored one; excluding them must make that irrelevant.
    boosted = scores.copy()
    for user, items in seen.items():
        boosted[user, list(items)] += 100.0
    args = (scores.shape[1], as_pairs(seen), as_pairs(relevant), 5)
    assert accuracy.evaluate(matrix_scorer(boosted), *args) == pytest.approx(
        accuracy.evaluate(matrix_scorer(scores), *args), abs=1e-12
    )


def test_top_k_is_sorted_best_first() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 40))
    rows, cols = topk.top_k_finite(scores, 7)
    assert rows.tolist() == np.repeat(np.arange(5), 7).tolist()
    np.testing.assert_array_equal(cols.reshape(5, 7), np.argsort(-scores, axis=1)[:, :7])


def test_popularity_scorer_ranks_by_training_count() -> None:
    train_items = np.array([3, 3, 3, 1, 1, 4, 0, 3, 1])  # counts: 0->1, 1->3, 2->0, 3->4, 4->1
    scorer = baselines.popularity_scorer(train_items, 6)
    scores = scorer(np.array([0, 5, 2]))
    assert scores.shape == (3, 6)
    np.testing.assert_array_equal(scores[1], [1, 3, 0, 4, 1, 0])
    assert topk.top_k_finite(np.array(scores), 2)[1].tolist() == [3, 1] * 3


def test_evaluate_model_and_popularity_use_ids_and_skip_unknown_pairs() -> None:
    rng = np.random.default_rng(4)
    user_ids, item_ids = np.array([10, 20, 30, 40]), np.array([100, 200, 300, 400, 500, 600])
    model = Recommender(
        FMParams(), user_ids, item_ids,
        rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32),
        rng.normal(size=6).astype(np.float32),
    )  # fmt: skip
    seen = pd.DataFrame(
        {"user_id": [10, 10, 20, 30, 30, 40, 99], "item_id": [100, 300, 300, 300, 600, 100, 100]}
    )
    held = pd.DataFrame(
        {"user_id": [10, 20, 20, 30, 40, 99], "item_id": [200, 100, 999, 500, 300, 200]}
    )
    # Positions: user 10 -> 0, ..., item 100 -> 0, ...; user 99 and item 999 are unknown: dropped.
    seen_pos = {0: {0, 2}, 1: {2}, 2: {2, 5}, 3: {0}}
    held_pos = {0: {1}, 1: {0}, 2: {4}, 3: {2}}
    assert accuracy.evaluate_model(model, seen, held, 2) == pytest.approx(
        reference(model.scores(np.arange(4)), seen_pos, held_pos, 2), abs=1e-9
    )
    # Popularity among known pairs: item 300 three times, 100 twice (user 99 does not count),
    # 600 once. Best unseen item per user: 10 -> 600 (miss), 20 -> 100 (hit), 30 -> 100 (miss),
    # 40 -> 300 (hit); so every metric at 1 is 2/4.
    got = baselines.evaluate_popularity(model, seen, held, 1)
    assert got == {name: 0.5 for name in N.metric_names(1)}


def test_test_report_logs_both_recommenders_accuracy_and_beyond() -> None:
    rng = np.random.default_rng(5)
    user_ids, item_ids = np.arange(1, 31), np.arange(101, 141)
    model = Recommender(
        FMParams(), user_ids, item_ids,
        rng.normal(size=(30, 4)).astype(np.float32), rng.normal(size=(40, 4)).astype(np.float32),
        np.zeros(40, dtype=np.float32),
    )  # fmt: skip
    seen = pd.DataFrame({"user_id": np.repeat(user_ids, 3), "item_id": rng.choice(item_ids, 90)})
    seen = seen.drop_duplicates()
    test = pd.DataFrame({"user_id": user_ids, "item_id": rng.choice(item_ids, 30)})
    test = test.merge(seen, how="left", indicator=True).query("_merge == 'left_only'")
    test = test.drop(columns="_merge")
    report = R.test_report(model, seen, test, [10, 5])
    for prefix in ("test_", "popularity_"):
        for k in (5, 10):
            for name in (*N.METRICS, *beyond.BEYOND_ACCURACY):
                assert f"{prefix}{name}_at_{k}" in report.metrics
        assert report.tallies[prefix].exposure.shape == (R.CURVE_K, 40)
    # The one pass agrees with evaluating on its own.
    assert {
        f"test_{k}": v for k, v in accuracy.evaluate_model(model, seen, test, 10).items()
    }.items() <= (report.metrics.items())
    assert report.popularity.sum() == len(seen)
    # Popularity shows everyone nearly the same list: far fewer items, far more concentrated.
    assert report.metrics["popularity_coverage_at_10"] < report.metrics["test_coverage_at_10"]
    assert report.metrics["popularity_gini_at_10"] > report.metrics["test_gini_at_10"]
    assert report.metrics["popularity_novelty_at_10"] < report.metrics["test_novelty_at_10"]


# --- beyond accuracy -------------------------------------------------------------------------


def test_beyond_accuracy_hand_computed_example() -> None:
    # 4 users; items shown 2, 1, 1, 0 times; held by 4, 2, 1 and 1 training users.
    #   coverage = 3/4
    #   gini: ascending [0, 1, 1, 2] weighted by 2i - n - 1 = [-3, -1, 1, 3] -> 6 / (4 * 4)
    #   novelty: -log2(share) = [0, 1, 2, 2], weighted by shown -> (0 + 1 + 2) / 4
    #   avg popularity: (2 * 4 + 2 + 1) / 4
    got = beyond.beyond_accuracy(np.array([2, 1, 1, 0]), np.array([4, 2, 1, 1]), n_users=4)
    assert got == pytest.approx(
        {"coverage": 0.75, "gini": 0.375, "novelty": 0.75, "avg_popularity": 2.75}
    )


def test_beyond_accuracy_of_a_perfectly_even_recommender() -> None:
    got = beyond.beyond_accuracy(np.full(8, 3), np.full(8, 5), n_users=10)
    assert got == pytest.approx({"coverage": 1.0, "gini": 0.0, "novelty": 1.0, "avg_popularity": 5})


def test_beyond_accuracy_of_a_maximally_concentrated_recommender() -> None:
    popularity = np.array([1, 2, 3, 8])
    got = beyond.beyond_accuracy(np.array([0, 0, 0, 5]), popularity, n_users=8)
    assert got == pytest.approx(
        {"coverage": 0.25, "gini": 0.75, "novelty": 0.0, "avg_popularity": 8}
    )


def test_beyond_accuracy_needs_recommendations() -> None:
    with pytest.raises(ValueError, match="no recommendations"):
        beyond.beyond_accuracy(np.zeros(3, dtype=int), np.ones(3), n_users=2)


# --- metric names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ndcg@10", ("ndcg", 10)),
        ("ndcg_at_10", ("ndcg", 10)),
        ("hit_rate@5", ("hit_rate", 5)),
        ("hit_rate_at_5", ("hit_rate", 5)),
        ("mrr@1", ("mrr", 1)),
    ],
)
def test_parse_metric_accepts(name: str, expected: tuple[str, int]) -> None:
    assert N.parse_metric(name) == expected


@pytest.mark.parametrize(
    "name", ["foo@10", "ndcg@0", "ndcg", "ndcg@", "ndcg@ten", "ndcg@-1", "NDCG@10", "@10"]
)
def test_parse_metric_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        N.parse_metric(name)


def test_metric_names_round_trip() -> None:
    logged = N.metric_names(20)
    assert logged == [
        "precision_at_20",
        "recall_at_20",
        "ndcg_at_20",
        "hit_rate_at_20",
        "mrr_at_20",
    ]
    assert [N.parse_metric(n) for n in logged] == [(m, 20) for m in N.METRICS]
