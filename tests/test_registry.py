"""Registration with gated promotion: first promoted, no better -> challenger, force, lineage."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from tests.helpers import fails, ok


def versions(name: str) -> dict[str, list[str]]:
    """version -> aliases."""
    client = mlflow.MlflowClient()
    found = client.search_model_versions(f"name = '{name}'")
    # search results leave aliases out; get_model_version fills them in.
    return {
        str(v.version): sorted(client.get_model_version(name, v.version).aliases) for v in found
    }


def test_promotion_is_gated_on_the_test_metric(trained: dict[str, str]) -> None:
    train = trained["train"]
    ok("register", ["--train_run_id", train, "--model_name", "m"])
    assert versions("m") == {"1": ["champion"]}
    run = mlflow.get_run(ok("register", ["--train_run_id", train, "--model_name", "m"]))
    # The same model does not beat itself: it becomes the challenger.
    assert versions("m") == {"1": ["champion"], "2": ["challenger"]}
    assert run.data.tags["recflow.promoted"] == "false"
    assert "does not beat @champion version 1" in run.data.tags["recflow.promotion_reason"]

    ok("register", ["--train_run_id", train, "--model_name", "m", "--force_promote", "true"])
    assert versions("m") == {"1": [], "2": ["challenger"], "3": ["champion"]}


def test_both_models_are_rescored_on_the_same_test_set(trained: dict[str, str]) -> None:
    # The champion's recorded figure is not taken at its word: lowered to 0, the same model
    # still does not beat it, because both are scored again by the code that decides.
    train = trained["train"]
    ok("register", ["--train_run_id", train, "--model_name", "m"])
    client = mlflow.MlflowClient()
    client.set_model_version_tag("m", "1", "test_ndcg_at_10", "0.0")
    run = mlflow.get_run(ok("register", ["--train_run_id", train, "--model_name", "m"]))
    assert versions("m") == {"1": ["champion"], "2": ["challenger"]}
    logged = mlflow.get_run(train).data.metrics["test_ndcg_at_10"]
    assert run.data.metrics["candidate_test_ndcg_at_10"] == pytest.approx(logged, abs=1e-9)
    assert run.data.metrics["champion_test_ndcg_at_10"] == pytest.approx(logged, abs=1e-9)
    assert run.data.tags["recflow.promotion_reason"].endswith(
        "(both re-scored now on the same test set)"
    )
    fails(
        "register",
        ["--train_run_id", train, "--model_name", "m", "--metric", "auc@10"],
        "unknown metric",
    )


def test_version_carries_lineage(trained: dict[str, str]) -> None:
    ok("register", ["--train_run_id", trained["train"], "--model_name", "m"])
    version = mlflow.MlflowClient().get_model_version_by_alias("m", "champion")
    assert version.tags["dataset"] == "ml-100k" and version.tags["split"] == "random"
    assert version.tags["checksum"].startswith("sha256:")
    for step in ("preprocess", "hpo", "train"):
        assert version.tags[f"{step}_run_id"] == trained[step]
    assert version.tags["download_run_id"] == trained["raw"]
    metrics = mlflow.get_run(trained["train"]).data.metrics
    assert float(version.tags["test_ndcg_at_10"]) == pytest.approx(metrics["test_ndcg_at_10"])
    assert "ndcg_at_10" in version.description


@pytest.mark.parametrize(
    ("prep_args", "message"),
    [
        (["--split", "user"], "are not comparable"),
        # Same dataset, archive and split kind, another seed: another test set, by its digest.
        (["--seed", "7"], "'testset_digest': '"),
    ],
)
def test_models_tested_on_another_test_set_are_not_compared(
    trained: dict[str, str], prep_args: list[str], message: str
) -> None:
    ok("register", ["--train_run_id", trained["train"], "--model_name", "m"])
    prep = ok("preprocess", ["--raw_run_id", trained["raw"], *prep_args])
    # One model, not auto's five: the test set it is scored on is the point, not the ensemble.
    other = ok(
        "train_best",
        ["--preprocess_run_id", prep, "--hpo_run_id", trained["hpo"], "--ensemble", "1"],
    )
    fails("register", ["--train_run_id", other, "--model_name", "m"], message)
    assert versions("m") == {"1": ["champion"]}
    ok("register", ["--train_run_id", other, "--model_name", "m", "--force_promote", "true"])
    assert versions("m") == {"1": [], "2": ["champion"]}


def test_recommend_writes_top_k_for_users(trained: dict[str, str], tmp_path: Path) -> None:
    import pandas as pd

    ok("register", ["--train_run_id", trained["train"], "--model_name", "m"])
    out = tmp_path / "out" / "recs.parquet"
    run_id = ok(
        "recommend", ["--model_uri", "models:/m@champion", "--k", "3", "--output", str(out)]
    )
    recs = pd.read_parquet(out)
    assert recs.user_id.nunique() == 40 and len(recs) == 120  # every known user, 3 items each
    assert mlflow.get_run(run_id).data.metrics["n_rows"] == 120
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert names == {"recs.parquet"}

    users = tmp_path / "users.csv"
    users.write_text("user_id\n1\n2\n99999\n")
    csv = tmp_path / "recs.csv"
    ok(
        "recommend",
        ["--model_uri", "models:/m@champion", "--users", str(users), "--output", str(csv)],
    )
    frame = pd.read_csv(csv)
    assert sorted(frame.user_id.unique()) == [1, 2, 99999] and len(frame) == 30

    users.write_text("uid\n1\n")
    fails(
        "recommend",
        ["--model_uri", "models:/m@champion", "--users", str(users)],
        "has no 'user_id'",
    )
    fails("recommend", ["--model_uri", "models:/nope@champion"], "cannot load model")
    bad = tmp_path / "x.txt"
    fails("recommend", ["--model_uri", "models:/m@champion", "--output", str(bad)], "must end in")
    assert not bad.exists()
