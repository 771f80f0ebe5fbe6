"""Registration with gated promotion: first promoted, no better -> challenger, force, lineage."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from recflow import constants as C
from recflow.evaluation.accuracy import evaluate_model
from recflow.evaluation.blending import Blended
from recflow.model.ease import seen_scores
from recflow.testing.archives import ml100k_files, write_zip
from recflow.tracking.contracts import lineage, load_prepared, load_served, register_version
from recflow.tracking.promotion import Model
from steps import register
from tests.helpers import fails, invoke, ok, runs_of


def versions(name: str) -> dict[str, list[str]]:
    """version -> aliases."""
    client = mlflow.MlflowClient()
    found = client.search_model_versions(f"name = '{name}'")
    # search results leave aliases out; get_model_version fills them in.
    return {
        str(v.version): sorted(client.get_model_version(name, v.version).aliases) for v in found
    }


def test_promotion_is_gated_on_the_test_metric(trained: dict[str, str]) -> None:
    train, twin = trained["train"], trained["twin"]
    ok("register", ["--train_run_id", train, "--model_name", "m"])
    assert versions("m") == {"1": ["champion"]}
    run = mlflow.get_run(ok("register", ["--train_run_id", twin, "--model_name", "m"]))
    # The same model does not beat itself: it becomes the challenger.
    assert versions("m") == {"1": ["champion"], "2": ["challenger"]}
    assert run.data.tags["recflow.promoted"] == "false"
    assert "does not beat @champion version 1" in run.data.tags["recflow.promotion_reason"]

    ok("register", ["--train_run_id", twin, "--model_name", "m", "--force_promote", "true"])
    assert versions("m") == {"1": [], "2": ["champion"]}  # the version it had, not a third


def test_registering_a_train_run_again_gives_no_second_version(
    trained: dict[str, str],
) -> None:
    """Regression: each register of the same train run added a version, and the second made
    the champion's own model its challenger."""
    args = ["--train_run_id", trained["train"], "--model_name", "m"]
    ok("register", args)
    result = invoke(register.main, args)
    assert result.exit_code == 0, result.output
    assert "holds this train run's model already: no new version" in result.output
    assert versions("m") == {"1": ["champion"]}
    run = runs_of("register")[0]
    assert run.data.tags["recflow.promoted"] == "true"
    assert run.data.tags["recflow.promotion_reason"] == (
        "this train run's version 1 already holds @champion"
    )


def test_a_version_taken_again_keeps_what_it_was_for_other_aliases_and_metrics(
    trained: dict[str, str],
) -> None:
    train, twin = trained["train"], trained["twin"]
    ok("register", ["--train_run_id", train, "--model_name", "m"])
    ok("register", ["--train_run_id", twin, "--model_name", "m"])  # lost to @champion
    ok("register", ["--train_run_id", twin, "--model_name", "m", "--alias", "staging"])
    # Taken again for another alias: still @champion's challenger.
    assert versions("m") == {"1": ["champion"], "2": ["challenger", "staging"]}
    # Judged on another metric: another version, tagged with that metric.
    args = ["--model_name", "m", "--alias", "recall", "--metric", "recall@10"]
    ok("register", ["--train_run_id", train, *args])
    assert versions("m") == {"1": ["champion"], "2": ["challenger", "staging"], "3": ["recall"]}
    assert mlflow.MlflowClient().get_model_version("m", "3").tags["metric"] == "recall@10"


def test_of_duplicate_versions_left_by_older_code_the_holder_is_taken(
    trained: dict[str, str],
) -> None:
    # Older code registered a train run once more at every register: v1 and v2, v2 @champion.
    run = mlflow.get_run(trained["train"])
    model = Model({**lineage(run), "metric": "ndcg@10"}, {})
    for _ in range(2):
        register_version(run, "m", model)
    mlflow.MlflowClient().set_registered_model_alias("m", "champion", "2")
    result = invoke(register.main, ["--train_run_id", trained["train"], "--model_name", "m"])
    assert "this train run's version 2 already holds @champion" in result.output, result.output
    assert versions("m") == {"1": [], "2": ["champion"]}


