"""Each step through click's CliRunner against a temporary tracking store, good and bad input."""

from __future__ import annotations

import dataclasses
import random
import zipfile
from pathlib import Path
from unittest import mock

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils import name_utils

from recflow import constants as C
from recflow.data.datasets import get_spec, parse_ratings
from recflow.data.preprocess import Prepared, k_core, to_implicit
from recflow.hpo import budget
from recflow.hpo.objective import MAX_PATIENCE
from recflow.hpo.space import DEFAULT_SPACE, load_space, warm_start, warm_starts
from recflow.testing.archives import ml100k_files, write_zip
from recflow.tracking.contracts import PREPARED_FILES, load_best_params, load_served
from recflow.tracking.runs import get_step_run, is_generated_name
from steps import hpo
from tests.helpers import COMMANDS, PROJECT, fails, invoke, ok, runs_of, sha256


def test_every_mlproject_parameter_reaches_its_click_option() -> None:
    spec = yaml.safe_load((PROJECT / "MLproject").read_text())
    assert set(spec["entry_points"]) == set(COMMANDS)
    for name, ep in spec["entry_points"].items():
        declared = set(ep["parameters"])
        options = {p.name for p in COMMANDS[name].params}
        assert declared == options, name
        for param in declared:
            assert f"--{param} {{{param}}}" in ep["command"], (name, param)
        assert ep["command"].startswith(f"python -m steps.{name} ")


def test_download_logs_files_and_lineage_tags(raw_id: str, tiny_zip: Path) -> None:
    run = mlflow.get_run(raw_id)
    assert run.data.tags[C.TAG_DATASET] == "ml-100k"
    assert run.data.tags[C.TAG_CHECKSUM] == sha256(tiny_zip)
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(raw_id, C.RAW_DIR)}
    assert names == {f"{C.RAW_DIR}/u.data", f"{C.RAW_DIR}/u.item", f"{C.RAW_DIR}/u.user"}


def test_step_runs_are_named_after_their_step_and_data(trained: dict[str, str]) -> None:
    names = {step: mlflow.get_run(run_id).info.run_name for step, run_id in trained.items()}
    assert names["raw"] == "download · ml-100k"
    assert names["preprocess"] == "preprocess · ml-100k · random split 70%/10%/20%"
    assert names["hpo"] == "hpo · ml-100k · 1 trial"
    assert names["train"].startswith("train_best · ml-100k · ") and "factors" in names["train"]


def test_the_default_experiment_is_named_and_opens_on_training_runs(raw_id: str) -> None:
    experiment = MlflowClient().get_experiment(mlflow.get_run(raw_id).info.experiment_id)
    assert experiment.name == C.DEFAULT_EXPERIMENT_NAME
    assert experiment.tags[C.EXPERIMENT_KIND_TAG] == C.EXPERIMENT_KIND


