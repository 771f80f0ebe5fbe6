"""MLflow runs of the pipeline's steps: opening a step's run, and finding and reading upstream ones.

In: step names, parameters and upstream run IDs (or none, meaning "the latest"). Out: tagged
MLflow runs, validated upstream runs and local copies of their artifacts; problems the user can
fix come out as ``UserError``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import mlflow
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from recflow.constants import (
    DEFAULT_EXPERIMENT_NAME,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    TAG_CODE_VERSION,
    TAG_ENTRY_POINT,
    TAG_PREFIX,
    TAG_PROCESS,
    TAG_STEP,
)
from recflow.errors import UserError, first_line
from recflow.processes import gone, process_tag
from recflow.tracking.cache import code_version

log = logging.getLogger(__name__)
# What the tracking store answers for a run ID that does not exist or is malformed.
MISSING = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}
FINISHED = RunStatus.to_string(RunStatus.FINISHED)


# MLflow names an unnamed run "<adjective>-<noun>-<number>", the number 0-1000 inclusive
# (e.g. defiant-swan-438, blushing-goat-1000).
_GENERATED_NAME = re.compile(r"[a-z]+-[a-z]+-\d{1,4}")


def is_generated_name(name: str | None) -> bool:
    """Whether MLflow made the run name up, so that a step may replace it with its own."""
    return not name or _GENERATED_NAME.fullmatch(name) is not None


def name_run(step: str, *details: object) -> None:
    """Name the active run after its step and what it ran on, e.g. ``hpo · ml-1m · 20 trials``,
    unless the user named it (``mlflow run --run-name``)."""
    current = MlflowClient().get_run(mlflow.active_run().info.run_id).info.run_name
    if is_generated_name(current) or current.split(" · ")[0] == step:
        mlflow.set_tag(MLFLOW_RUN_NAME, " · ".join([step, *map(str, details)]))


def claim_experiment(experiment_id: str) -> None:
    """Make the run's experiment read as ours in the UI: the training-runs view and, when it is
    MLflow's ``Default`` experiment holding nothing but this project's runs, a sensible name.

    ``mlflow run`` without ``--experiment-name`` puts every run in ``Default`` (ID 0). Renaming
    it, rather than moving runs elsewhere, keeps the run MLflow has already created in the
    experiment its steps use.
    """
    client = MlflowClient()
    experiment = client.get_experiment(experiment_id)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    chosen = os.environ.get("MLFLOW_EXPERIMENT_NAME") == experiment.name  # named on purpose
    if (
        experiment.name != "Default"
        or chosen
        or client.get_experiment_by_name(DEFAULT_EXPERIMENT_NAME)
    ):
        return
    found = client.search_runs([experiment_id], max_results=1000)
    if len(found) < 1000 and all(TAG_STEP in r.data.tags for r in found):
        try:
            client.rename_experiment(experiment_id, DEFAULT_EXPERIMENT_NAME)
        except MlflowException:  # a concurrent first run renamed it, or took the name
            return
        log.info(
            "experiment 'Default' renamed to %r (it holds only this project's runs); "
            "choose another with mlflow run --experiment-name",
            DEFAULT_EXPERIMENT_NAME,
        )


def ui_link(experiment_id: str) -> str:
    """Where the MLflow UI shows the experiment's runs in its model-training view. MLflow 3.17's
    UI picks its view from the GenAI / Model training toggle (remembered per browser, GenAI
    until changed) or this URL's ``workflowType``, not from the experiment's kind tag."""
    uri = mlflow.get_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


@contextlib.contextmanager
def step_run(step: str, params: Mapping[str, object]) -> Iterator[Run]:
    """Open (or, under ``mlflow run``, resume) the step's run, tag it and log its parameters.

    An exception inside marks the run FAILED.
    """
    with mlflow.start_run() as run:
        mlflow.set_tags(
            {TAG_STEP: step, TAG_CODE_VERSION: code_version(), TAG_PROCESS: process_tag()}
        )
        claim_experiment(run.info.experiment_id)
        if is_generated_name(run.info.run_name):
            mlflow.set_tag(MLFLOW_RUN_NAME, step)
        # `mlflow run` has logged the declared parameters already; logging a value again
        # in another spelling ("0" vs "0.0") would be an error, so add only missing ones.
        logged = MlflowClient().get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        yield run


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
    actual = run.data.tags.get(TAG_STEP) or run.data.tags.get(TAG_ENTRY_POINT)
    if actual != step:
        raise UserError(
            f"{param}={run_id} is a {actual or 'non-pipeline'!s} run, not a {step} run; "
            f"pass the run ID of a {step} run"
        )
    if run.info.status != FINISHED:
        raise UserError(
            f"{param}={run_id} is a {step} run with status {run.info.status}; "
            f"re-run {step} and pass the new run ID"
        )
    return run


def latest_step_run(
    experiment_id: str, step: str, param: str, links: Mapping[str, str] | None = None
) -> Run:
    """The most recent FINISHED run of ``step`` in the experiment, optionally linked to the given
    upstream runs (``links``: upstream parameter -> run ID); a UserError when there is none."""
    conditions = [f"tags.`{TAG_STEP}` = '{step}'", f"attributes.status = '{FINISHED}'"]
    conditions += [f"tags.`{upstream_tag(p)}` = '{v}'" for p, v in (links or {}).items()]
    found = MlflowClient().search_runs(
        [experiment_id], " and ".join(conditions),
        order_by=["attributes.start_time DESC"], max_results=1,
    )  # fmt: skip
    if not found:
        experiment = MlflowClient().get_experiment(experiment_id).name
        on = "".join(f" on {p}={v}" for p, v in (links or {}).items())
        raise UserError(
            f"{param} not given and experiment {experiment!r} has no finished {step} run{on}: "
            f"run `mlflow run . -e main` first, or pass -P {param}=<run ID>"
        )
    return found[0]


def upstream_tag(param: str) -> str:
    """The tag linking a run to the upstream run its parameter ``param`` resolved to."""
    return f"{TAG_PREFIX}{param}"


def download(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Download one artifact (file or folder) of a run into ``dst``."""
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
        )
    except MlflowException as e:
        raise UserError(
            f"cannot download {artifact_path!r} of run {run_id} from "
            f"{MlflowClient().get_run(run_id).info.artifact_uri}: {first_line(e)}"
        ) from e
    return Path(path)


def end_orphans(experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING step runs of ``experiment_id`` whose process, on this host, is gone
    (killed, or its machine restarted): nothing else would ever end them. Returns their IDs."""
    client = MlflowClient()
    ended = []
    for run in client.search_runs(
        [experiment_id], f"attributes.status = 'RUNNING' and tags.`{TAG_PROCESS}` != ''",
        max_results=1000,
    ):  # fmt: skip
        if gone(run.data.tags[TAG_PROCESS]):
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
    if ended:
        log.warning("marked %d runs of dead processes KILLED: %s", len(ended), ", ".join(ended))
    return ended
