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

from tests.helpers import ONE_MODEL, fails, ok, sha256

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
    args = ["--preprocess_run_id", trained["preprocess"], "--hpo_run_id", trained["hpo"],
            "--ensemble", "1"]  # fmt: skip
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
    args = ["--preprocess_run_id", trained["preprocess"], "--hpo_run_id", trained["hpo"],
            "--ensemble", "1"]  # fmt: skip
    fails("train_best", args, f"no space left on device writing {full_artifact_root}")


@pytest.mark.slow
def test_serving_under_load_and_abuse(tmp_path: Path) -> None:
    """5,000 requests from 8 concurrent clients, 10 % malformed (50 of them 10,000 users each),
    against a real `mlflow models serve`: every answer a 200 or a 4xx, none missing, memory flat
    after a warm-up (bench/serve_abuse.py runs 20,000 at ML-1M scale and prints the figures)."""
    import numpy as np

    from recflow.testing.load import make_requests, run
    from recflow.testing.servers import served, stock_cmd
    from recflow.testing.services import free_port
    from tests.helpers import save_checkerboard_pyfunc

    save_checkerboard_pyfunc(tmp_path)
    rng = np.random.default_rng(3)
    bodies = make_requests(5_000, 20, 0.1, rng)
    warmup = make_requests(1_000, 20, 0.1, rng)
    port = free_port()
    with served(stock_cmd(tmp_path / "pyfunc", port, 1), port, tmp_path / "serve.log") as (
        url, _, proc,
    ):  # fmt: skip
        report = run(url, proc.pid, bodies, 8, warmup)
    assert sum(report.counts.values()) == len(bodies)  # an outcome for every request
    assert sum(n for (kind, _), n in report.counts.items() if kind == "many_users") >= 30
    assert report.failures == 0
    for (kind, cls), n in report.counts.items():
        expected = "2xx" if kind in ("good", "unknown_fields") else "4xx"
        assert cls == expected, (kind, cls, n)
    assert report.rss_after <= 1.10 * report.rss_warm, (report.rss_warm, report.rss_after)


# One chain of mains in one store, each SIGKILLed at the next failpoint (recflow/failpoints.py):
# the step's process alone or, the second time at hpo:mid-trial, the whole process tree (`mlflow
# run`, main, hpo and its trial: a power cut, where nothing but the next main ends the runs).
CHAIN = (
    ("download:mid-archive", False),
    ("preprocess:mid-splits", False),
    ("hpo:mid-trial", False),
    ("hpo:mid-trial", True),
    ("train_best:model-logged", False),
    ("register:before-alias", False),
)


@pytest.mark.slow
def test_kill_anywhere_then_rerun_loses_nothing(tmp_path: Path, http_dir) -> None:
    """A forced main killed at the first failpoint, then a main killed at each next one, then a
    main that completes. Each main reuses exactly the steps that finished before (only FINISHED
    runs), ends every run its predecessor left RUNNING (marked KILLED after the power cut) and
    leaves no partial download; the last leaves nothing RUNNING and the champion loads."""
    import os

    import pandas as pd

    from recflow import constants as C
    from recflow.testing.archives import ml100k_files, write_zip
    from tests.helpers import mlflow_cmd, mlflow_run, step_lines, user_env

    root, base = http_dir
    archive = write_zip(root / "ml-100k.zip", ml100k_files())
    params = ("dataset=ml-100k", f"data_url={base}/ml-100k.zip", f"checksum={sha256(archive)}",
              "n_trials=2", ONE_MODEL)  # fmt: skip
    env = user_env(tmp_path)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()

    def runs() -> dict[str, mlflow.entities.Run]:
        return {r.info.run_id: r for r in client.search_runs(["0"], max_results=1000)}

    def parts() -> list[Path]:
        return list((tmp_path / "data").rglob("*.part-*"))

    def check_main(before: dict[str, mlflow.entities.Run], out: str, redo: int) -> list[str]:
        """The checks every main must pass; the steps it ran or reused, in order."""
        after = runs()
        (main_run,) = [r for i, r in after.items() if i not in before and
                       r.data.tags.get(C.TAG_STEP) == "main"]  # fmt: skip
        linked = {s: main_run.data.tags.get(C.TAG_MAIN_STEP_RUN + s) for s in C.STEPS}
        reused = [s for s, rid in linked.items() if rid in before]
        assert reused == list(C.STEPS[:redo]), (reused, out[-3000:])  # nothing finished is lost
        corrupt = [s for s in reused if before[linked[s]].info.status != "FINISHED"]
        assert not corrupt, corrupt
        left = [i for i, r in before.items() if r.info.status == "RUNNING"]
        assert all(after[i].info.status != "RUNNING" for i in left), out[-3000:]
        assert not parts(), parts()
        return [s for s, rid in linked.items() if rid]

    redo, orphans = 0, []  # the first step the next main must run; runs a power cut left
    for n, (point, whole_tree) in enumerate(CHAIN):
        before = runs()
        kill = {"RECFLOW_KILL_AT": point} | ({"RECFLOW_KILL_GROUP": "1"} if whole_tree else {})
        killed = subprocess.run(
            mlflow_cmd("main", *params, *(["force=true"] if n == 0 else [])), env=env | kill,
            cwd=tmp_path, start_new_session=True, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        out = killed.stdout + killed.stderr
        assert killed.returncode != 0, point
        step = point.split(":")[0]
        if n == 0:  # the killed download's partial file is there for the next main to remove
            assert parts(), out[-3000:]
        else:
            assert check_main(before, out, redo) == list(C.STEPS[: C.STEPS.index(step)])
        if orphans:  # the power cut's runs: nothing but this main could end them
            assert "marked KILLED" in killed.stdout, out[-3000:]
            for rid in orphans:
                assert client.get_run(rid).info.status == "KILLED", rid
        if whole_tree:
            left = [r for r in runs().values() if r.info.status == "RUNNING"]
            assert {r.data.tags.get(C.TAG_STEP) for r in left} >= {"main", "hpo"}, out[-3000:]
            orphans = [r.info.run_id for r in left]
        else:
            assert f"step {step} failed" in killed.stderr, out[-3000:]
            orphans = []
        redo = C.STEPS.index(step)

    before = runs()
    again = mlflow_run(env, "main", *params, cwd=tmp_path)
    assert check_main(before, again.stdout, redo) == list(C.STEPS)
    lines = step_lines(again.stdout)
    assert [state for state, _ in lines.values()] == ["reused"] * redo + ["ran"]
    assert not client.search_runs(["0"], "attributes.status = 'RUNNING'")
    champion = mlflow.pyfunc.load_model("models:/movielens-rankfm@champion")
    answer = champion.predict(pd.DataFrame({"user_id": [1]}), params={"k": 3})
    assert len(answer) == 3
    version = client.get_model_version_by_alias("movielens-rankfm", "champion")
    assert version.run_id == lines["train_best"][1]  # the model of the train_best that finished
    assert os.environ.get("RECFLOW_KILL_AT") is None
