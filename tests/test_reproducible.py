"""hpo is reproducible from its seed at any n_jobs: each trial is sampled and pruned against the
study without the trials that may run beside it (recflow/hpo/workers.py, recflow/hpo/history.py).

Regression for two default ``main`` runs on ML-100K with the same seed ending at test NDCG@10
0.493 and 0.482: with ``study.optimize(n_jobs=2)`` the sampler and the pruner saw whichever
trials happened to have finished.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from recflow.hpo.sampling import TrialSeededTPE, make_pruner
from recflow.hpo.space import DEFAULT_SPACE, load_space, suggest
from recflow.hpo.storage import open_storage
from recflow.hpo.workers import lag, run_worker
from tests.helpers import ok

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def outcome(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.params, t.state, t.value) for t in study.trials]


def synthetic_study(pruner: str, n_jobs: int) -> optuna.Study:
    """A study of the default space on a made-up objective whose trials end in random order."""
    space = load_space(DEFAULT_SPACE)
    jitter = random.Random()  # unseeded on purpose: only the timing varies between runs

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        score = -abs(math.log(params.learning_rate / 0.08)) - abs(params.factors - 30) / 50
        for step in range(1, 9):
            time.sleep(jitter.random() * 0.003)
            trial.report(score * step / 8, step)
            if trial.should_prune():
                raise optuna.TrialPruned
        return score

    storage = optuna.storages.InMemoryStorage()
    # Named: Hyperband assigns trials to brackets by study name and trial number.
    study = optuna.create_study(
        study_name="synthetic", storage=storage, direction="maximize",
        sampler=TrialSeededTPE(11), pruner=make_pruner(pruner, 8),
    )  # fmt: skip
    run_worker(study, storage, objective, n_trials=14, n_jobs=n_jobs)
    return study


@pytest.mark.parametrize(("pruner", "n_jobs"), [("quartile", 1), ("quartile", 2), ("hyperband", 2)])
def test_same_seed_same_study_whatever_order_trials_end_in(pruner: str, n_jobs: int) -> None:
    first, second = synthetic_study(pruner, n_jobs), synthetic_study(pruner, n_jobs)
    assert outcome(first) == outcome(second)
    states = [t.state for t in first.trials]
    # Past TPE's 10 random start-up trials, so the history shaped the sampling.
    assert states.count(TrialState.COMPLETE) == 14 and len(states) > 10


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_trial_does_not_see_the_trials_started_just_before_it(n_jobs: int) -> None:
    """Each trial waits until the one before it has ended and been told, then samples and asks
    the pruner: both must see only the trials older than its lag (with study.optimize(n_jobs=2)
    they saw the one before). Serially the lag is 0: a trial sees every trial before it."""
    seen: list[tuple[str, int, set[int]]] = []

    def finished(study: optuna.Study) -> set[int]:
        return {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}

    class SpySampler(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, distribution):  # noqa: ANN001, ANN201
            seen.append(("sampler", trial.number, finished(study)))
            return super().sample_independent(study, trial, name, distribution)

    class SpyPruner(optuna.pruners.BasePruner):
        def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
            seen.append(("pruner", trial.number, finished(study)))
            return False

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage, direction="maximize", sampler=SpySampler(0), pruner=SpyPruner()
    )

    def objective(trial: optuna.Trial) -> float:
        deadline = time.monotonic() + 30
        while trial.number and trial.number - 1 not in finished(study):
            assert time.monotonic() < deadline, "the trial before was never told"
            time.sleep(0.01)
        x = trial.suggest_float("x", 0, 1)
        trial.report(x, 1)
        trial.should_prune()
        return x

    run_worker(study, storage, objective, n_trials=6, n_jobs=n_jobs)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    assert len(seen) == 12
    assert lag(1) == 0 and lag(2) >= 1
    for who, number, visible in seen:
        assert visible == set(range(max(0, number - lag(n_jobs)))), (who, number, visible)


SPACE = """\
factors: {type: int, low: 2, high: 8}
learning_rate: {type: float, low: 0.02, high: 0.2, log: true}
epochs: {type: int, low: 6, high: 9}
"""


def test_two_hpo_runs_with_two_jobs_give_the_same_study(prep_id: str, tmp_path: Path) -> None:
    """Hyperband prunes from the first trials on, comparing trials that reached the same epoch:
    with study.optimize(n_jobs=2) the two runs differed."""
    (tmp_path / "space.yaml").write_text(SPACE)
    studies = []
    for run in ("first", "second"):  # the same study, in a journal of each run's own
        journal = str(tmp_path / f"{run}.log")
        ok("hpo", [
            "--preprocess_run_id", prep_id, "--n_trials", "5", "--n_jobs", "2", "--seed", "5",
            "--storage", journal, "--study_name", "s", "--search_space", str(tmp_path / "space.yaml"),
            "--patience", "2", "--pruner", "hyperband",
        ])  # fmt: skip
        studies.append(optuna.load_study(study_name="s", storage=open_storage(journal, tmp_path)))
    assert outcome(studies[0]) == outcome(studies[1])
    assert [t.state for t in studies[0].trials].count(TrialState.COMPLETE) == 5
