"""Running trials until the study has enough complete ones, alone or beside other workers.

In: a study, its storage, the objective and the budget. Out: the study filled to ``n_trials``
complete trials (this worker's or others'), or stopped by the timeout or the attempt cap.

Up to ``n_jobs`` trials run at once, in threads; this thread asks for them in order and tells
each as it ends. A trial samples its parameters, and is judged by the pruner, against the study
without the ``lag(n_jobs)`` trials this worker started just before it (``history.as_of``): those
may still be running beside it, and which of them have ended depends on timing. A trial starts
only once every older trial of this worker has ended. So one worker's trial numbers,
parameters, pruning and values depend on the seed and the data alone, not on which trial ends
first: the same seed gives the same study again at the same ``n_jobs`` (another ``n_jobs`` gives
another study). Beside other workers a trial also sees their trials as far as they had got,
which depends on timing: a shared study is not reproducible.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from recflow.hpo.history import as_of
from recflow.hpo.liveness import end_late_trial_run, fail_stale_trials, heartbeat_seconds

log = logging.getLogger(__name__)
IN_BUDGET = (TrialState.COMPLETE, TrialState.RUNNING)
# How optuna refuses to record a result for a trial that another worker has already failed.
LATE = "Cannot tell a"
# Objective errors that fail the trial and let the study go on (a diverged configuration).
CAUGHT = (FloatingPointError,)


def count(study: optuna.Study, *states: TrialState) -> int:
    """Trials in any of ``states``."""
    return len(study.get_trials(deepcopy=False, states=states))


def lag(n_jobs: int) -> int:
    """How many of this worker's latest trials a new trial does not see: the n_jobs - 1 that
    may run beside it, and as many again, so that a free thread seldom waits for an older trial
    to end. On real ML-100K with two threads they were busy 95-97% of the time, against 99-100%
    with optuna's unordered threads; batches of n_jobs trials, each waiting for its slowest, kept
    them busy 79-85%, and replaying those trial durations a lag of 1 gives about 85%."""
    return 2 * (n_jobs - 1)


def run_worker(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    timeout: int = 0,
    n_jobs: int = 1,
) -> None:
    """Run trials until the study has ``n_trials`` complete ones, this worker's or others'.

    Trials other workers are running count towards the budget (as with optuna's
    ``MaxTrialsCallback`` over complete and running trials): with no place free this worker
    waits. Should such a worker die, its trial is failed (dead process, or silent heartbeat on
    a database) and this worker runs a replacement. Two workers finishing trials within the
    same few milliseconds may both start one more, so a shared study can end with one trial more
    than asked. Starts no trial after ``timeout`` seconds (running ones run to their end) nor
    after 4 * n_trials + 10 attempts of its own, since pruned and failed trials do not count. A
    trial that raises anything but ``CAUGHT`` (or ``TrialPruned``) is failed, and the error
    raised once this worker's running trials have ended.
    """
    deadline = time.monotonic() + timeout if timeout else None
    max_attempts, behind = 4 * n_trials + 10, lag(n_jobs)
    poll = min(heartbeat_seconds(), 5)
    asked: list[int] = []  # this worker's trial numbers, in the order it asked for them
    running: dict[Future, int] = {}  # each running trial's index in ``asked``
    uncaught: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="trial") as pool:
        try:
            while True:
                fail_stale_trials(study, storage)
                done = count(study, TrialState.COMPLETE) >= n_trials
                timed_out = deadline is not None and time.monotonic() >= deadline
                capped = len(asked) >= max_attempts
                if done or timed_out or capped or uncaught:
                    if not running:
                        if capped and not done:
                            log.warning("stopping after %d attempts of this worker", len(asked))
                        if uncaught:
                            raise uncaught[0]
                        return
                elif (
                    n_trials - count(study, *IN_BUDGET) > 0
                    and len(running) < n_jobs
                    # every trial older than the new one's lag has ended (and been told)
                    and all(i >= len(asked) - behind for i in running.values())
                ):
                    trial = _ask(study, asked, behind)
                    running[pool.submit(_attempt, objective, trial, storage)] = len(asked) - 1
                    continue
                if not running:  # other workers' trials fill the budget
                    time.sleep(poll)
                    continue
                ended, _ = wait(running, timeout=poll, return_when=FIRST_COMPLETED)
                for future in sorted(ended, key=running.get):
                    del running[future]
                    end = future.result()
                    told = _tell(study, end)
                    if told and end.error is not None and not isinstance(end.error, CAUGHT):
                        uncaught.append(end.error)
        finally:
            # Interrupted (Ctrl-C, a storage error): the running trials still end; tell them.
            for future in sorted(running, key=running.get):
                with contextlib.suppress(Exception):
                    _tell(study, future.result())


def _ask(study: optuna.Study, asked: list[int], behind: int) -> optuna.Trial:
    """The next trial, bound to the study without the ``behind`` trials asked just before it
    (the first trials of a run see the study as it was when the run began)."""
    with warnings.catch_warnings():
        # optuna warns of heartbeats outside study.optimize; _heartbeat below keeps them.
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        trial = study.ask()
    asked.append(trial.number)
    horizon = asked[max(0, len(asked) - 1 - behind)]
    return optuna.Trial(as_of(study, horizon), trial._trial_id)


@dataclass(frozen=True)
class _Ended:
    trial: optuna.Trial
    value: float | None = None
    state: TrialState | None = None  # None: complete (if the value is a number)
    error: BaseException | None = None


def _attempt(
    objective: Callable[[optuna.Trial], float],
    trial: optuna.Trial,
    storage: optuna.storages.BaseStorage,
) -> _Ended:
    with _heartbeat(storage, trial._trial_id):
        try:
            return _Ended(trial, value=objective(trial))
        except optuna.TrialPruned as e:
            log.info("trial %d pruned: %s", trial.number, e)
            return _Ended(trial, state=TrialState.PRUNED)
        except (Exception, KeyboardInterrupt) as e:
            log.warning("trial %d failed with parameters %s: %r", trial.number, trial.params, e,
                        exc_info=sys.exc_info())  # fmt: skip
            return _Ended(trial, state=TrialState.FAIL, error=e)


def _tell(study: optuna.Study, end: _Ended) -> bool:
    """Record how a trial ended (a value that is not a number fails it, with optuna's warning);
    False when the result came too late to count."""
    try:
        told = study.tell(end.trial.number, end.value, end.state)
    except ValueError as e:
        if not str(e).startswith(LATE):
            raise
        # This worker was cut off from the storage long enough for another to fail its trial
        # and run a replacement: the late result must not count twice.
        log.warning("trial %d of this worker was failed by another while this one was "
                    "unreachable; its late result is dropped", end.trial.number)  # fmt: skip
        end_late_trial_run(end.trial)
        return False
    if told.state == TrialState.COMPLETE:
        log.info("trial %d finished with %s: %s", told.number, told.value, told.params)
    return True


@contextlib.contextmanager
def _heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat while it runs, on a storage with heartbeats (a database), as
    ``study.optimize`` would: other workers fail a trial whose heartbeat stops."""
    rdb = isinstance(storage, optuna.storages.RDBStorage)
    interval = storage.get_heartbeat_interval() if rdb else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