def test_what_the_user_named_keeps_its_name(
    tracking: str, tiny_zip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient()
    with mlflow.start_run(run_name="someone else's run"):
        pass  # the Default experiment is not only ours: it keeps its name
    mine = client.create_run("0", run_name="my baseline")  # as `mlflow run --run-name` makes it
    monkeypatch.setenv("MLFLOW_RUN_ID", mine.info.run_id)
    ok("download", ["--dataset", "ml-100k", "--data_url", str(tiny_zip)])
    assert client.get_run(mine.info.run_id).info.run_name == "my baseline"
    experiment = client.get_experiment("0")
    assert experiment.name == "Default"
    assert experiment.tags[C.EXPERIMENT_KIND_TAG] == C.EXPERIMENT_KIND


def test_every_name_mlflow_makes_up_is_replaced_and_no_chosen_one_is() -> None:
    rng = random.Random(0)  # MLflow's generator draws from the module-level random
    with mock.patch.object(name_utils, "random", rng):
        made_up = {name_utils._generate_random_name() for _ in range(20_000)}
    assert any(name.endswith("-1000") for name in made_up)  # the widest number it draws
    assert all(is_generated_name(name) for name in made_up)
    for chosen in ["my baseline", "ease-vs-warp", "run-2026-12-06", "hpo · ml-1m"]:
        assert not is_generated_name(chosen), chosen


def inputs_of(run_id: str) -> dict[str, tuple[str, str]]:
    """A run's input datasets as {context: (name, digest)}, read through the client."""
    run = MlflowClient().get_run(run_id)
    return {
        next(t.value for t in d.tags if t.key == "mlflow.data.context"): (
            d.dataset.name,
            d.dataset.digest,
        )
        for d in run.inputs.dataset_inputs
    }


def test_lineage_reads_back_through_the_client(trained: dict[str, str]) -> None:
    client = MlflowClient()
    prep, hpo_inputs = inputs_of(trained["preprocess"]), inputs_of(trained["hpo"])
    assert {c: name for c, (name, _) in prep.items()} == {
        "training": "ml-100k train", "validation": "ml-100k valid", "test": "ml-100k test",
    }  # fmt: skip
    # hpo consumed the same train and valid sets (the tiny data is not sampled).
    assert hpo_inputs == {c: prep[c] for c in ("training", "validation")}
    train = inputs_of(trained["train"])
    assert train["test"] == prep["test"]
    assert train["training"][0] == "ml-100k train+valid"

    # The test metrics are linked to the logged model and to the test set.
    run = client.get_run(trained["train"])
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    linked = {m.key: m for m in model.metrics}
    ndcg = linked["test_ndcg_at_10"]
    assert ndcg.value == run.data.metrics["test_ndcg_at_10"]
    assert (ndcg.dataset_name, ndcg.dataset_digest) == prep["test"]
    assert {"popularity_ndcg_at_10", "test_coverage_at_10"} <= linked.keys()


def test_testset_digests_differ_when_the_split_does(prep_id: str, raw_id: str) -> None:
    other = ok("preprocess", ["--raw_run_id", raw_id, "--seed", "7"])
    assert inputs_of(other)["test"][1] != inputs_of(prep_id)["test"][1]
    again = ok("preprocess", ["--raw_run_id", raw_id])
    assert inputs_of(again)["test"] == inputs_of(prep_id)["test"]


def test_download_over_http_caches_verified_archive(
    tracking: str, tiny_zip: Path, http_dir, tmp_path: Path
) -> None:
    root, base = http_dir
    (root / "ml-100k.zip").write_bytes(tiny_zip.read_bytes())
    args = [
        "--dataset",
        "ml-100k",
        "--data_url",
        f"{base}/ml-100k.zip",
        "--checksum",
        sha256(tiny_zip),
    ]
    ok("download", args)
    cached = list((tmp_path / "data" / "ml-100k").iterdir())
    assert len(cached) == 1 and cached[0].read_bytes() == tiny_zip.read_bytes()
    (root / "ml-100k.zip").unlink()  # the second run must come from the cache
    ok("download", args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "ml-7"], "unknown dataset 'ml-7'"),
        (["--dataset", "ml-100k", "--data_url", "/nope/x.zip"], "not an existing file"),
        (["--dataset", "ml-100k", "--data_url", "ftp://host/x.zip"], "unsupported URL scheme"),
        (["--dataset", "ml-100k", "--data_url", "http://127.0.0.1:9/x.zip"], "cannot reach"),
        (["--dataset", "ml-100k", "--checksum", "sha1:abc"], "is not of the form"),
    ],
)
def test_download_rejects_bad_input(tracking: str, args: list[str], message: str) -> None:
    assert fails("download", args, message) is not None


def test_download_checksum_mismatch_keeps_cache_intact(
    tracking: str, tiny_zip: Path, http_dir, tmp_path: Path
) -> None:
    root, base = http_dir
    (root / "ml-100k.zip").write_bytes(tiny_zip.read_bytes())
    url = f"{base}/ml-100k.zip"
    ok("download", ["--dataset", "ml-100k", "--data_url", url, "--checksum", sha256(tiny_zip)])
    cache = tmp_path / "data" / "ml-100k"
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    # The server now serves another file under the same name.
    write_zip(root / "ml-100k.zip", ml100k_files(seed=1))
    fails(
        "download",
        ["--dataset", "ml-100k", "--data_url", url, "--checksum", "md5:" + "0" * 32],
        "checksum mismatch",
    )
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before


