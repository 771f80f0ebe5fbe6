"""The served blend of the factorization model and EASE: its arithmetic, the share chosen on
validation, and what train_best logs and serves."""

from __future__ import annotations

import json

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
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


def test_the_served_model_ranks_by_the_blend(fitted, tmp_path) -> None:
    from recflow.serving import bundle
    from recflow.serving.pyfunc import RecommenderModel

    model, ease, rest, valid = fitted
    train, _ = checkerboard_data()
    items = pd.DataFrame({C.ITEM_COL: model.item_ids, C.TITLE_COL: "t", C.GENRES_COL: ""})
    bundle.write_bundle(tmp_path, model, items, train)
    bundle.write_blend(tmp_path, ease.weights, 0.5)
    served = RecommenderModel.from_bundle(tmp_path)
    users = model.user_ids[:6]
    got = served.predict(None, pd.DataFrame({C.USER_COL: users}), {"k": 3})
    ranker = Blended(model, ease.scorer, 0.5)
    scores = ranker.scores(model.user_positions(users))
    seen = train.groupby(C.USER_COL)[C.ITEM_COL].apply(set)
    for row, user in enumerate(users):
        order = [model.item_ids[i] for i in np.argsort(-scores[row], kind="stable")]
        expected = [i for i in order if i not in seen[user]][:3]
        assert got[got[C.USER_COL] == user][C.ITEM_COL].tolist() == expected
    np.testing.assert_allclose(
        got[C.SCORE_COL].iloc[0], np.sort(scores[0][~np.isin(model.item_ids, list(seen[users[0]]))])[-1],
        rtol=1e-5,
    )  # fmt: skip
    # A history and similar items still answer.
    history = served.predict(
        None, pd.DataFrame({C.USER_COL: [10**6], "history": [list(model.item_ids[:2])]}), {"k": 3}
    )  # fmt: skip
    assert (history["source"] == "history").all() and len(history) == 3
    similar = served.predict(None, pd.DataFrame({C.ITEM_COL: model.item_ids[:1]}), {"k": 2})
    assert (similar["source"] == "similar").all()


def test_train_best_serves_the_blend_it_tested(
    trained: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from recflow.model import blend as blend_module
    from tests.helpers import ok

    monkeypatch.setattr(blend_module, "SHARES", (0.5,))
    run_id = ok("train_best", ["--preprocess_run_id", trained["preprocess"],
                               "--hpo_run_id", trained["hpo"], "--ensemble", "1"])  # fmt: skip
    run = mlflow.get_run(run_id)
    assert float(run.data.params["blend.share"]) == 0.5
    assert f"{C.RANKFM_PREFIX}ndcg_at_10" in run.data.metrics
    model = mlflow.pyfunc.load_model(run.data.tags[C.TAG_MODEL_URI]).unwrap_python_model()
    assert model.share == 0.5 and model.ease_weights is not None
