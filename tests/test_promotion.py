"""The promotion policy as a pure function: no tracking server, no registry."""

from __future__ import annotations

import pytest

from recflow.errors import UserError
from recflow.tracking.promotion import (
    COMMON_TEST_SET,
    SAME_TEST_SET,
    HeadToHead,
    Model,
    Policy,
    comparable,
    decide,
    rule,
)

DATA = {"dataset": "ml-100k", "checksum": "sha256:ab", "split": "random", "testset_digest": "fe"}


def model(ndcg: float, version: str = "", **lineage: str) -> Model:
    return Model({**DATA, **lineage}, {"test_ndcg_at_10": ndcg}, version)


POLICY = Policy("champion", "ndcg@10")


def test_the_first_version_is_promoted() -> None:
    assert decide(model(0.1), None, POLICY).promote
    assert decide(model(0.1), None, POLICY).reason == "first version under @champion"


def test_a_better_model_is_promoted_and_an_equal_one_is_not() -> None:
    better = decide(model(0.31), model(0.30, "4"), POLICY)
    assert better.promote and better.reason == "test_ndcg_at_10 0.3100 beats 0.3000 + 0.0"
    same = decide(model(0.30), model(0.30, "4"), POLICY)
    assert not same.promote
    assert same.reason == (
        "test_ndcg_at_10 0.3000 does not beat @champion version 4 (0.3000) by more than 0.0"
    )


def test_min_improvement_is_an_absolute_margin() -> None:
    policy = Policy("champion", "ndcg@10", min_improvement=0.02)
    assert not decide(model(0.315), model(0.30, "1"), policy).promote
    assert decide(model(0.325), model(0.30, "1"), policy).promote


def test_the_metric_decides_at_its_own_k() -> None:
    policy = Policy("champion", "recall@20")
    assert policy.key == "test_recall_at_20"
    ours = Model(DATA, {"test_ndcg_at_10": 0.1, "test_recall_at_20": 0.5})
    theirs = Model(DATA, {"test_ndcg_at_10": 0.9, "test_recall_at_20": 0.4}, "2")
    assert decide(ours, theirs, policy).promote


def test_models_of_another_dataset_are_not_compared_unless_forced() -> None:
    other = model(0.9, "3", dataset="ml-1m")
    with pytest.raises(UserError, match="are not comparable") as refused:
        decide(model(0.1), other, POLICY)
    assert "\n" not in str(refused.value)
    assert "'dataset': 'ml-1m'" in str(refused.value)
    forced = decide(model(0.1), other, Policy("champion", "ndcg@10", force=True))
    assert forced.promote and forced.reason == "force_promote=true"


def test_another_item_column_or_metric_is_not_compared() -> None:
    with pytest.raises(UserError, match="'item_col': 'movie'.* are not comparable"):
        decide(model(0.3), model(0.2, "3", item_col="movie"), POLICY)
    judged = model(0.2, "3", metric="recall@20")
    with pytest.raises(UserError, match=r"registered on recall@20, this model on ndcg@10"):
        rule(model(0.3), judged, POLICY)
    # The same metric however spelled; versions from before the tags read as the defaults.
    assert rule(model(0.3), model(0.2, "3", metric="ndcg_at_10"), POLICY) == SAME_TEST_SET
    assert rule(model(0.3, item_col="item_id"), model(0.2, "3"), POLICY) == SAME_TEST_SET


def test_new_data_of_the_same_dataset_compares_on_the_common_test_set() -> None:
    # A grown archive (another checksum) split again (another test set), or the same data split
    # another way: the same dataset and item column.
    for grown in (
        model(0.1, "3", checksum="sha256:cd", testset_digest="0123456789abcdef"),
        model(0.1, "3", split="time", testset_digest="0123456789abcdef"),
    ):
        assert not comparable(model(0.3), grown)
        assert rule(model(0.3), grown, POLICY) == COMMON_TEST_SET
        # Their recorded figures come from different test sets: they cannot decide.
        with pytest.raises(ValueError, match="need both scored there"):
            decide(model(0.3), grown, POLICY)
        better = decide(model(0.3), grown, POLICY, HeadToHead(COMMON_TEST_SET, 0.25, 0.2))
        assert better.promote
        assert better.reason == "test_ndcg_at_10 0.2500 beats 0.2000 + 0.0 on the common test set"
        # The head-to-head figures decide, not the recorded ones (0.3 against 0.1).
        worse = decide(model(0.3), grown, POLICY, HeadToHead(COMMON_TEST_SET, 0.2, 0.25))
        assert not worse.promote
        assert worse.reason == (
            "test_ndcg_at_10 0.2000 does not beat @champion version 3 (0.2500) by more than 0.0 "
            "on the common test set"
        )
        margin = Policy("champion", "ndcg@10", min_improvement=0.1)
        assert not decide(model(0.3), grown, margin, HeadToHead(COMMON_TEST_SET, 0.25, 0.2)).promote
    with pytest.raises(ValueError, match="compare on the same test set"):
        decide(model(0.3), model(0.1, "3"), POLICY, HeadToHead(COMMON_TEST_SET, 0.25, 0.2))


def test_popularity_still_gates_a_retrained_model() -> None:
    grown = model(0.1, "3", checksum="sha256:cd", testset_digest="0123456789abcdef")
    below = decide(with_baselines(0.2, 0.3), grown, POLICY, HeadToHead(COMMON_TEST_SET, 0.9, 0.1))
    assert not below.promote and "does not beat popularity" in below.reason


def test_an_unknown_metric_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown metric 'auc@10'"):
        decide(model(0.1), model(0.2, "1"), Policy("champion", "auc@10"))


def with_baselines(ndcg: float, popularity: float, ease: float | None = None) -> Model:
    metrics = {"test_ndcg_at_10": ndcg, "popularity_ndcg_at_10": popularity}
    if ease is not None:
        metrics["ease_ndcg_at_10"] = ease
    return Model(DATA, metrics)


def test_a_model_that_does_not_beat_popularity_is_not_promoted_even_first() -> None:
    """Regression: a model below popularity on its own test set (0.2245 against 0.2275) was made
    @champion as the first version."""
    decision = decide(with_baselines(0.2245, 0.2275, ease=0.2301), None, POLICY)
    assert not decision.promote
    assert decision.reason == (
        "test_ndcg_at_10 0.2245 does not beat popularity on its own test set "
        "(popularity 0.2275, EASE 0.2301)"
    )
    assert not decide(with_baselines(0.2275, 0.2275), model(0.1, "2"), POLICY).promote
    forced = decide(with_baselines(0.2, 0.3), None, Policy("champion", "ndcg@10", force=True))
    assert forced.promote


def test_reasons_carry_the_baselines() -> None:
    decision = decide(with_baselines(0.45, 0.2, ease=0.5), None, POLICY)
    assert decision.promote
    assert decision.reason == "first version under @champion (popularity 0.2000, EASE 0.5000)"