def test_download_rejects_wrong_layout(tracking: str, tmp_path: Path) -> None:
    bad = write_zip(tmp_path / "flat.zip", ml100k_files(), folder="")
    fails("download", ["--dataset", "ml-100k", "--data_url", str(bad)], "not in the ml-100k layout")


def _truncated(path: Path) -> Path:
    data = write_zip(path, ml100k_files()).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _zip_slip(path: Path) -> Path:
    write_zip(path, ml100k_files())
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("../evil", b"pwned")
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write_zip(p, ml100k_files(), folder=""), "not in the ml-100k layout"),
        (_truncated, "not a readable zip"),
        (_zip_slip, "outside the target folder"),
    ],
    ids=["layout", "truncated", "zip-slip"],
)  # fmt: skip
def test_download_removes_a_rejected_archive_from_the_cache(
    tracking: str, http_dir, tmp_path: Path, make, message: str
) -> None:
    root, base = http_dir
    served = make(root / "ml-100k.zip")
    url = f"{base}/ml-100k.zip"
    fails("download", ["--dataset", "ml-100k", "--data_url", url, "--checksum", sha256(served)],
          message)  # fmt: skip
    cache = tmp_path / "data" / "ml-100k"
    assert [p.name for p in cache.iterdir()] == []
    # A user's own file is read in place and never removed, however bad.
    fails("download", ["--dataset", "ml-100k", "--data_url", str(served)], message)
    assert served.is_file()


def test_preprocess_writes_splits_and_counts(prep_id: str) -> None:
    run = mlflow.get_run(prep_id)
    m, p = run.data.metrics, run.data.params
    assert m["n_train"] + m["n_valid"] + m["n_test"] <= m["n_after_filter"]
    assert m["n_valid"] > 0 and m["n_test"] > 0
    folder = Path(mlflow.artifacts.download_artifacts(run_id=prep_id, artifact_path=C.DATA_DIR))
    files = {"train": C.TRAIN_FILE, "valid": C.VALID_FILE, "test": C.TEST_FILE}
    splits = {name: pd.read_parquet(folder / file) for name, file in files.items()}
    train = splits["train"]
    assert len(train) == m["n_train"]
    assert {name: len(df) for name, df in splits.items()} == {
        name: m[f"n_{name}"] for name in splits
    }
    # Every filtered interaction is in exactly one split, or was held out for valid or test with
    # a user or item that train lacks (the model cannot score it): nothing else goes missing.
    raw = Path(mlflow.artifacts.download_artifacts(run_id=p["raw_run_id"], artifact_path=C.RAW_DIR))
    filtered = k_core(
        to_implicit(parse_ratings(get_spec("ml-100k"), raw), float(p["min_rating"])),
        int(float(p["min_user_interactions"])), int(float(p["min_item_interactions"])),
    )  # fmt: skip
    assert len(filtered) == m["n_after_filter"]
    keys = [C.USER_COL, C.ITEM_COL]
    placed = pd.concat([df[keys] for df in splits.values()], ignore_index=True)
    assert not placed.duplicated().any()
    merged = filtered[keys].merge(placed, on=keys, how="outer", indicator=True)
    assert (merged["_merge"] != "right_only").all()  # no split holds what the filter dropped
    lost = merged[merged["_merge"] == "left_only"]
    assert len(placed) + len(lost) == m["n_after_filter"]
    unknown = ~lost[C.USER_COL].isin(train[C.USER_COL]) | ~lost[C.ITEM_COL].isin(train[C.ITEM_COL])
    assert unknown.all()
    # The random split holds out round(n * size) interactions for each of test and valid; train
    # keeps the rest, untouched by the filter that followed.
    n = m["n_after_filter"]
    held = round(n * float(p["test_size"])) + round(n * float(p["valid_size"]))
    assert p["split"] == "random" and m["n_train"] == n - held
    items = pd.read_parquet(folder / C.ITEMS_FILE)
    assert list(items.columns) == [C.ITEM_COL, C.TITLE_COL, C.GENRES_COL]
    assert run.data.tags["recflow.raw_run_id"] == run.data.params["raw_run_id"]


def test_preprocess_rejects_wrong_runs(raw_id: str, prep_id: str) -> None:
    fails("preprocess", ["--raw_run_id", "0" * 32], "no such run")
    fails("preprocess", ["--raw_run_id", prep_id], "is a preprocess run, not a download run")


