"""Baselines beside the tuned model: EASE's closed form, its λ choice and memory budget, the
baselines in train_best's report and main's ratios to them."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from recflow import constants as C
from recflow.evaluation import baselines
from recflow.evaluation import report as R
from recflow.model import ease
from recflow.model.recommender import FMParams, Recommender
from recflow.tracking import pipeline
from tests.helpers import checkerboard_data, ok


def test_ease_weights_of_two_items_worked_by_hand() -> None:
    # X = [[1, 1], [1, 0]], λ = 1: XᵀX + λI = [[3, 1], [1, 2]], P = [[2, -1], [-1, 3]] / 5,
    # B = I - P / diag(P) = [[0, 1/3], [1/2, 0]].
    x = baselines.interactions(np.array([0, 0, 1]), np.array([0, 1, 0]), 2, 2)
    weights = baselines.ease_weights((x.T @ x).toarray(), 1.0)
    np.testing.assert_allclose(weights, [[0, 1 / 3], [1 / 2, 0]], rtol=1e-6)


def test_ease_weights_are_each_items_ridge_regression_on_the_others() -> None:
    """Steck's closed form equals, column by column, the direct solve it replaces: item j's
    weights minimise ||X_j - X_{-j} b||² + λ||b||² over the other items (B_jj = 0)."""
    rng = np.random.default_rng(3)
    dense = (rng.random((40, 12)) < 0.3).astype(float)
    users, items = np.nonzero(dense)
    x = baselines.interactions(users, items, 40, 12)
    lam = 2.5
    weights = baselines.ease_weights((x.T @ x).toarray(), lam)
    for j in range(12):
        others = np.delete(np.arange(12), j)
        a = dense[:, others]
        b = np.linalg.solve(a.T @ a + lam * np.eye(11), a.T @ dense[:, j])
        np.testing.assert_allclose(weights[others, j], b, rtol=1e-4, atol=1e-6)
        assert weights[j, j] == 0


@pytest.mark.parametrize("order", ["C", "F"])
def test_ease_weights_in_the_grams_own_memory_equal_a_direct_inverse(
    order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Cholesky inverse in place, mirrored a block of rows at a time (blocks of 5 here, so
    that 12 items span three, the last one short), equals np.linalg.inv's closed form; a Gram
    that is not C-ordered float64 is copied, never inverted wrongly in a copy LAPACK made."""
    monkeypatch.setattr(ease, "MIRROR_ROWS", 5)
    rng = np.random.default_rng(4)
    dense = (rng.random((60, 12)) < 0.3).astype(np.float64)
    g = np.asarray(dense.T @ dense, order=order)
    p = np.linalg.inv(g + 3.0 * np.eye(12))
    expected = p / -np.diag(p)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(ease.ease_weights(g.astype(np.float32), 3.0), expected, rtol=1e-5)
    owned = g.copy(order=order)
    np.testing.assert_allclose(ease.ease_weights(owned, 3.0, overwrite=True), expected, rtol=1e-5)
    assert (order == "C") == (not np.array_equal(owned, g))  # worked in place only when it can
    with pytest.raises(ValueError, match="C-ordered float64"):
        ease.spd_inverse(np.asfortranarray(g))


def test_the_gram_built_in_column_blocks_is_xtx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baselines, "GRAM_BLOCK", 5)
    rng = np.random.default_rng(5)
    dense = (rng.random((30, 12)) < 0.3).astype(np.float32)
    users, items = np.nonzero(dense)
    x = baselines.interactions(users, items, 30, 12)
    for dtype in (np.float32, np.float64):
        g = baselines.gram(x, dtype)
        assert g.dtype == dtype and g.flags.c_contiguous
        np.testing.assert_array_equal(g, dense.T @ dense)


def test_repeated_pairs_count_once() -> None:
    x = baselines.interactions(np.array([0, 0, 0]), np.array([1, 1, 2]), 1, 3)
    assert x.toarray().tolist() == [[0, 1, 1]]


def test_ease_fits_a_movielens_catalogue_and_says_why_not_beyond_its_budget() -> None:
    assert baselines.ease_fits(3_706) is None  # ML-1M
    assert baselines.ease_fits(10_677) is None  # ML-10M
    assert baselines.ease_fits(26_744) is not None  # ML-20M
    reason = baselines.ease_fits(59_047)  # ML-25M
    assert reason is not None and "59,047 items need 52.0 GiB" in reason and "2.0 GiB" in reason


