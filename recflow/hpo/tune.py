"""The hpo step's entry point: tune on prepared data, then log what the study found.

In: prepared splits, a ``Search`` (objective, space, budget, fidelity, seed), an opened storage
and study name, and the worker's hpo run. Out: a ``TuneResult``; ``log_result`` logs its counts,
best configuration (trained for its best trial's best epoch), best objective, plots and links to
the active MLflow run.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
from optuna.trial import TrialState
from threadpoolctl import threadpool_limits

from recflow.constants import PLOTS_DIR, TAG_BEST_TRIAL_RUN
from recflow.data.preprocess import Prepared
from recflow.errors import UserError
from recflow.evaluation.names import metric_key
from recflow.hpo import attrs
from recflow.hpo.fidelity import Fidelity
from recflow.hpo.objective import PATIENCE, Objective
from recflow.hpo.plots import save_plots
from recflow.hpo.sampling import TrialSeededTPE, make_pruner
from recflow.hpo.space import Dimension, configuration, max_epochs, warm_starts
from recflow.hpo.storage import open_study
from recflow.hpo.workers import count, run_worker
from recflow.model.recommender import FMParams
from recflow.tracking.contracts import content_digest, link_upstream, log_best_params


@dataclass(frozen=True)
class Search:
    """What to tune and how hard."""

    metric: str
    space: list[Dimension]
    n_trials: int
    seed: int
    pruner: str = "quartile"
    timeout: int = 0  # seconds; 0 = no limit
    n_jobs: int = 1
    fidelity: Fidelity = Fidelity(None, None)  # what ``data`` was sampled with (fidelity.apply)
    patience: int = PATIENCE  # epochs without improvement before a trial stops; 0 = never
    data_share: float = 1.0  # the share of the training rows a user sample keeps (Recommender.fit)


@dataclass(frozen=True)
class TuneResult:
    study: optuna.Study
    counts: dict[str, int]  # n_complete, n_pruned, n_fail

    @property
    def best(self) -> optuna.trial.FrozenTrial:
        return self.study.best_trial


def tune(
    data: Prepared,
    search: Search,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    parent_run_id: str,
) -> TuneResult:
    """Join (or create) the study and run trials until it has ``n_trials`` complete ones.

    The study's first trials are known-good configurations (``space.WARM_STARTS``), so a study
    never ends worse than them.
    """
    study = open_study(
        storage, study_name, search.metric, search.space,
        # The same seed, data and n_jobs give the same trials (workers.py says how).
        TrialSeededTPE(search.seed),
        make_pruner(search.pruner, max_epochs(search.space)),
        search.fidelity.label,
        "-".join(content_digest(split) for split in (data.train, data.valid)),
    )  # fmt: skip
    # Skipped when any trial (another worker's included) already has these values.
    for values in warm_starts(search.space):
        study.enqueue_trial(values, skip_if_exists=True)
    objective = Objective(
        data, search.space, search.metric, search.seed, parent_run_id, search.patience,
        search.data_share,
    )  # fmt: skip
    # Each trial evaluates in this process while its training child holds a core: n_jobs
    # trials sharing BLAS's default one-thread-per-core pools would oversubscribe the cores
    # (validation 1.6x slower with two trials on two cores).
    blas_threads = max(1, len(os.sched_getaffinity(0)) // search.n_jobs)
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        run_worker(study, storage, objective, search.n_trials, search.timeout, search.n_jobs)
    counts = {
        "n_complete": count(study, TrialState.COMPLETE),
        "n_pruned": count(study, TrialState.PRUNED),
        "n_fail": count(study, TrialState.FAIL),
    }
    return TuneResult(study, counts)


def log_result(
    result: TuneResult, metric: str, preprocess_run_id: str, space: list[Dimension]
) -> None:
    """Log the study's counts, best configuration (in ``space``), objective and plots to the
    active run."""
    mlflow.log_metrics(result.counts)
    if not result.counts["n_complete"]:
        raise UserError(
            f"no trial completed ({result.counts}); widen the search space or raise n_trials"
        )
    best = result.best
    # The best trial stopped at (or after) its best epoch: that is the tuned training length.
    trained = configuration(best.params, space)
    tuned = {**trained, "epochs": best.user_attrs.get(attrs.BEST_EPOCH, trained.get(
        "epochs", FMParams().epochs))}  # fmt: skip
    log_best_params(FMParams.from_dict(tuned))
    mlflow.log_params({f"best.{p}": v for p, v in tuned.items()})
    mlflow.log_metric(f"best_{metric_key(metric)}", best.value)
    mlflow.set_tag(TAG_BEST_TRIAL_RUN, best.user_attrs[attrs.TRIAL_RUN])
    link_upstream(preprocess_run_id=preprocess_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        for path in save_plots(result.study, Path(tmp)):
            mlflow.log_artifact(str(path), PLOTS_DIR)
