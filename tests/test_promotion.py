"""The promotion policy as a pure function: no tracking server, no registry."""

from __future__ import annotations

import pytest

from recflow.errors import UserError
from recflow.tracking.promotion import Model, Policy, comparable, decide

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


def test_models_from_other_data_are_not_compared_unless_forced() -> None:
    other = model(0.9, "3", split="time")
    with pytest.raises(UserError, match="are not comparable"):
        decide(model(0.1), other, POLICY)
    forced = decide(model(0.1), other, Policy("champion", "ndcg@10", force=True))
    assert forced.promote and forced.reason == "force_promote=true"


def test_another_test_set_is_not_compared_even_on_the_same_split() -> None:
    other = Model({**DATA, "testset_digest": "0123456789abcdef"}, {"test_ndcg_at_10": 0.9}, "3")
    assert not comparable(model(0.1), other)
    with pytest.raises(UserError, match="are not comparable"):
        decide(model(0.1), other, POLICY)


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
