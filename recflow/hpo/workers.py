"""Running trials until the study has enough complete ones, alone or beside other workers.

In: a study, its storage, the objective and the budget. Out: the study filled to ``n_trials``
complete trials (this worker's or others'), or stopped by the timeout or the attempt cap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from recflow.hpo.liveness import fail_stale_trials, heartbeat_seconds

log = logging.getLogger(__name__)
IN_BUDGET = (TrialState.COMPLETE, TrialState.RUNNING)
# How optuna refuses to record a result for a trial that another worker has already failed.
LATE = "Cannot tell a"


def count(study: optuna.Study, *states: TrialState) -> int:
    """Trials in any of ``states``."""
    return len(study.get_trials(deepcopy=False, states=states))


def run_worker(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    timeout: int = 0,
    n_jobs: int = 1,
) -> None:
    """Run trials until the study has ``n_trials`` complete ones, this worker's or others'.

    Trials other workers are running count towards the budget (optuna's ``MaxTrialsCallback``
    over complete and running trials), so this worker stops starting trials once they would fill
    it, then waits: should such a worker die, its trial is failed (dead process, or silent
    heartbeat on a database) and this worker runs a replacement. Two workers finishing trials
    within the same few milliseconds may both start one more, so a shared study can end with
    one trial more than asked. Stops early at ``timeout`` seconds or after 4 * n_trials + 10
    attempts of its own, since pruned and failed trials do not count.
    """
    deadline = time.monotonic() + timeout if timeout else None
    max_attempts, attempts = 4 * n_trials + 10, 0
    poll = min(heartbeat_seconds(), 5)
    budget = MaxTrialsCallback(n_trials, states=IN_BUDGET)

    lock = threading.Lock()

    def counted(trial: optuna.Trial) -> float:
        nonlocal attempts
        with lock:  # trials may run in threads (n_jobs)
            attempts += 1
        return objective(trial)

    while True:
        fail_stale_trials(study, storage)
        complete = count(study, TrialState.COMPLETE)
        left = None if deadline is None else deadline - time.monotonic()
        if complete >= n_trials or (left is not None and left <= 0):
            return
        free = n_trials - count(study, *IN_BUDGET)
        if free <= 0:
            time.sleep(poll)
        elif attempts >= max_attempts:
            log.warning("stopping after %d attempts of this worker", attempts)
            return
        else:
            try:
                # No more threads than free places: each thread starts a trial at once.
                study.optimize(
                    counted, n_trials=max_attempts - attempts, timeout=left,
                    n_jobs=min(n_jobs, free), catch=(FloatingPointError,), callbacks=[budget],
                )  # fmt: skip
            except ValueError as e:
                if not str(e).startswith(LATE):
                    raise
                # This worker was cut off from the storage long enough for another to fail its
                # trial and run a replacement: the late result must not count twice.
                log.warning("a trial of this worker was failed by another while this one was "
                            "unreachable; its late result is dropped")  # fmt: skip
