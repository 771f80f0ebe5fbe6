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
from recflow.evaluation.blending import Blended, blend_lambda, choose_blend
from recflow.model.blend import SHARES, EaseHalf, blend, standardised
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


def test_eases_half_blends_seen_items_and_a_history_alike() -> None:
    # Three users over four items: EASE's half scores a known user from the CSR of what they
    # saw, a history from its items (a repeat counts once), both as the row of X · B.
    weights = np.arange(16, dtype=np.float32).reshape(4, 4) / 10
    np.fill_diagonal(weights, 0.0)
    half = EaseHalf(weights, 0.25, np.array([0, 2, 3, 5]), np.array([0, 3, 1, 1, 2]))
    x = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 1, 1, 0]], dtype=np.float32)
    model = np.array([[0.5, 0.1, 0.9, 0.3], [2.0, 1.0, 0.0, 3.0]], dtype=np.float32)
    users = np.array([2, 0])
    np.testing.assert_allclose(
        half.known(model, users), blend(model, x[users] @ weights, 0.25), rtol=1e-6
    )
    np.testing.assert_allclose(
        half.history(model[0], np.array([2, 1, 2])),
        blend(model[:1], x[2:] @ weights, 0.25)[0],
        rtol=1e-6,
    )


def test_the_blend_takes_the_grid_lambda_under_the_one_ease_alone_was_chosen_with() -> None:
    grid = (10.0, 50.0, 100.0, 200.0, 500.0)
    assert blend_lambda(500.0, grid) == 200.0
    assert blend_lambda(200.0, grid) == 100.0
    assert blend_lambda(10.0, grid) == 10.0  # nothing under the smallest: the smallest
    assert blend_lambda(777.0, grid) == 500.0  # a λ off the grid: the grid's next under it
    assert blend_lambda(500.0) == 200.0  # the grid EASE alone is chosen from


def test_the_share_chosen_is_the_one_that_scores_best_on_validation(fitted) -> None:
    model, ease, rest, valid = fitted
    choice = choose_blend(model, rest, valid, "ndcg", 5, ease)
    assert choice.lam == (ease.lam if choice.share == 1.0 else blend_lambda(ease.lam))
    assert set(choice.validation) == set(SHARES)
    assert choice.validation[choice.share] == max(choice.validation.values())
    # The ends are the two scorers alone: share 0 the model, share 1 EASE alone at its own λ
    # as the baseline ranked it there.
    from recflow.evaluation.accuracy import Holdout

    alone = Holdout.of(model, rest, valid).evaluate(model.scores, 5)["ndcg_at_5"]
    assert choice.validation[0.0] == alone
    assert choice.validation[1.0] == ease.validation[ease.lam]


def test_where_ease_alone_wins_it_is_served_at_its_own_lambda(fitted) -> None:
    _, ease, rest, valid = fitted
    untrained = Recommender.fit(rest, FMParams(factors=4, loss="bpr", epochs=1, sigma=1e-4,
                                               learning_rate=1e-6), seed=2)  # fmt: skip
    perfect = baselines.Ease(ease.lam, {**ease.validation, ease.lam: 1.0}, ease.x, ease.weights)
    choice = choose_blend(untrained, rest, valid, "ndcg", 5, perfect)
    # EASE alone (here scoring a perfect 1.0) beats every blend: share 1 at EASE alone's λ.
    assert (choice.share, choice.lam) == (1.0, ease.lam)


def test_ties_go_to_the_smallest_share(fitted) -> None:
    model, _, rest, valid = fitted
    # A share so small the blend ranks as the model alone: the two shares tie.
    _, ease, _, _ = fitted
    choice = choose_blend(model, rest, valid, "ndcg", 5, ease, shares=(1e-9, 0.0))
    assert choice.share == 0.0