@pytest.fixture(scope="module")
def checkerboard_fit() -> tuple[Recommender, pd.DataFrame, pd.DataFrame]:
    train, test = checkerboard_data()
    model = Recommender.fit(train, FMParams(factors=4, loss="bpr", epochs=20), seed=1)
    return model, train, test


def test_ease_chooses_the_lambda_that_scores_best_on_validation(checkerboard_fit) -> None:
    model, train, test = checkerboard_fit
    valid = train.sample(frac=0.2, random_state=0)
    rest = train.drop(valid.index)
    ease = baselines.fit_ease(model, rest, valid, train, "ndcg", 5, lambdas=(0.1, 10.0, 1e6))
    assert set(ease.validation) == {0.1, 10.0, 1e6}
    assert ease.validation[ease.lam] == max(ease.validation.values())
    # Even users like even items, odd users odd ones: EASE ranks the held-out item first.
    report = R.test_report(model, train, test, [5], {C.EASE_PREFIX: ease.scorer})
    assert report.metrics["ease_mrr_at_5"] == 1.0


def test_every_test_metric_has_its_ease_twin(checkerboard_fit) -> None:
    model, train, test = checkerboard_fit
    ease = baselines.fit_ease(model, train, test, train, "ndcg", 5)
    report = R.test_report(model, train, test, [5, 10], {C.EASE_PREFIX: ease.scorer})
    ours = {k.removeprefix(C.TEST_PREFIX) for k in report.metrics if k.startswith(C.TEST_PREFIX)}
    for prefix in (C.POPULARITY_PREFIX, C.EASE_PREFIX):
        assert {k.removeprefix(prefix) for k in report.metrics if k.startswith(prefix)} == ours


def test_train_best_logs_ease_beside_popularity(trained: dict[str, str]) -> None:
    run = mlflow.get_run(trained["train"])
    names = {k.removeprefix(C.TEST_PREFIX) for k in run.data.metrics if k.startswith("test_")}
    assert names and all(C.EASE_PREFIX + n in run.data.metrics for n in names)
    chosen = json.loads(
        mlflow.artifacts.load_text(f"runs:/{trained['train']}/{C.EASE_FILE}")
    )  # fmt: skip
    assert float(run.data.params["ease.lambda"]) == chosen["lambda"]
    assert set(chosen["validation"]) == {str(lam) for lam in baselines.EASE_LAMBDAS}
    assert C.TAG_EASE_SKIPPED not in run.data.tags


def test_train_best_skips_ease_over_its_memory_budget(
    trained: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(baselines, "EASE_BUDGET", 1024)
    run_id = ok("train_best", ["--preprocess_run_id", trained["preprocess"],
                               "--hpo_run_id", trained["hpo"], "--ensemble", "1"])  # fmt: skip
    run = mlflow.get_run(run_id)
    assert "over its 0.0 GiB budget" in run.data.tags[C.TAG_EASE_SKIPPED]
    assert not any(k.startswith(C.EASE_PREFIX) for k in run.data.metrics)
    assert "test_ndcg_at_10" in run.data.metrics and "ease.lambda" not in run.data.params


def test_main_reports_the_models_ratio_to_each_baseline() -> None:
    metrics = {
        "test_ndcg_at_10": 0.45, "ease_ndcg_at_10": 0.5, "popularity_ndcg_at_10": 0.2,
        "test_coverage_at_10": 0.3, "ease_coverage_at_10": 0.1, "popularity_ndcg_at_5": 0.0,
        "test_ndcg_at_5": 0.4,
    }  # fmt: skip
    ratios = pipeline.ratios(metrics)
    assert ratios == pytest.approx({"vs_ease_ndcg_at_10": 0.9, "vs_popularity_ndcg_at_10": 2.25})
    done = [pipeline.StepRun("register", "r1", False, 1.0)]
    lines = pipeline.summary(done, "m", metrics | ratios, {}, "0", "ndcg@10")
    assert "ndcg_at_10 0.4500: 0.90x EASE (0.5000), 2.25x popularity (0.2000)" in lines
