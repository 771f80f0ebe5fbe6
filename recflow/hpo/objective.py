"""One trial: sample a configuration, train it, evaluate it after every epoch, log it to MLflow.

In: the prepared splits, the search space, the objective metric and the worker's hpo run. Out:
the trial's validation objective at its best epoch (training stops once validation has not
improved for ``patience`` epochs, see ``auto_patience``); a nested MLflow run with the trial's parameters, the
objective's learning curve, and ``best_epoch`` and ``best_<metric>`` for every metric at the
objective's k at that epoch.
"""

from __future__ import annotations

import contextlib
import logging
import time

import optuna
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from recflow.constants import TAG_STUDY
from recflow.data.preprocess import Prepared
from recflow.evaluation.accuracy import Holdout
from recflow.evaluation.names import metric_key, parse_metric
from recflow.failpoints import failpoint
from recflow.hpo import attrs
from recflow.hpo.fidelity import AUTO, parse_count
from recflow.hpo.liveness import worker_id
from recflow.hpo.space import Dimension, suggest
from recflow.model.recommender import Recommender
from recflow.model.training import fit_isolated

log = logging.getLogger(__name__)

# Epochs without a better validation score before a trial stops (0: never stop early). Learning
# curves on MovieLens wobble by an epoch or two around their peak and then decline for good.
PATIENCE = 3
# "auto" waits longer while waiting is cheap: about PATIENCE_ROWS training rows' worth of epochs,
# at least PATIENCE and at most MAX_PATIENCE. On small data the validation curve is flat and noisy
# after its rise (ML-100K per-user 75/25, three split seeds: patience 3 stopped the best region at
# 18-27 epochs, test NDCG@10 0.462 after retraining; 12-15 at 33-37 epochs, 0.472). From ~290,000
# training rows on (ML-1M, tuning samples of big data) it is PATIENCE.
PATIENCE_ROWS = 1_000_000
MAX_PATIENCE = 15


def auto_patience(n_train_rows: int) -> int:
    """The patience "auto" means for a training split of ``n_train_rows`` rows."""
    return min(MAX_PATIENCE, max(PATIENCE, round(PATIENCE_ROWS / max(n_train_rows, 1))))


def parse_patience(value: str) -> str | int:
    """'auto' or a non-negative integer; anything else is a one-line error."""
    return parse_count("patience", value, (AUTO,), minimum=0)


class _EarlyStop(Exception):
    pass


class Objective:
    """Train one configuration, evaluating on the validation split after every epoch.

    Each trial is an MLflow run, a child of ``parent_run_id``. The client API is used rather
    than the fluent one because trials may run in worker threads (``n_jobs``), which do not
    share the fluent API's active-run stack.
    """

    def __init__(
        self,
        data: Prepared,
        space: list[Dimension],
        metric: str,
        seed: int,
        parent_run_id: str,
        patience: int = PATIENCE,
        data_share: float = 1.0,
    ) -> None:
        self.data, self.space, self.seed, self.patience = data, space, seed, patience
        self.data_share = data_share  # of the whole training split, when data is a user sample
        self.key = metric_key(metric)
        self.k = parse_metric(metric)[1]
        self.parent = MlflowClient().get_run(parent_run_id)

    def __call__(self, trial: optuna.Trial) -> float:
        # The run first: a trial with a worker always names that worker's run.
        trial.set_user_attr(attrs.WORKER_RUN, self.parent.info.run_id)
        trial.set_user_attr(attrs.WORKER, worker_id())
        client = MlflowClient()
        params = suggest(trial, self.space)
        run = client.create_run(
            self.parent.info.experiment_id,
            run_name=f"trial-{trial.number}",
            tags={
                attrs.PARENT_RUN_TAG: self.parent.info.run_id,
                TAG_STUDY: trial.study.study_name,
                attrs.TRIAL_NUMBER_TAG: str(trial.number),
            },
        )
        run_id = run.info.run_id
        trial.set_user_attr(attrs.TRIAL_RUN, run_id)
        logged = {**params.to_dict(), "trial_number": trial.number}
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in logged.items()])
        best: dict[str, float] = {}  # the metrics of the best epoch so far, and that epoch
        holdout: list[Holdout] = []  # indexed at the first epoch: the model's ids never change

        def on_epoch(epoch: int, model: Recommender) -> None:
            if not holdout:
                holdout.append(Holdout.of(model, self.data.train, self.data.valid))
            failpoint("hpo:mid-trial")
            metrics = holdout[0].evaluate(model.scores, self.k)
            value = metrics[self.key]
            client.log_metric(run_id, self.key, value, step=epoch + 1)
            if not best or value > best[self.key]:
                best.clear()
                best.update(metrics, **{attrs.BEST_EPOCH: epoch + 1})
            trial.report(value, epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")
            if self.patience and epoch + 1 - best[attrs.BEST_EPOCH] >= self.patience:
                raise _EarlyStop

        state, status = "FAILED", "FAILED"
        try:
            with contextlib.suppress(_EarlyStop):
                fit_isolated(
                    self.data.train, params, self.seed + trial.number, on_epoch,
                    user_features=self.data.user_features, item_features=self.data.item_features,
                    data_share=self.data_share,
                )  # fmt: skip
            trial.set_user_attr(attrs.BEST_EPOCH, int(best[attrs.BEST_EPOCH]))
            # The objective's curve is logged epoch by epoch under its own key; the trial's score
            # is the best epoch's, logged as best_<metric> (as the hpo run logs the study's).
            now = int(time.time() * 1000)
            at_best = [
                Metric(k if k == attrs.BEST_EPOCH else f"best_{k}", v, now, 0)
                for k, v in best.items()
            ]
            client.log_batch(run_id, metrics=at_best)
            state, status = "COMPLETE", "FINISHED"
            return best[self.key]
        except optuna.TrialPruned:
            # A pruned trial ran fine: FINISHED in MLflow, tagged PRUNED.
            state, status = "PRUNED", "FINISHED"
            raise
        finally:
            # Whether the result still counts is known only when it is told: should another worker
            # have failed this trial meanwhile, the worker retags the run (workers._tell).
            client.set_tag(run_id, attrs.TRIAL_STATE_TAG, state)
            client.set_terminated(run_id, status)
