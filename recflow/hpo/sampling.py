"""How trials are drawn and stopped: the seeded TPE sampler and the epoch-wise pruner.

In: a seed, a pruner name and the most epochs a trial can train. Out: optuna samplers and
pruners.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from recflow.errors import UserError

PRUNERS = ("quartile", "median", "hyperband", "none")


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """Multivariate TPE whose random draws for a trial depend on the seed and the trial number.

    A plain seeded sampler gives every worker the same random stream, so workers sharing a study
    would try the same configurations in lockstep. Each trial here gets its own TPE sampler,
    seeded from the seed and the trial number: a worker alone stays repeatable (same seed, same
    data, same trials, given the same history: ``workers.run_worker`` shows each trial a history
    that does not depend on timing) while workers, holding different trial numbers, draw
    different configurations. TPE keeps no state between trials but its random stream (it reads
    the history from the study), so a fresh sampler per trial loses nothing.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._per_trial: dict[int, optuna.samplers.TPESampler] = {}

    def _tpe(self, trial: optuna.trial.FrozenTrial) -> optuna.samplers.TPESampler:
        sampler = self._per_trial.get(trial.number)
        if sampler is None:
            trial_seed = (self.seed * 1_000_003 + trial.number) % 2**32
            sampler = optuna.samplers.TPESampler(seed=trial_seed, multivariate=True, group=True)
            self._per_trial[trial.number] = sampler
        return sampler

    def infer_relative_search_space(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return self._tpe(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, Any]:
        return self._tpe(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        return self._tpe(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._tpe(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        sampler = self._per_trial.pop(trial.number, None)
        if sampler is not None:
            sampler.after_trial(study, trial, state, values)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """The epoch-wise pruner, after 5 trials and 5 epochs of warm-up (at 3, slow starters that
    end among the best were pruned as often as bad configurations).

    ``quartile`` (default) stops a trial in the bottom quarter of earlier trials at the same
    epoch. The budget counts *complete* trials, so every pruned trial is replaced: ``median``
    prunes about half of all trials once the sampler has found a good region (23 of 40 in an
    ML-1M-scale study, many within 0.03 of the best), nearly doubling the trials run, while the
    bottom quarter holds the configurations that are clearly bad. ``hyperband`` prunes hardest
    (most trials stop at its first rungs); ``none`` never prunes.
    """
    if name == "quartile":
        # optuna's percentile is the share kept: 75.0 prunes the bottom quarter.
        return optuna.pruners.PercentilePruner(75.0, n_startup_trials=5, n_warmup_steps=5)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, max_resource=max_epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}; choose one of: {', '.join(PRUNERS)}")
