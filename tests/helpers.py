"""Helpers shared by the test modules: project paths, running steps in-process or through
`mlflow run`, reading runs back, and small utilities. Fixtures live in ``conftest.py``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import mlflow
import optuna
import pandas as pd
from click.testing import CliRunner, Result

from recflow import constants as C
from recflow.testing.services import MLFLOW as MLFLOW
from recflow.testing.services import free_port as free_port
from steps import download, hpo, main, preprocess, recommend, register, train_best

PROJECT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT.parent / "shared" / "data"

COMMANDS = {
    "download": download.main, "preprocess": preprocess.main, "hpo": hpo.main,
    "train_best": train_best.main, "register": register.main, "main": main.main,
    "recommend": recommend.main,
}  # fmt: skip

# The summary `main` prints, one line per pipeline step: "<step> ran|reused <run ID> <secs>s".
STEP_LINE = re.compile(rf"^({'|'.join(C.STEPS)})\s+(ran|reused)\s+(\w{{32}})", re.M)
# What `mlflow run` prints on stderr when a run finishes.
RUN_ID = re.compile(r"=== Run \(ID '(\w{32})'\) succeeded ===")
# main's parameter in the tests of its plumbing (the cache, kills, restarts, servers, git URLs):
# one model where train_best averages five on the tiny archive, which is not what they test. On 2
# busy cores a tiny main's train_best took ~7 s with one model and ~11 s with five.
ONE_MODEL = "ensemble=1"


# --- steps in-process ------------------------------------------------------------------------


def invoke(command, args: list[str]) -> Result:
    """Run a click step in-process and return its result (exceptions captured)."""
    return CliRunner().invoke(command, args, catch_exceptions=True)


def runs_of(step: str) -> list[mlflow.entities.Run]:
    """All runs of a step in the current tracking store, newest first."""
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`recflow.step` = '{step}'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )


def ok(step: str, args: list[str]) -> str:
    """Run a step that must succeed; return its run ID."""
    result = invoke(COMMANDS[step], args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = runs_of(step)[0]
    assert run.info.status == "FINISHED"
    return run.info.run_id


def fails(step: str, args: list[str], message: str) -> mlflow.entities.Run | None:
    """Run a step that must fail with ``message``; return its (FAILED) run if one was opened."""
    before = {r.info.run_id for r in runs_of(step)}
    result = invoke(COMMANDS[step], args)
    assert result.exit_code != 0
    assert message in result.output, result.output
    new = [r for r in runs_of(step) if r.info.run_id not in before]
    for run in new:
        assert run.info.status == "FAILED"
    return new[0] if new else None


# --- `mlflow run` in a subprocess ------------------------------------------------------------


def user_env(tmp_path: Path, tracking_uri: str = "") -> dict[str, str]:
    """The environment of a user with the project's venv active, their data folder in
    ``tmp_path`` and a tracking store there (or at ``tracking_uri``). Run `mlflow run` in
    ``tmp_path``: a new SQLite store keeps its artifacts in ./mlruns of the working directory."""
    env = os.environ | {
        "MLFLOW_TRACKING_URI": tracking_uri or f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RECFLOW_DATA_DIR": str(tmp_path / "data"),
        # `--env-manager local` runs the MLproject's `python` from PATH.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("MLFLOW_RUN_ID", None)
    return env


def mlflow_cmd(
    entry: str, *params: str, uri: str = str(PROJECT),
    extra: tuple[str, ...] = ("--env-manager", "local"),
) -> list[str]:  # fmt: skip
    """The command line of `mlflow run <uri> -e <entry> -P <param>...`."""
    args = [MLFLOW, "run", uri, "-e", entry, *extra]
    for p in params:
        args += ["-P", p]
    return args


def mlflow_run(
    env: dict[str, str], entry: str, *params: str, uri: str = str(PROJECT), cwd: Path = PROJECT,
    extra: tuple[str, ...] = ("--env-manager", "local"), ok: bool = True,
) -> subprocess.CompletedProcess:  # fmt: skip
    """`mlflow run <uri> -e <entry> -P <param>...`; with ``ok``, it must succeed."""
    args = mlflow_cmd(entry, *params, uri=uri, extra=extra)
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    if ok:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


class Spawned(subprocess.Popen):
    """A background process in a process group of its own, whose output goes to a file rather
    than a pipe: a pipe that nobody reads while the test waits fills up (64 KiB) and stalls the
    process, and a file can still be read when a check fails."""

    def __init__(self, args: list[str], log: Path, **kwargs) -> None:
        self.log = log
        with log.open("wb") as out:
            super().__init__(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
            )

    def kill_tree(self) -> None:
        """SIGKILL the process and everything it started (its group), if still running."""
        if self.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def finish(self, timeout: float) -> str:
        """Wait for the process to end; its output."""
        self.wait(timeout)
        return self.output()


def step_lines(stdout: str) -> dict[str, tuple[str, str]]:
    """{step: (ran|reused, run ID)} from the summary `main` prints."""
    return {m[0]: (m[1], m[2]) for m in STEP_LINE.findall(stdout)}


def last_run_id(proc: subprocess.CompletedProcess) -> str:
    """The ID of the last run `mlflow run` reported as succeeded."""
    return RUN_ID.findall(proc.stderr)[-1]


# --- small utilities -------------------------------------------------------------------------


def sha256(path: Path) -> str:
    """The checksum of ``path`` in the form the steps accept: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def copy_tracking_folder(src: Path, dst: Path) -> None:
    """Copy a folder holding a sqlite tracking store (``mlflow.db``) and the artifacts and files
    its runs point to into ``dst`` (which may exist), making the copy a store of its own.

    MLflow records absolute locations in the database (experiments' artifact locations, runs'
    artifact URIs, logged models' and model versions' locations) and in a logged model's MLmodel
    file, and the runs' parameters name files in the folder too. A plain copy would keep pointing
    into ``src``, so every text value naming a path inside ``src`` is rewritten to the same path
    inside ``dst``, as if the runs had been made there; anything else naming ``src`` is an error.
    """
    if dst.is_relative_to(src) or src.is_relative_to(dst):
        raise ValueError(f"cannot copy {src} into {dst}")
    if (dst / "mlflow.db").exists():
        raise FileExistsError(f"{dst} already holds a tracking store")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("mlflow.db*"), dirs_exist_ok=True)
    for path in src.rglob("*"):
        if not path.is_file() or path.name.startswith("mlflow.db"):
            continue
        data = path.read_bytes()
        if str(src).encode() in data:
            copy = dst / path.relative_to(src)
            text = data.decode().replace(f"{src}/", f"{dst}/")  # a binary file fails to decode
            if str(src) in text:
                raise AssertionError(f"{copy} still names {src}")
            copy.write_text(text)
    with (
        closing(sqlite3.connect(src / "mlflow.db")) as source,
        closing(sqlite3.connect(dst / "mlflow.db")) as db,
    ):
        source.backup(db)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]:
                db.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                    f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                    (f"{src}/", f"{dst}/", str(src)),
                )
                left = db.execute(
                    f'SELECT "{column}" FROM "{table}" WHERE instr("{column}", ?) > 0 LIMIT 1',
                    (str(src),),
                ).fetchone()
                if left:
                    raise AssertionError(f"{table}.{column} still names {src}: {left[0]!r}")
        db.commit()


