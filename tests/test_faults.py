"""Faults injected on purpose: a full disk under each step that writes.

The full filesystems are one-page tmpfs mounts holding one small file, so not a byte is free
(root only, as on our CI machines; elsewhere these tests skip and say why).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest

from tests.helpers import fails, ok, sha256

FILLER = ".filler"


@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """Mount full filesystems under tmp_path (a one-page tmpfs whose page a filler file takes);
    unmounted after the test."""
    mounts: list[Path] = []

    def mount() -> Path:
        path = tmp_path / f"full-{len(mounts)}"
        path.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(path)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounts.append(path)
        (path / FILLER).write_bytes(b"x")
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", str(path)], check=False)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.name != FILLER]


@pytest.fixture
def full_artifact_root(full_fs, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Steps run in an experiment that stores its artifacts on a full filesystem (by the
    environment, which monkeypatch restores: mlflow.set_experiment would outlive the test)."""
    full = full_fs()
    exp = mlflow.create_experiment("full-disk", artifact_location=full.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", exp)
    return full


def with_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back to the Default experiment, whose artifacts have room."""
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")


def test_download_into_a_full_data_folder_then_with_space(
    tracking: str, tiny_zip: Path, http_dir, full_fs, tmp_path: Path, monkeypatch
) -> None:
    root, base = http_dir
    (root / "ml-100k.zip").write_bytes(tiny_zip.read_bytes())
    full = full_fs()
    monkeypatch.setenv("RECFLOW_DATA_DIR", str(full))
    for url in (f"{base}/ml-100k.zip", tiny_zip.as_uri()):  # over HTTP, and a file:// copy
        args = ["--dataset", "ml-100k", "--data_url", url, "--checksum", sha256(tiny_zip)]
        needs = f"{full}/ml-100k: needs {tiny_zip.stat().st_size / 1024:.1f} KiB, 0 B free"
        fails("download", args, "not enough disk space for the archive")
        fails("download", args, needs)
        assert files_under(full) == []  # no partial file to be reused
    monkeypatch.setenv("RECFLOW_DATA_DIR", str(tmp_path / "data"))
    ok("download", args)


def test_preprocess_with_a_full_artifact_root_then_with_space(
    raw_id: str, full_artifact_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = fails("preprocess", ["--raw_run_id", raw_id], "not enough disk space for the prepared")
    assert run is not None and files_under(full_artifact_root) == []
    with_space(monkeypatch)
    ok("preprocess", ["--raw_run_id", raw_id])


def test_train_best_with_a_full_artifact_root_then_with_space(
    trained: dict[str, str], full_artifact_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--preprocess_run_id", trained["preprocess"], "--hpo_run_id", trained["hpo"]]
    run = fails("train_best", args, "not enough disk space for the model and its plots in")
    assert run is not None and files_under(full_artifact_root) == []
    with_space(monkeypatch)
    ok("train_best", args)


def test_a_write_that_runs_out_of_space_midway_is_one_line(
    trained: dict[str, str], full_artifact_root: Path, monkeypatch
) -> None:
    """A write no check foresaw (here the checks are switched off) still ends in one line that
    names the place, and a FAILED run."""
    from recflow import disk

    monkeypatch.setattr(disk, "require", lambda *a, **k: None)
    args = ["--preprocess_run_id", trained["preprocess"], "--hpo_run_id", trained["hpo"]]
    fails("train_best", args, f"no space left on device writing {full_artifact_root}")
