"""The step cache's code version, MLproject defaults, and how ``main`` wires the steps."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from recflow.data import download, preprocess
from recflow.data.datasets import get_spec
from recflow.hpo.space import DEFAULT_SPACE
from recflow.testing.archives import ml100k_files, sha256, write_zip
from recflow.tracking import cache, pipeline
from tests.helpers import COMMANDS, PROJECT, fails, planned_steps, runs_of


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(PROJECT, root, ignore=shutil.ignore_patterns(".git", ".venv", "data", "mlruns"))
    return root


@pytest.mark.parametrize(
    "changed", [DEFAULT_SPACE.relative_to(PROJECT).as_posix(), "pyproject.toml", "conda.yaml"]
)
def test_code_version_covers_the_search_space_and_the_pins(
    project_copy: Path, changed: str
) -> None:
    """Regression: editing the packaged search space or a pin in pyproject.toml left the code
    version unchanged, so `main` reused an hpo run made with the old space or packages."""
    before = cache.code_version(project_copy)
    with (project_copy / changed).open("a") as f:
        f.write("\n# changed\n")
    assert cache.code_version(project_copy) != before


def test_code_version_ignores_docs_and_tests(project_copy: Path) -> None:
    before = cache.code_version(project_copy)
    (project_copy / "README.md").write_text("rewritten")
    (project_copy / "tests" / "test_cache.py").write_text("# rewritten")
    assert cache.code_version(project_copy) == before


def test_mlproject_defaults_are_the_click_defaults() -> None:
    """One default per parameter: MLproject and each step's option agree."""
    declared = cache.entry_point_defaults()
    for name, params in declared.items():
        options = {p.name: p.default for p in COMMANDS[name].params}
        for param, default in params.items():
            assert same(default, options[param]), (name, param, default, options[param])


def test_preprocess_settings_default_to_mlproject() -> None:
    """In-process callers of ``preprocess.prepare`` get the step's defaults."""
    declared = cache.entry_point_defaults()["preprocess"]
    for field in dataclasses.fields(preprocess.Settings):
        assert same(declared[field.name], field.default), field.name


def same(declared: str, default: object) -> bool:
    """MLproject's "0" and click's 0.0 are the same default."""
    if isinstance(default, (int, float)):
        return float(declared) == default
    return declared == str(default)


def test_main_passes_its_metric_to_hpo_and_register(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: `main` never passed its metric to register, so a study tuned on recall@20
    was promoted on ndcg@10."""
    plan = pipeline.Plan.with_defaults(
        dataset="ml-100k", n_trials=3, metric="recall@20", seed=7, model_name="m"
    )
    calls = planned_steps(plan, monkeypatch)
    assert calls["hpo"]["metric"] == calls["register"]["metric"] == "recall@20"
    assert calls["register"]["train_run_id"] == "train_best-run"
    # Every declared parameter is passed, defaults filled in, so the cache compares them all.
    spec = yaml.safe_load((PROJECT / "MLproject").read_text())["entry_points"]
    for step, params in calls.items():
        assert set(params) == set(spec[step]["parameters"]), step


def test_main_passes_the_hpo_budget_and_fidelity_through(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = pipeline.Plan.with_defaults(
        dataset="ml-100k",
        n_trials=3,
        metric="ndcg@10",
        seed=7,
        model_name="m",
        timeout=60,
        n_jobs=2,
        sample_users="500",
        eval_users="all",
        split="user",
        test_size=0.25,
        valid_size=0.05,
    )
    calls = planned_steps(plan, monkeypatch)
    hpo = calls["hpo"]
    assert (hpo["timeout"], hpo["n_jobs"], hpo["sample_users"], hpo["eval_users"]) == (
        "60", "2", "500", "all",
    )  # fmt: skip
    prep = calls["preprocess"]
    assert (prep["split"], prep["test_size"], prep["valid_size"]) == ("user", "0.25", "0.05")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sample_users", "0"], "must be 'auto', 'all' or a positive integer"),
        (["--eval_users", "some"], "must be 'auto', 'all' or a positive integer"),
        (["--n_trials", "0"], "n_trials must be 'auto' or a positive integer, got '0'"),
        (["--split", "leave-one-out"], "unknown split 'leave-one-out'"),
        (["--test_size", "0.8", "--valid_size", "0.3"], "must each be in (0, 1) and sum to less"),
        (["--metric", "auc@10"], "unknown metric 'auc@10'"),
        (["--model_name", "team/recs"], "model_name='team/recs' is refused by the model registry"),
        (["--ensemble", "nan"], "ensemble must be 'auto' or a positive integer, got 'nan'"),
    ],
)
def test_main_refuses_bad_values_before_any_step(
    tracking: str, args: list[str], message: str
) -> None:
    failed = fails("main", args, message)
    assert failed is not None
    assert runs_of("download") == []


def test_main_keys_a_movielens_archive_of_the_users_on_its_content(tmp_path: Path) -> None:
    """Regression: main keyed the download of a MovieLens ``data_url`` without a checksum on
    the path alone, so an archive rewritten at the same path reused the old download and every
    step after it."""
    archive = write_zip(tmp_path / "ml-100k.zip", ml100k_files())
    plan = pipeline.Plan.with_defaults(dataset="ml-100k", data_url=str(archive))
    keyed = plan.keyed_on_content(tmp_path / "data")
    assert keyed.checksum == sha256(archive)
    write_zip(archive, ml100k_files(seed=1))  # the same path, new ratings
    assert plan.keyed_on_content(tmp_path / "data").checksum == sha256(archive) != keyed.checksum
    # A URL's archive is fetched once: the download step finds it in the cache by its checksum.
    url = pipeline.Plan.with_defaults(dataset="ml-100k", data_url=archive.as_uri())
    checksum = url.keyed_on_content(tmp_path / "data").checksum
    assert download.fetch_archive(
        get_spec("ml-100k"), tmp_path / "data", archive.as_uri(), checksum
    ).cached
    # A checksum the user gave is theirs to keep, and the official archives have known ones.
    given = dataclasses.replace(plan, checksum="md5:" + "0" * 32)
    assert given.keyed_on_content(tmp_path / "data") == given
    official = pipeline.Plan.with_defaults(dataset="ml-100k")
    assert official.keyed_on_content(tmp_path / "data") == official
