"""Which workers are alive, and what happens to the trials of dead ones.

In: a study whose trials record the worker (host:pid) and the MLflow runs that run them. Out:
trials of dead workers marked FAIL, and their MLflow runs, and the dead worker's hpo run, KILLED.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket

import optuna
from mlflow.tracking import MlflowClient
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from recflow.errors import UserError, first_line
from recflow.hpo import attrs
from recflow.processes import pid_alive

log = logging.getLogger(__name__)

# A trial killed between its creation and recording its worker has no owner to check; once
# this old, a live worker would long have recorded itself.
ORPHAN_AFTER = datetime.timedelta(seconds=60)


def worker_id() -> str:
    """host:pid of this process, recorded on each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_seconds() -> int:
    """How often a trial on a database storage proves its worker alive (RECFLOW_HEARTBEAT_SECONDS,
    default 30); a RUNNING trial silent for three intervals belongs to a dead worker."""
    raw = os.environ.get("RECFLOW_HEARTBEAT_SECONDS", "30")
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"RECFLOW_HEARTBEAT_SECONDS must be a whole number of seconds, not {raw!r}")
    return int(raw)


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Mark RUNNING trials of dead workers as FAIL and end their MLflow runs.

    A trial on a database storage whose heartbeat stopped belongs to a dead worker on any machine
    (optuna also checks this itself as each trial starts; both call ``end_dead_trial_runs``). A
    journal file has no heartbeats: there a trial belongs to a dead worker when its host is this
    one and its process is gone. Without this, such trials would stay RUNNING and hold their place
    in the n_trials budget forever.
    """
    if isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get(attrs.WORKER, "")).rpartition(":")
        if attrs.WORKER not in t.user_attrs:
            start = t.datetime_start
            if start is None or datetime.datetime.now(start.tzinfo) - start < ORPHAN_AFTER:
                continue
        elif worker_host != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError):
            continue  # another worker got there first (or the trial just finished)
        end_dead_trial_runs(study, t)


def end_dead_trial_runs(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Mark KILLED the MLflow run of a trial whose worker died, and that worker's hpo run.

    The trial's run is found by its trial-number tag when the worker died before recording the
    run's ID on the trial. An error here is logged, not raised: it must not stop the live worker.
    """
    log.warning("trial %d of a dead worker failed; ending its runs", trial.number)
    try:
        client = MlflowClient()
        worker_run = trial.user_attrs.get(attrs.WORKER_RUN)
        run_ids = [trial.user_attrs.get(attrs.TRIAL_RUN), worker_run]
        if run_ids[0] is None and worker_run:
            experiment = client.get_run(worker_run).info.experiment_id
            found = client.search_runs(
                [experiment],
                f"tags.{attrs.PARENT_RUN_TAG} = '{worker_run}' "
                f"and tags.`{attrs.TRIAL_NUMBER_TAG}` = '{trial.number}'",
            )  # fmt: skip
            run_ids[0] = found[0].info.run_id if found else None
        for run_id in run_ids:
            if run_id and client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, "KILLED")
    except Exception as e:  # the tracking server may be down too; the study comes first
        log.warning("could not end the runs of trial %d: %s", trial.number, first_line(e))


def end_late_trial_run(trial: optuna.Trial) -> None:
    """Tag ``LATE`` and mark KILLED the MLflow run of this worker's trial whose result came after
    another worker had failed the trial (this one was cut off from the storage meanwhile).

    The run may already say COMPLETE and FINISHED: the trial ended believing it counted, perhaps
    just before the cut, and its tags reached the server once the link was back. An error here is
    logged, not raised: the study comes first."""
    try:
        run_id = trial.user_attrs.get(attrs.TRIAL_RUN)
        if run_id:
            client = MlflowClient()
            client.set_tag(run_id, attrs.TRIAL_STATE_TAG, "LATE")
            client.set_terminated(run_id, "KILLED")
    except Exception as e:  # the tracking server may be down
        log.warning("could not mark the run of late trial %d: %s", trial.number, first_line(e))
