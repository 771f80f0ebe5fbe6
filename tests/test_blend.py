"""The served blend of the factorization model and EASE: its arithmetic, the share chosen on
validation, and what train_best logs and serves."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from recflow import constants as C
from recflow.evaluation import baselines
from recflow.evaluation import report as R
from recflow.evaluation.blending import Blended, choose_share
from recflow.model.blend import SHARES, blend, standardised
from recflow.model.recommender import FMParams, Recommender
from tests.helpers import checkerboard_data


def test_standardised_rows_have_mean_zero_and_unit_spread() -> None:
    z = standardised(np.array([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(z[0].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(z[0].std(), 1.0, rtol=1e-6)
    assert z[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # a constant row, not a division by zero


def test_a_blend_weighs_each_scorer_by_its_share_after_standardising() -> None:
    model = np.array([[0.0, 1.0, 2.0]])  # z: [-1.2247, 0, 1.2247]
    ease = np.array([[30.0, 20.0, 10.0]])  # the opposite order on another scale
    np.testing.assert_allclose(blend(model, ease, 0.5), [[0.0, 0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(blend(model, ease, 0.25), [[-0.6124, 0.0, 0.6124]], atol=1e-4)
    assert np.argmax(blend(model, ease, 0.0)) == 2 and np.argmax(blend(model, ease, 1.0)) == 0


@pytest.fixture(scope="module")
def fitted() -> tuple[Recommender, baselines.Ease, object, object]:
    train, test = checkerboard_data()
    valid = train.sample(frac=0.2, random_state=0)
    rest = train.drop(valid.index)
    model = Recommender.fit(rest, FMParams(factors=4, loss="bpr", epochs=5), seed=1)
    ease = baselines.fit_ease(model, rest, valid, train, "ndcg", 5)
    return model, ease, rest, valid


def test_the_share_chosen_is_the_one_that_scores_best_on_validation(fitted) -> None:
    model, ease, rest, valid = fitted
    share, validation = choose_share(model, ease.on_train, rest, valid, "ndcg", 5)
    assert set(validation) == set(SHARES)
    assert validation[share] == max(validation.values())
    # The ends are the two scorers alone, ranked as the plain scorers rank.
    from recflow.evaluation.accuracy import Holdout

    holdout = Holdout.of(model, rest, valid)
    assert validation[0.0] == holdout.evaluate(model.scores, 5)["ndcg_at_5"]
    assert validation[1.0] == holdout.evaluate(ease.on_train, 5)["ndcg_at_5"]


def test_a_blended_ranker_is_tested_like_the_model(fitted) -> None:
    model, ease, rest, valid = fitted
    train, test = checkerboard_data()
    served = Blended(model, ease.scorer, 1.0)
    report = R.test_report(served, train, test, [5], {C.EASE_PREFIX: ease.scorer})
    # Share 1 serves EASE's ranking: the two rows of figures agree.
    assert report.metrics["test_ndcg_at_5"] == report.metrics["ease_ndcg_at_5"]


def test_train_best_logs_the_share_it_chose_and_the_model_alone(trained: dict[str, str]) -> None:
    run = mlflow.get_run(trained["train"])
    chosen = json.loads(mlflow.artifacts.load_text(f"runs:/{trained['train']}/{C.BLEND_FILE}"))
    share = float(run.data.params["blend.share"])
    assert chosen["share"] == share and set(chosen["validation"]) == {str(s) for s in SHARES}
    assert chosen["validation"][str(share)] == max(chosen["validation"].values())
    alone = {k for k in run.data.metrics if k.startswith(C.RANKFM_PREFIX)}
    # The model alone is reported exactly when the served model is a blend.
    assert bool(alone) == (share > 0)
