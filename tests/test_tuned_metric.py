"""The tuned metric is the tested and the promoted one; any valid search space works."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from recflow.hpo.space import Dimension, max_epochs
from tests.helpers import ok


def test_train_best_tests_at_the_tuned_k_and_register_gates_on_it(prep_id: str) -> None:
    """Regression: train_best logged test metrics at k=10 only, so a model tuned on recall@20
    could not be promoted on recall@20 ("train run ... has no test_recall_at_20")."""
    tuned = ok("hpo", ["--preprocess_run_id", prep_id, "--n_trials", "1", "--metric", "recall@20"])
    trained = ok("train_best", ["--preprocess_run_id", prep_id, "--hpo_run_id", tuned,
                                "--ensemble", "1"])  # fmt: skip
    metrics = mlflow.get_run(trained).data.metrics
    for prefix in ("test_", "popularity_"):
        assert {f"{prefix}recall_at_20", f"{prefix}ndcg_at_10"} <= set(metrics)
    ok("register", ["--train_run_id", trained, "--model_name", "m", "--metric", "recall@20"])
    twin = ok("train_best", ["--preprocess_run_id", prep_id, "--hpo_run_id", tuned,
                             "--ensemble", "1"])  # fmt: skip
    register = mlflow.get_run(ok("register", ["--train_run_id", twin, "--model_name", "m",
                                              "--metric", "recall@20"]))  # fmt: skip
    assert register.data.tags["recflow.promotion_reason"].startswith("test_recall_at_20 ")


@pytest.mark.parametrize("pruner", ["quartile", "median", "hyperband"])
def test_a_categorical_epochs_entry_is_a_valid_space(
    prep_id: str, tmp_path: Path, pruner: str
) -> None:
    """Regression: `epochs: {type: categorical, choices: [2]}` crashed hpo with a traceback
    (int(None) while computing the pruner's epoch bound)."""
    space = tmp_path / "space.yaml"
    space.write_text(
        "factors: {type: int, low: 4, high: 8}\nepochs: {type: categorical, choices: [2]}\n"
    )
    args = ["--preprocess_run_id", prep_id, "--n_trials", "2", "--search_space", str(space)]
    tuned = ok("hpo", [*args, "--pruner", pruner])
    trials = mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{tuned}'",
    )  # fmt: skip
    assert trials and {t.data.params["epochs"] for t in trials} == {"2"}


@pytest.mark.parametrize(
    ("epochs", "expected"),
    [
        (Dimension("epochs", "int", 5, 40), 40),
        (Dimension("epochs", "float", 5.0, 12.5), 12),
        (Dimension("epochs", "categorical", choices=(3, 30, 7)), 30),
        (None, 20),  # the FMParams default
    ],
)
def test_the_pruners_epoch_bound_comes_from_the_space(
    epochs: Dimension | None, expected: int
) -> None:
    space = [Dimension("factors", "int", 4, 8)] + ([epochs] if epochs else [])
    assert max_epochs(space) == expected