def checkerboard_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Known-answer data: even users like even items, odd users odd items.

    Train holds all but one liked item per user; that held-out item is the right answer. Each
    item is held out for one user only, so every item stays in train.
    """
    users, items = range(20), range(20)
    liked = [(u, i) for u in users for i in items if u % 2 == i % 2]
    df = pd.DataFrame(liked, columns=["user_id", "item_id"])
    held = df["item_id"] == (3 * df["user_id"]) % 20  # same parity as the user, one per user
    return df[~held].reset_index(drop=True), df[held].reset_index(drop=True)


def save_checkerboard_pyfunc(folder: Path) -> tuple[object, pd.DataFrame]:
    """Fit the checkerboard model, save it as our pyfunc in ``folder / "pyfunc"``; return the
    in-process model (loaded from the bundle) and the training frame."""
    from recflow.model.recommender import FMParams, Recommender
    from recflow.serving import pyfunc
    from recflow.testing.models import save_pyfunc

    train, _ = checkerboard_data()
    model = Recommender.fit(
        train, FMParams(factors=4, loss="bpr", epochs=20, learning_rate=0.05), seed=1
    )
    items = pd.DataFrame(
        {"item_id": range(20), "title": [f"T{i}" for i in range(20)], "genres": "G"}
    )
    save_pyfunc(model, items, train, folder, "pyfunc")
    return pyfunc.RecommenderModel.from_bundle(folder / "bundle"), train


def planned_steps(plan, monkeypatch) -> dict[str, dict[str, str]]:
    """The parameters ``run_pipeline`` passes each step for ``plan``, no step run (in an active
    run of the test's tracking store)."""
    from recflow.tracking import pipeline

    calls: dict[str, dict[str, str]] = {}

    def record(step: str, params: dict[str, str], exp: str, version: str | None):
        calls[step] = params
        return pipeline.StepRun(step, f"{step}-run", False, 0.0)

    monkeypatch.setattr(pipeline, "run_step", record)
    with mlflow.start_run() as run:
        pipeline.run_pipeline(plan, run.info.experiment_id, force=False)
    return calls


def study_trials(name: str, storage: optuna.storages.BaseStorage) -> list[optuna.trial.FrozenTrial]:
    """The trials of study ``name``; none while no worker has created it yet."""
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except KeyError:
        return []
