"""Ranking metrics: known answers, and the vectorised pass against a plain reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recflow.metrics import METRICS, evaluate, parse_metric, popularity_scorer, ranking_metrics


def reference(scores: np.ndarray, seen: set, relevant: set, k: int) -> dict[str, float]:
    """Straightforward per-user loops with sorted() and sets."""
    users = sorted({u for u, _ in relevant})
    totals = dict.fromkeys(METRICS, 0.0)
    for u in users:
        rel = {i for uu, i in relevant if uu == u}
        candidates = [i for i in range(scores.shape[1]) if (u, i) not in seen]
        ranked = sorted(candidates, key=lambda i: (-scores[u, i], i))[:k]
        hits = [i in rel for i in ranked]
        dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
        totals["precision"] += sum(hits) / k
        totals["recall"] += sum(hits) / len(rel)
        totals["ndcg"] += dcg / idcg
        totals["hit_rate"] += float(any(hits))
        totals["mrr"] += 1 / (hits.index(True) + 1) if any(hits) else 0.0
    return {f"{m}_at_{k}": v / len(users) for m, v in totals.items()}


def pairs(s: set) -> tuple[np.ndarray, np.ndarray]:
    arr = np.array(sorted(s), dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


@pytest.mark.parametrize("k", [1, 3, 10])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_data(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = 30, 25
    # Distinct scores: the reference breaks ties by item id, argpartition need not.
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float64)
    seen = {(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.3}
    relevant = {
        (u, i) for u in range(n_users) for i in range(n_items)
        if (u, i) not in seen and rng.random() < 0.2
    }  # fmt: skip
    ours = evaluate(
        lambda users: scores[users], n_items, pairs(seen), pairs(relevant), k, batch_size=7
    )
    expected = reference(scores, seen, relevant, k)
    assert ours.keys() == expected.keys()
    for name in ours:
        assert ours[name] == pytest.approx(expected[name], abs=1e-9), name


def test_perfect_ranking_scores_one_and_no_hits_zero() -> None:
    # User 0 relevant {0, 1}; items ranked 0 > 1 > 2 > 3.
    scores = np.array([[4.0, 3.0, 2.0, 1.0]])
    rel = (np.array([0, 0]), np.array([0, 1]))
    none = (np.array([], dtype=int), np.array([], dtype=int))
    perfect = evaluate(lambda u: scores[u], 4, none, rel, k=2)
    assert perfect == {
        "precision_at_2": 1.0, "recall_at_2": 1.0, "ndcg_at_2": 1.0,
        "hit_rate_at_2": 1.0, "mrr_at_2": 1.0,
    }  # fmt: skip
    miss = evaluate(lambda u: -scores[u], 4, none, rel, k=2)
    assert set(miss.values()) == {0.0}


def test_hand_computed_example() -> None:
    # Hits at ranks 2 and 3 of k=3; 4 relevant items.
    # DCG = 1/log2(3) + 1/log2(4) = 0.63093 + 0.5 = 1.13093
    # IDCG (3 of 4 relevant fit in k=3) = 1 + 0.63093 + 0.5 = 2.13093 -> NDCG = 0.53072
    # precision 2/3, recall 2/4, hit 1, MRR 1/2
    m = ranking_metrics(np.array([[False, True, True]]), np.array([4]))
    assert m["ndcg"][0] == pytest.approx(1.13093 / 2.13093, abs=1e-5)
    assert m["precision"][0] == pytest.approx(2 / 3)
    assert m["recall"][0] == 0.5 and m["hit_rate"][0] == 1.0 and m["mrr"][0] == 0.5


def test_seen_items_are_never_ranked() -> None:
    scores = np.array([[9.0, 8.0, 1.0]])
    # The two best items were seen: the only rankable item is 2, and it is relevant.
    out = evaluate(
        lambda u: scores[u],
        3,
        (np.array([0, 0]), np.array([0, 1])),
        (np.array([0]), np.array([2])),
        k=1,
    )
    assert out["precision_at_1"] == 1.0


def test_popularity_ranks_by_count() -> None:
    scorer = popularity_scorer(np.array([2, 2, 2, 0, 1, 1]), 3)
    assert scorer(np.array([0, 5])).tolist() == [[1.0, 2.0, 3.0]] * 2


@pytest.mark.parametrize("name", ["ndcg@10", "ndcg_at_10", "hit_rate@5", "mrr@1"])
def test_parse_metric_accepts(name: str) -> None:
    assert parse_metric(name)[0] in METRICS


@pytest.mark.parametrize("name", ["auc@10", "ndcg@0", "ndcg", "ndcg@x"])
def test_parse_metric_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric(name)