def test_a_blended_ranker_is_tested_like_the_model(fitted) -> None:
    model, ease, rest, valid = fitted
    train, test = checkerboard_data()
    served = Blended(model, ease.scorer, 1.0)
    report = R.test_report(served, train, test, [5], {C.EASE_PREFIX: ease.scorer})
    # Share 1 serves EASE's ranking: the two rows of figures agree.
    assert report.metrics["test_ndcg_at_5"] == report.metrics["ease_ndcg_at_5"]


def test_train_best_logs_the_lambda_and_share_it_chose_and_the_model_alone(
    trained: dict[str, str],
) -> None:
    run = mlflow.get_run(trained["train"])
    chosen = json.loads(mlflow.artifacts.load_text(f"runs:/{trained['train']}/{C.BLEND_FILE}"))
    share = float(run.data.params["blend.share"])
    assert chosen["share"] == share
    alone = float(run.data.params["ease.lambda"])
    assert chosen["lambda"] == (alone if share == 1.0 else blend_lambda(alone))
    scores = chosen["validation"]
    assert set(scores) == {str(s) for s in SHARES}
    assert scores[str(share)] == max(scores.values())
    # The blend's λ is logged exactly when a blend is served, and so is the model alone.
    assert ("blend.ease_lambda" in run.data.params) == (share > 0)
    if share > 0:
        assert float(run.data.params["blend.ease_lambda"]) == chosen["lambda"]
    alone = {k for k in run.data.metrics if k.startswith(C.RANKFM_PREFIX)}
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


def test_train_best_serves_the_model_alone_from_the_blends_size_on(
    trained: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From BLEND_BELOW training interactions on, the share is not chosen (one more training):
    EASE is still fitted and logged beside the model, which is served alone, and a tag says
    why."""
    from recflow.evaluation import blending
    from tests.helpers import ok

    monkeypatch.setattr(blending, "BLEND_BELOW", 10)
    run_id = ok("train_best", ["--preprocess_run_id", trained["preprocess"],
                               "--hpo_run_id", trained["hpo"], "--ensemble", "1"])  # fmt: skip
    run = mlflow.get_run(run_id)
    assert "from 10 on the share would be chosen" in run.data.tags[C.TAG_BLEND_SKIPPED]
    assert "blend.share" not in run.data.params and "ease.lambda" in run.data.params
    assert f"{C.EASE_PREFIX}ndcg_at_10" in run.data.metrics
    model = mlflow.pyfunc.load_model(run.data.tags[C.TAG_MODEL_URI]).unwrap_python_model()
    assert model.ease is None


def test_train_best_serves_the_blend_it_tested(
    trained: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The served EASE half is refitted on train+valid at the blend's λ, which need not be the λ
    EASE alone was chosen with."""
    from recflow.evaluation import blending
    from recflow.model import blend as blend_module
    from recflow.model.ease import ease_weights, interactions
    from tests.helpers import ok

    monkeypatch.setattr(blend_module, "SHARES", (0.5,))
    monkeypatch.setattr(blending, "LAMBDAS", (777.0,))  # not in EASE alone's grid
    run_id = ok("train_best", ["--preprocess_run_id", trained["preprocess"],
                               "--hpo_run_id", trained["hpo"], "--ensemble", "1"])  # fmt: skip
    run = mlflow.get_run(run_id)
    assert float(run.data.params["blend.share"]) == 0.5
    assert float(run.data.params["blend.ease_lambda"]) == 777.0
    assert float(run.data.params["ease.lambda"]) in baselines.EASE_LAMBDAS
    assert f"{C.RANKFM_PREFIX}ndcg_at_10" in run.data.metrics
    model = mlflow.pyfunc.load_model(run.data.tags[C.TAG_MODEL_URI]).unwrap_python_model()
    assert model.ease is not None and model.ease.share == 0.5
    indptr = model.seen_indptr
    users = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    x = interactions(users, model.seen_indices, indptr.size - 1, model.ease.weights.shape[0])
    np.testing.assert_allclose(
        model.ease.weights, ease_weights((x.T @ x).toarray(), 777.0), rtol=1e-4, atol=1e-6
    )