def test_a_run_without_its_artifacts_is_a_clear_error(raw_id: str) -> None:
    with mlflow.start_run() as hollow:  # tagged preprocess, but its artifacts never got logged
        mlflow.set_tag(C.TAG_STEP, "preprocess")
    fails("hpo", ["--preprocess_run_id", hollow.info.run_id], "cannot download 'data' of run")


def test_an_unreachable_tracking_store_is_not_blamed_on_the_run_id(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(self: object, run_id: str) -> None:
        raise MlflowException("API request to http://server failed: Connection refused")

    monkeypatch.setattr(MlflowClient, "get_run", down)
    with pytest.raises(MlflowException, match="Connection refused"):
        get_step_run("0" * 32, "download", "raw_run_id")


def test_preprocess_filter_leaving_nothing(raw_id: str) -> None:
    fails(
        "preprocess", ["--raw_run_id", raw_id, "--min_rating", "6"],
        "after filtering, 0 interactions remain (users: 0, items: 0)",
    )  # fmt: skip


def test_hpo_rejects_bad_input(raw_id: str, prep_id: str, tmp_path: Path) -> None:
    result = invoke(hpo.main, ["--preprocess_run_id", prep_id, "--n_trials", "0"])
    assert result.exit_code != 0 and "n_trials" in result.output
    fails("hpo", ["--preprocess_run_id", prep_id, "--metric", "auc@10"], "unknown metric 'auc@10'")
    fails("hpo", ["--preprocess_run_id", raw_id], "is a download run, not a preprocess run")
    space = tmp_path / "space.yaml"
    space.write_text("factorz: {type: int, low: 2, high: 4}\n")
    fails(
        "hpo", ["--preprocess_run_id", prep_id, "--search_space", str(space)], "unknown parameter"
    )


def test_a_seed_numpy_cannot_take_is_refused_before_the_step_runs(tracking: str) -> None:
    for step in ("preprocess", "hpo", "train_best", "main"):
        for seed in ("-1", str(2**32)):
            result = invoke(COMMANDS[step], ["--seed", seed])
            assert result.exit_code == 2, result.output
            assert "Invalid value for '--seed'" in result.output, result.output
            assert "0<=x<=4294967295" in result.output
            assert runs_of(step) == []


def test_hpo_train_register_chain(prep_id: str) -> None:
    hpo_id = ok("hpo", ["--preprocess_run_id", prep_id, "--n_trials", "3"])
    hpo_run = mlflow.get_run(hpo_id)
    trials = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{hpo_id}'",
        output_format="list",
    )
    complete = [t for t in trials if t.data.tags["trial_state"] == "COMPLETE"]
    assert len(complete) == 3 == hpo_run.data.metrics["n_complete"]
    assert all("ndcg_at_10" in t.data.metrics for t in trials)
    assert "best_ndcg_at_10" in hpo_run.data.metrics
    best = mlflow.artifacts.load_dict(f"runs:/{hpo_id}/{C.BEST_PARAMS_FILE}")
    assert hpo_run.data.params["best.factors"] == str(best["factors"])
    # The first trials are the known-good configurations, the default first (warm start).
    starts = warm_starts(load_space(DEFAULT_SPACE))
    assert starts[0] == warm_start(load_space(DEFAULT_SPACE)) and len(starts) == 2
    for number, values in enumerate(starts):
        trial = next(t for t in trials if t.data.params["trial_number"] == str(number))
        assert {k: trial.data.params[k] for k in values} == {k: str(v) for k, v in values.items()}
    # The tuned epochs are the best trial's best epoch.
    best_trial = mlflow.get_run(hpo_run.data.tags[C.TAG_BEST_TRIAL_RUN])
    assert best["epochs"] == best_trial.data.metrics["best_epoch"]
    assert hpo_run.data.params["best.epochs"] == str(best["epochs"])
    assert hpo_run.data.metrics["best_ndcg_at_10"] == best_trial.data.metrics["best_ndcg_at_10"]

    train_id = ok("train_best", ["--preprocess_run_id", prep_id, "--hpo_run_id", hpo_id])
    assert mlflow.get_run(train_id).data.params["model.epochs"] == str(best["epochs"])
    metrics = mlflow.get_run(train_id).data.metrics
    assert metrics["ensemble_size"] == 5  # auto, on small data
    for name in ("precision", "recall", "ndcg", "hit_rate", "mrr"):
        assert 0 <= metrics[f"test_{name}_at_10"] <= 1
        assert f"popularity_{name}_at_10" in metrics
    # The synthetic data has two taste groups: the model must beat popularity clearly.
    assert metrics["test_ndcg_at_10"] > 1.5 * metrics["popularity_ndcg_at_10"]
    for name in ("coverage", "gini"):
        assert (
            0 < metrics[f"test_{name}_at_10"] <= 1 and 0 < metrics[f"popularity_{name}_at_10"] <= 1
        )
    assert metrics["test_novelty_at_10"] > metrics["popularity_novelty_at_10"] >= 0
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(train_id, C.PLOTS_DIR)}
    assert plots == {
        f"{C.PLOTS_DIR}/{name}.png"
        for name in ("accuracy_at_k", "exposure_by_popularity_decile", "tuned_learning_curve")
    }

    common = ["--preprocess_run_id", prep_id, "--hpo_run_id", hpo_id]
    for bad in ("0", "two", "1.5"):
        fails("train_best", [*common, "--ensemble", bad], "ensemble must be 'auto' or a positive")
    fails("register", ["--train_run_id", hpo_id], "is a hpo run, not a train_best run")
    ok("register", ["--train_run_id", train_id, "--model_name", "tiny"])
    version = mlflow.MlflowClient().get_model_version_by_alias("tiny", "champion")
    assert version.tags["train_run_id"] == train_id and version.tags["dataset"] == "ml-100k"
    model = mlflow.pyfunc.load_model("models:/tiny@champion")
    out = model.predict(pd.DataFrame({"user_id": [1, 2]}), params={"k": 5})
    assert list(out.groupby("user_id")["rank"].apply(list)) == [[1, 2, 3, 4, 5]] * 2


