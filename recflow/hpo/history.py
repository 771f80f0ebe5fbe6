"""The study as a trial running beside others sees it: only the trials numbered below a horizon.

In: a study and a trial number (the horizon). Out: a view of the study whose reads of its trial
list (``get_trials``, the best trial, trial counts) leave out every trial numbered from the
horizon on; everything else, writes included, goes to the study's storage.

Trials running in threads sample their parameters and ask the pruner lazily, at ``suggest`` and
``should_prune`` time, from the study's trial list. A trial bound to a view
(``optuna.Trial(view, trial_id)``) is sampled and judged against the same history however far
the trials beside it have got (``workers.run_worker`` picks the horizon). The view wraps the
storage rather than the sampler or the pruner, so optuna's Hyperband, which builds a study of its
own over the storage and which optuna's trials recognise by its type, sees the same history.
"""

from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState


class _Before:
    """A storage whose trial lists hold only the trials numbered below ``horizon``."""

    def __init__(self, storage: BaseStorage, horizon: int) -> None:
        self._storage, self.horizon = storage, horizon

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = self._storage.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return [t for t in trials if t.number < self.horizon]

    # optuna's generic versions, which read the trial list through get_all_trials above.
    get_n_trials = BaseStorage.get_n_trials
    get_best_trial = BaseStorage.get_best_trial


def as_of(study: optuna.Study, horizon: int) -> optuna.Study:
    """``study`` without its trials numbered ``horizon`` or above.

    The view shares the study's sampler and pruner; its per-thread trial cache is its own, so a
    pool thread never samples from a list cached for another horizon.
    """
    view = copy.copy(study)  # Study.__setstate__ gives the copy a fresh thread-local cache
    view._storage = _Before(study._storage, horizon)
    return view
