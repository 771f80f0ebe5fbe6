"""MLflow glue shared by the steps: the step run, upstream runs by ID, the code version, the cache.

In: step names, parameters and upstream run IDs. Out: MLflow runs tagged so that ``main`` can
find reusable ones, and local copies of upstream artifacts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
import pandas as pd
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recflow.constants import (
    DATA_DIR,
    ITEM_FEATURES_FILE,
    ITEMS_FILE,
    TAG_CODE_VERSION,
    TAG_STEP,
    TEST_FILE,
    TRAIN_FILE,
    USER_FEATURES_FILE,
    VALID_FILE,
)  # fmt: skip
from recflow.errors import UserError

log = logging.getLogger(__name__)
# What the tracking store answers for a run ID that does not exist or is malformed.
MISSING = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# What a step's result depends on: the code and the environment spec (not docs or tests).
CODE_GLOBS = ("recflow/**/*.py", "steps/**/*.py", "MLproject", "conda.yaml")


def code_version(root: Path = PROJECT_ROOT) -> str:
    """A hash of the project's source files; works without git (e.g. an exported tarball)."""
    h = hashlib.sha256()
    files = sorted({p for g in CODE_GLOBS for p in root.glob(g) if p.is_file()})
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def setup_logging() -> None:
    """Log INFO lines from the project to stderr (called by the step entry points only)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


@contextlib.contextmanager
def step_run(step: str, params: Mapping[str, object]) -> Iterator[Run]:
    """Open (or, under ``mlflow run``, resume) the step's run, tag it and log its parameters.

    An exception inside marks the run FAILED; a ``UserError`` becomes a one-line click error
    and a non-zero exit.
    """
    try:
        with mlflow.start_run() as run:
            mlflow.set_tags({TAG_STEP: step, TAG_CODE_VERSION: code_version()})
            # `mlflow run` has logged the declared parameters already; logging a value again
            # in another spelling ("0" vs "0.0") would be an error, so add only missing ones.
            logged = MlflowClient().get_run(run.info.run_id).data.params
            mlflow.log_params({k: v for k, v in params.items() if k not in logged})
            yield run
    except UserError as e:
        raise click.ClickException(str(e)) from e


def get_step_run(run_id: str, step: str, param: str) -> Run:
    """The FINISHED run ``run_id`` of ``step``, or a UserError saying what is wrong with it."""
    if not run_id:
        raise UserError(f"{param} is required: pass the run ID of a finished {step} run")
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as e:
        if e.error_code not in MISSING:
            raise  # e.g. the tracking server is down: not the user's run ID at fault
        raise UserError(
            f"{param}={run_id!r}: no such run in the tracking store {mlflow.get_tracking_uri()}"
        ) from e
    actual = run.data.tags.get(TAG_STEP) or run.data.tags.get("mlflow.project.entryPoint")
    if actual != step:
        raise UserError(
            f"{param}={run_id} is a {actual or 'non-pipeline'!s} run, not a {step} run; "
            f"pass the run ID of a {step} run"
        )
    if run.info.status != RunStatus.to_string(RunStatus.FINISHED):
        raise UserError(
            f"{param}={run_id} is a {step} run with status {run.info.status}; "
            f"re-run {step} and pass the new run ID"
        )
    return run


def download(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Download one artifact (file or folder) of a run into ``dst``."""
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
        )
    except MlflowException as e:
        raise UserError(
            f"cannot download {artifact_path!r} of run {run_id} from "
            f"{MlflowClient().get_run(run_id).info.artifact_uri}: {str(e).splitlines()[0]}"
        ) from e
    return Path(path)


def find_reusable_run(
    experiment_id: str, step: str, params: Mapping[str, str], version: str
) -> Run | None:
    """The newest FINISHED run of ``step`` with exactly these params (as strings) and code."""
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{TAG_STEP}` = '{step}' and tags.`{TAG_CODE_VERSION}` = '{version}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=200,
    )
    for run in runs:
        stored = run.data.params
        if all(k in stored and unquote(stored[k]) == unquote(v) for k, v in params.items()):
            return run
    return None


def unquote(value: str) -> str:
    """A parameter as given: `mlflow run` stores string parameters shell-quoted ("''" for "")."""
    try:
        parts = shlex.split(value)
    except ValueError:
        return value
    return parts[0] if len(parts) == 1 else value if parts else ""


@dataclass(frozen=True)
class Prepared:
    """A preprocess run's outputs, loaded."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    user_features: pd.DataFrame
    item_features: pd.DataFrame
    items: pd.DataFrame


def load_prepared(run_id: str, dst: Path, param: str = "preprocess_run_id") -> Prepared:
    """Validate ``run_id`` as a preprocess run and load its data artifacts."""
    get_step_run(run_id, "preprocess", param)
    folder = download(run_id, DATA_DIR, dst)
    files = (TRAIN_FILE, VALID_FILE, TEST_FILE, USER_FEATURES_FILE, ITEM_FEATURES_FILE, ITEMS_FILE)
    return Prepared(*(pd.read_parquet(folder / f) for f in files))