def test_a_rate_that_diverges_on_all_the_data_is_halved_then_given_up(
    trained: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A configuration that trained on the training split can diverge on train+valid.
    import steps.train_best as train_best
    from recflow.model.training import TrainingDiverged

    tuned = load_best_params(trained["hpo"], tmp_path).learning_rate
    real = train_best.fit_ensemble
    limit = [tuned / 3]  # the tuned rate and its half diverge, its quarter trains

    def fragile(df: pd.DataFrame, params, seeds: list[int], **fit):  # noqa: ANN001, ANN202
        if params.learning_rate > limit[0]:
            raise TrainingDiverged("training diverged (non-finite weights): lower learning_rate")
        return real(df, params, seeds, **fit)

    monkeypatch.setattr(train_best, "fit_ensemble", fragile)
    args = ["--preprocess_run_id", trained["preprocess"], "--hpo_run_id", trained["hpo"],
            "--ensemble", "1"]  # fmt: skip
    run = mlflow.get_run(ok("train_best", args))
    assert float(run.data.params["model.learning_rate"]) == tuned  # what was tuned, as tuned
    assert "diverged" in run.data.tags[C.TAG_RATE_LOWERED]
    served, _ = load_served(run.data.tags[C.TAG_MODEL_URI], tmp_path / "model")
    assert served.params.learning_rate == pytest.approx(tuned / 4)  # what it was trained with
    limit[0] = 0.0  # every rate diverges: after two halvings the step fails, saying so
    fails("train_best", args, "the learning rate was halved 2 times")


def test_hpo_rejects_bad_user_counts_before_any_trial(prep_id: str) -> None:
    common = ["--preprocess_run_id", prep_id, "--n_trials", "1"]
    for args, message in (
        (["--sample_users", "0"], "sample_users must be 'auto', 'all' or a positive integer"),
        (["--eval_users", "ten"], "eval_users must be 'auto', 'all' or a positive integer"),
        (["--sample_users", "1000"], "sample_users=1000 is more than the 40 users"),
        (["--eval_users", "1000"], "eval_users=1000 is more than the"),
        (["--patience", "-1"], "patience must be 'auto' or a non-negative integer, got '-1'"),
        (["--patience", "soon"], "patience must be 'auto' or a non-negative integer"),
        (["--n_trials", "0"], "n_trials must be 'auto' or a positive integer, got '0'"),
        (["--n_trials", "2.5"], "n_trials must be 'auto' or a positive integer"),
        (["--n_trials", "many"], "n_trials must be 'auto' or a positive integer"),
        (["--n_trials", "nan"], "n_trials must be 'auto' or a positive integer, got 'nan'"),
        (["--patience", "inf"], "patience must be 'auto' or a non-negative integer, got 'inf'"),
    ):
        run = fails("hpo", common + args, message)
        trials = mlflow.search_runs(
            search_all_experiments=True,
            filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'",
            output_format="list",
        )
        assert trials == []


def test_hpo_on_a_user_sample_is_marked_and_train_best_uses_all(prep_id: str) -> None:
    hpo_id = ok(
        "hpo",
        ["--preprocess_run_id", prep_id, "--n_trials", "2", "--sample_users", "20",
         "--eval_users", "6"],
    )  # fmt: skip
    run = mlflow.get_run(hpo_id)
    assert run.data.tags[C.TAG_TUNED_ON_SAMPLE] == "true"
    assert run.data.params["fidelity.sample_users"] == "20"
    assert run.data.params["fidelity.eval_users"] == "6"
    # Half the users keep about half the rows: the trials' schedule runs at that pace.
    assert 0.3 < float(run.data.params["fidelity.data_share"]) < 0.7
    assert run.data.tags[C.TAG_STUDY].endswith("-users=20,eval=6,seed=1492")
    # Another seed samples other users: a study of its own, not one refused for its data.
    other = ok(
        "hpo",
        ["--preprocess_run_id", prep_id, "--n_trials", "1", "--sample_users", "20",
         "--eval_users", "6", "--seed", "2"],
    )  # fmt: skip
    assert mlflow.get_run(other).data.tags[C.TAG_STUDY].endswith("-users=20,eval=6,seed=2")
    # One model, not auto's five: which users it trains on is the point, not the ensemble.
    train_id = ok(
        "train_best",
        ["--preprocess_run_id", prep_id, "--hpo_run_id", hpo_id, "--ensemble", "1"],
    )
    train = mlflow.get_run(train_id)
    assert train.data.tags[C.TAG_TRAINED_ON].startswith("full data: 40 users")
    assert train.data.metrics["n_train_users"] == 40
    # At full fidelity the run says so too, and the study keeps its historical name.
    full = mlflow.get_run(ok("hpo", ["--preprocess_run_id", prep_id, "--n_trials", "1"]))
    assert full.data.tags[C.TAG_TUNED_ON_SAMPLE] == "false"
    assert full.data.params["fidelity.sample_users"] == "all"
    assert full.data.params["fidelity.data_share"] == "1.0"
    assert "users=" not in full.data.tags[C.TAG_STUDY]
    # A tiny training split waits as long as "auto" ever does.
    assert full.data.params["early_stopping.patience"] == str(MAX_PATIENCE)
    assert run.data.params["early_stopping.patience"] == str(MAX_PATIENCE)
    assert full.data.params["study.n_trials"] == "1"  # what the study ran, as asked


def test_auto_trials_are_more_where_trials_are_cheap(
    prep_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert budget.auto_trials(budget.SMALL_DATA_ROWS - 1) == budget.SMALL_DATA_TRIALS == 40
    assert budget.auto_trials(budget.SMALL_DATA_ROWS) == budget.TRIALS == 20
    assert budget.parse_trials("auto") == "auto" and budget.parse_trials("30.0") == 30
    # The hpo step resolves "auto" on its training split, runs that many and says so.
    monkeypatch.setattr(budget, "SMALL_DATA_TRIALS", 2)
    run = mlflow.get_run(ok("hpo", ["--preprocess_run_id", prep_id, "--n_trials", "auto"]))
    assert run.data.params["study.n_trials"] == "2"
    assert run.data.metrics["n_complete"] == 2
    assert "· 2 trials" in run.data.tags["mlflow.runName"]


def test_every_prepared_field_crosses_the_boundary_by_name() -> None:
    assert set(PREPARED_FILES) == {f.name for f in dataclasses.fields(Prepared)}
    assert len(set(PREPARED_FILES.values())) == len(PREPARED_FILES)