def test_a_register_killed_before_the_alias_is_finished_by_the_next(
    trained: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--train_run_id", trained["train"], "--model_name", "m"]

    def crash(name: str) -> None:
        if name == "register:before-alias":
            raise MemoryError("killed")

    with monkeypatch.context() as m:
        m.setattr(register, "failpoint", crash)
        assert invoke(register.main, args).exit_code != 0
    assert versions("m") == {"1": []}  # registered, no alias yet
    ok("register", args)
    assert versions("m") == {"1": ["champion"]}  # that version, not a second


def test_both_models_are_rescored_on_the_same_test_set(trained: dict[str, str]) -> None:
    # The champion's recorded figure is not taken at its word: lowered to 0, the same model
    # still does not beat it, because both are scored again by the code that decides.
    train = trained["train"]
    ok("register", ["--train_run_id", train, "--model_name", "m"])
    client = mlflow.MlflowClient()
    client.set_model_version_tag("m", "1", "test_ndcg_at_10", "0.0")
    run = mlflow.get_run(ok("register", ["--train_run_id", trained["twin"], "--model_name", "m"]))
    assert versions("m") == {"1": ["champion"], "2": ["challenger"]}
    logged = mlflow.get_run(train).data.metrics["test_ndcg_at_10"]
    # What is served is re-scored: here a blend with EASE, not the factorization model alone.
    assert float(mlflow.get_run(train).data.params["blend.share"]) > 0
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


def test_main_refuses_a_model_name_register_could_not_compare_before_any_step(
    trained: dict[str, str],
) -> None:
    """Regression: a main on other data or another metric under a model name already in use
    trained everything and failed only at register."""
    ok("register", ["--train_run_id", trained["train"], "--model_name", "m"])
    downloads = len(runs_of("download"))
    fails(
        "main", ["--model_name", "m", "--metric", "recall@10"],
        "was registered on ndcg@10, this model on recall@10: their figures are not comparable, "
        "so register would refuse this model after training it: pass -P metric=ndcg@10 or "
        "-P model_name=<another name>",
    )  # fmt: skip
    fails(
        "main", ["--model_name", "m", "--dataset", "interactions", "--item_col", "sku"],
        "was trained on {'dataset': 'ml-100k', 'item_col': 'item_id'}, this model on "
        "{'dataset': 'interactions', 'item_col': 'sku'}",
    )  # fmt: skip
    assert len(runs_of("download")) == downloads


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


BAD_REGISTER = [
    (["--alias", "v1"], "alias='v1' is refused by the model registry: Version alias name 'v1' is"),
    (["--alias", "Latest"], "alias='Latest' is refused"),
    (["--alias", ""], "alias='' is refused"),
    (["--alias", "best model!"], "alias='best model!' is refused"),
    (["--alias", "challenger"], "alias='challenger' is where versions that lose go"),
    (["--model_name", "a/b"], "model_name='a/b' is refused"),
    (["--model_name", " "], "model_name=' ' is refused"),
    (["--min_improvement", "nan"], "min_improvement must be a finite number >= 0, got nan"),
    (["--min_improvement", "inf"], "min_improvement must be a finite number >= 0, got inf"),
]


def test_a_bad_name_or_margin_fails_before_a_version_is_registered(
    trained: dict[str, str],
) -> None:
    """Regression: the registry checks an alias only when it is set, so a bad one used to leave
    a version behind that no alias pointed to, one more at every retry."""
    for args, message in BAD_REGISTER:  # one store for all: each must leave it as it was
        fails("register", ["--train_run_id", trained["train"], "--model_name", "m", *args], message)
        assert mlflow.MlflowClient().search_model_versions("name = 'm'") == [], args


@pytest.mark.parametrize(
    ("tag", "value", "message"),
    [
        ("dataset", "ml-1m", "'dataset': 'ml-1m'"),
        ("item_col", "movie", "'item_col': 'movie'"),
        ("metric", "recall@20", "@champion (version 1) was registered on recall@20"),
    ],
)
def test_models_of_another_dataset_item_column_or_metric_are_not_compared(
    trained: dict[str, str], tag: str, value: str, message: str
) -> None:
    ok("register", ["--train_run_id", trained["train"], "--model_name", "m"])
    # The champion as if trained on other data, or registered on another metric.
    mlflow.MlflowClient().set_model_version_tag("m", "1", tag, value)
    args = ["--train_run_id", trained["twin"], "--model_name", "m"]
    result = invoke(register.main, args)
    assert result.exit_code == 1 and runs_of("register")[0].info.status == "FAILED"
    # One line says why, and what to do.
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert message in error and "not comparable" in error
    assert error.endswith("force_promote=true to replace it anyway")
    assert versions("m") == {"1": ["champion"]}
    ok("register", [*args, "--force_promote", "true"])
    assert versions("m") == {"1": [], "2": ["champion"]}


def grown_files() -> dict[str, str]:
    """The tiny archive's files (40 users, 30 items, 480 ratings) and 10 % more: 4 new users
    with 12 ratings each, 3 of them of 3 new items."""
    files = ml100k_files()
    rng = np.random.default_rng(1)
    rows, items, users = [], [], []
    for u in range(41, 45):
        liked = [31, 32, 33, *rng.choice(np.arange(1, 16) + (u % 2) * 15, 9, replace=False)]
        rows += [f"{u}\t{i}\t5\t{890000000 + 1000 * u + t}" for t, i in enumerate(liked)]
        users.append(f"{u}|30|F|writer|0000{u}")
    first = files["u.item"].splitlines()[0].split("|")
    for i in (31, 32, 33):
        items.append("|".join([str(i), f"Movie {i} (1996)", *first[2:]]))
    return {
        "u.data": files["u.data"] + "\n".join(rows) + "\n",
        "u.item": files["u.item"] + "\n".join(items) + "\n",
        "u.user": files["u.user"] + "\n".join(users) + "\n",
    }


@pytest.fixture
def retrained(trained: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``trained`` with its model registered as m@champion (version 1), and the chain again on
    the data grown by 10 % (same dataset, another archive): {grown_prep, grown_train} too."""
    ok("register", ["--train_run_id", trained["train"], "--model_name", "m"])
    archive = write_zip(tmp_path / "grown" / "ml-100k.zip", grown_files())
    raw = ok("download", ["--dataset", "ml-100k", "--data_url", str(archive)])
    prep = ok("preprocess", ["--raw_run_id", raw])
    train = ok(
        "train_best",
        ["--preprocess_run_id", prep, "--hpo_run_id", trained["hpo"], "--ensemble", "1"],
    )
    return {**trained, "grown_prep": prep, "grown_train": train}


def test_a_retrained_model_is_compared_on_what_neither_trained_on(
    retrained: dict[str, str], tmp_path: Path
) -> None:
    """Regression: a model trained on grown data was refused ("their ndcg@10 are not
    comparable"), so every routine retrain ended main FAILED."""
    args = ["--train_run_id", retrained["grown_train"], "--model_name", "m"]
    kept = mlflow.get_run(ok("register", [*args, "--min_improvement", "1"]))
    assert versions("m") == {"1": ["champion"], "2": ["challenger"]}
    assert kept.data.params["comparison.rule"] == "common test set"
    assert kept.data.params["comparison.holder_version"] == "1"
    m = kept.data.metrics

    # What the test expects, from the two preprocess runs' data: the new test set without the
    # pairs the champion trained on; the users and items of the new test set it knows.
    new = load_prepared(retrained["grown_prep"], tmp_path / "new")
    old = load_prepared(retrained["preprocess"], tmp_path / "old").seen()
    pairs = ["user_id", "item_id"]
    leaked = new.test[pairs].merge(old[pairs]).drop_duplicates()
    assert m["left_out_interactions"] == len(leaked) > 0
    assert m["common_test_interactions"] == len(new.test) - len(leaked)
    test_users, test_items = set(new.test.user_id), set(new.test.item_id)
    assert m["champion_known_users"] == len(test_users & set(old.user_id)) < len(test_users)
    assert m["champion_user_overlap"] == m["champion_known_users"] / len(test_users)
    assert m["champion_known_items"] == len(test_items & set(old.item_id))
    assert m["champion_folded_users"] == len(test_users - set(old.user_id)) > 0

    # The challenger's figure is train_best's metric code on that common test set, the pairs
    # left out excluded from its rankings too.
    common = new.test.merge(leaked, how="left", indicator=True)
    common = common[common._merge == "left_only"].drop(columns="_merge")
    candidate, ease = load_served(
        mlflow.get_run(retrained["grown_train"]).data.tags[C.TAG_MODEL_URI], tmp_path / "model"
    )
    # As served: blended with EASE over what each user had seen in training, where it is.
    served = (
        candidate
        if ease is None
        else Blended(
            candidate, lambda u: seen_scores(ease.indptr, ease.indices, u, ease.weights), ease.share
        )
    )
    seen = pd.concat([new.seen(), leaked], ignore_index=True)
    expected = evaluate_model(served, seen, common, 10)["ndcg_at_10"]
    assert m["candidate_test_ndcg_at_10"] == pytest.approx(expected, abs=1e-9)
    assert 0 < m["champion_test_ndcg_at_10"] < 1

    folder = mlflow.artifacts.download_artifacts(
        run_id=kept.info.run_id, artifact_path=C.COMPARISON_FILE, dst_path=str(tmp_path / "c")
    )
    logged = json.loads(Path(folder).read_text())
    assert logged["rule"] == "common test set" and logged["holder"]["version"] == "1"
    assert logged["candidate"]["test_ndcg_at_10"] == m["candidate_test_ndcg_at_10"]
    assert logged["left_out_interactions"] == m["left_out_interactions"]
    reason = kept.data.tags["recflow.promotion_reason"]
    assert (
        reason.startswith("test_ndcg_at_10 ")
        and "by more than 1.0 on the common test set" in reason
    )
    assert f"without the {len(leaked)} interactions @champion trained on" in reason

    # Without a margin the comparison decides, and the run finishes either way.
    run = mlflow.get_run(ok("register", args))
    beats = (
        run.data.metrics["candidate_test_ndcg_at_10"] > run.data.metrics["champion_test_ndcg_at_10"]
    )
    assert run.data.tags["recflow.promoted"] == str(beats).lower()
    # The version it had, the alias decided again.
    if beats:
        assert versions("m") == {"1": [], "2": ["champion"]}
    else:
        assert versions("m") == {"1": ["champion"], "2": ["challenger"]}


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
    champion = ["--model_uri", "models:/m@champion"]
    users.write_text(f"user_id\n1\n{2**63}\n")  # would wrap round to -2**63
    fails("recommend", [*champion, "--users", str(users)], "must hold integers (of 64 bits) only")
    users.write_text("")
    fails("recommend", [*champion, "--users", str(users)], "cannot be read as CSV")
    folder = tmp_path / "a.parquet"
    folder.mkdir()
    fails("recommend", [*champion, "--output", str(folder)], "is a folder; give a file name")
    blocked = tmp_path / "file" / "recs.csv"
    blocked.parent.write_text("a file where the output's folder would be")
    fails("recommend", [*champion, "--output", str(blocked)], "cannot write output")
    ok("recommend", [*champion, "--k", "1001", "--output", str(csv)])  # no per-request limit
    whole = tmp_path / "whole.csv"
    ok("recommend", [*champion, "--k", "30", "--output", str(whole)])  # 30 items in all
    pd.testing.assert_frame_equal(pd.read_csv(csv), pd.read_csv(whole))


def test_an_alias_set_by_another_register_at_the_same_moment_is_set_again() -> None:
    """Two registers inserting a new alias at once: the loser's insert breaks the table's key,
    and it sets the alias again (an update now); any other error is raised."""
    from mlflow.exceptions import MlflowException

    from recflow.tracking.contracts import set_alias

    class Client:
        def __init__(self, errors: list[str]) -> None:
            self.errors, self.calls = errors, []

        def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
            self.calls.append((name, alias, version))
            if self.errors:
                raise MlflowException(self.errors.pop(0))

    raced = Client(['duplicate key value violates unique constraint "registered_model_alias_pk"'])
    set_alias(raced, "m", "champion", "2")
    assert raced.calls == [("m", "champion", "2")] * 2
    other = Client(["RESOURCE_DOES_NOT_EXIST: no version 2"])
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        set_alias(other, "m", "champion", "2")
    assert len(other.calls) == 1


def test_an_alias_another_register_takes_while_this_one_decides_is_decided_again(
    trained: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two mains' registers at once, neither finding a holder (seen in CI): the one that comes
    to set the alias second compares its model with the first one's, instead of replacing it."""
    first = mlflow.get_run(trained["train"])
    tested = {k: v for k, v in first.data.metrics.items() if k.startswith(C.TEST_PREFIX)}
    real = register.register_version

    def beside(train, name: str, figures: Model):
        # The other register promotes its model while this one registers its own version.
        other = real(first, name, Model({**lineage(first), "metric": "ndcg@10"}, tested))
        mlflow.MlflowClient().set_registered_model_alias(name, "champion", other.version)
        return real(train, name, figures)

    monkeypatch.setattr(register, "register_version", beside)
    result = invoke(register.main, ["--train_run_id", trained["twin"], "--model_name", "m"])
    assert result.exit_code == 0, result.output
    assert "@champion moved to version 1 while this register decided" in result.output
    assert versions("m") == {"1": ["champion"], "2": ["challenger"]}  # the same model: no better
    run = runs_of("register")[0]
    assert "does not beat @champion version 1" in run.data.tags["recflow.promotion_reason"]
    assert run.data.params["comparison.holder_version"] == "1"
