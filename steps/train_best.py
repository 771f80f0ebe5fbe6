"""Step 4: retrain the best configuration on train+valid, test it and log the served model."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import click
import mlflow
import pandas as pd

from recflow import constants as C
from recflow.data.preprocess import Prepared
from recflow.errors import UserError
from recflow.evaluation import baselines
from recflow.evaluation.baselines import Ease, ease_fits, ease_scorer
from recflow.evaluation.blending import BLEND_BELOW, Blended, blend_skipped, choose_blend
from recflow.evaluation.figures import save_figures
from recflow.evaluation.names import metric_key, parse_metric
from recflow.evaluation.report import test_report
from recflow.failpoints import failpoint
from recflow.hpo.fidelity import parse_count
from recflow.model.recommender import FMParams, Recommender
from recflow.model.training import (
    ENSEMBLE,
    ENSEMBLE_BELOW,
    PARALLEL_FROM,
    ensemble_size,
    fit_ensemble,
    training_threads,
)
from recflow.serving import bundle, packaging
from recflow.tracking import space
from recflow.tracking.contracts import (
    as_dataset,
    link_upstream,
    linked,
    load_best_params,
    load_prepared,
    log_input,
    tuned_curve,
    tuned_metric,
)
from steps.common import SEED, options, step

log = logging.getLogger(__name__)

# A configuration that trained on the training split can still diverge on train+valid (more
# steps per epoch at the same rate); the rate is halved at most this many times before failing.
HALVINGS = 2


option = options("train_best")


@click.command(
    help="Train the hpo run's best configuration on train+valid and evaluate it on test.\n\n"
    f"Reads: {C.DATA_DIR}/ of a preprocess run; {C.BEST_PARAMS_FILE} of an hpo run.\n"
    f"Writes: {C.TEST_PREFIX}<metric>_at_<k>, {C.POPULARITY_PREFIX}<metric>_at_<k> and "
    f"{C.EASE_PREFIX}<metric>_at_<k> metrics (EASE's λ chosen on validation: {C.EASE_FILE}) "
    f"at k={C.DEFAULT_K} and the tuned metric's k (accuracy, coverage, gini, novelty, "
    f"avg_popularity); {C.PLOTS_DIR}/*.png; the pyfunc model '{C.MODEL_NAME}'."
)
@option("preprocess_run_id", help="Run ID of a finished preprocess run (default: the latest).")  # fmt: skip
@option("hpo_run_id", help="Run ID of a finished hpo run (default: the latest on that preprocess run).")  # fmt: skip
@option("threads", type=click.IntRange(min=0), help="Training threads. 0: every core from "
              f"{PARALLEL_FROM:,} interactions on without side features (parallel SGD, not "
              "bit-for-bit reproducible), else one.")  # fmt: skip
@option("ensemble", help="Models trained from seeds seed, seed+1, ... and averaged into the one "
              f"logged. auto: {ENSEMBLE} below {ENSEMBLE_BELOW:,} training interactions, "
              "else 1.")  # fmt: skip
@option("blend", type=click.Choice(["auto", "none"]), help="auto: where EASE is fitted and "
              f"below {BLEND_BELOW:,} training interactions, serve the blend of the model's and EASE's scores, EASE at the grid's λ under the one "
              "chosen alone, its share chosen on validation (share 0 serves the model alone); "
              "none: the model alone.")  # fmt: skip
@option("seed", type=SEED)
def main(
    preprocess_run_id: str, hpo_run_id: str, threads: int, ensemble: str, blend: str, seed: int
) -> None:
    with step("train_best") as s, tempfile.TemporaryDirectory() as tmp:
        requested = parse_count("ensemble", ensemble, ("auto",), minimum=1)
        prep_run = s.upstream("preprocess_run_id", preprocess_run_id)
        prep = prep_run.info.run_id
        tuned = s.upstream("hpo_run_id", hpo_run_id, preprocess_run_id=prep)
        tuned_on = linked(tuned, "preprocess_run_id")
        if tuned_on != prep:
            log.warning("hpo run %s was tuned on preprocess run %s", tuned.info.run_id, tuned_on)
        data = load_prepared(prep, Path(tmp) / "data")
        params = load_best_params(tuned.info.run_id, Path(tmp))
        mlflow.log_params({f"model.{k}": v for k, v in params.to_dict().items()})
        dataset = prep_run.data.tags.get(C.TAG_DATASET, "?")

        seen = data.seen()
        # However hpo sampled users, the final model sees them all.
        n_users = seen[C.USER_COL].nunique()
        mlflow.set_tag(C.TAG_TRAINED_ON, f"full data: {n_users} users, {len(seen)} interactions")
        threads = training_threads(threads, len(seen), params)
        size = ensemble_size(requested, len(seen))
        mlflow.log_metrics({
            "n_train_users": n_users, "n_train_interactions": len(seen), "train_threads": threads,
            "ensemble_size": size,
        })  # fmt: skip
        seeds = [f"{size} seeds"] if size > 1 else []
        s.label(dataset, f"{params.factors} factors", f"{params.epochs} epochs", *seeds)
        test_set = as_dataset(data.test, f"{dataset} test")
        log_input(as_dataset(seen, f"{dataset} train+valid"), "training")
        log_input(test_set, "test")
        fit = {"user_features": data.user_features, "item_features": data.item_features,
               "threads": threads}  # fmt: skip
        model = train(seen, params, seed, size, fit)
        # Test at the tuned metric's k too, so register can gate on the metric that was tuned.
        name, k = parse_metric(tuned_metric(tuned))
        ease = fit_ease(model, data, seen, name, k)
        compared = {C.EASE_PREFIX: ease.scorer} if ease else {}
        served, chosen = model, [write_ease(ease, f"{name}@{k}", Path(tmp))] if ease else []
        blending = ease is not None and blend == "auto"
        if blending and (why := blend_skipped(len(seen))):
            mlflow.set_tag(C.TAG_BLEND_SKIPPED, why)
            click.echo(f"blend with EASE skipped: {why}")
        elif blending:
            # The share is chosen like any hyperparameter: fitted on train, ranked on valid, with
            # the best configuration fitted on train too.
            on_train = train(data.train, model.params, seed, size, fit)  # the rate trained with
            choice = choose_blend(on_train, data.train, data.valid, name, k, ease)
            mlflow.log_param("blend.share", choice.share)
            chosen.append(write_json(Path(tmp) / Path(C.BLEND_FILE).name, choice.validation,
                                     metric=f"{name}@{k}", share=choice.share,
                                     **{"lambda": choice.lam}))  # fmt: skip
            if choice.share > 0:
                mlflow.log_param("blend.ease_lambda", choice.lam)  # at share 0 it means nothing
                weights = ease.weights_at(choice.lam)
                served = Blended(model, ease_scorer(ease.x, weights), choice.share)
                compared[C.RANKFM_PREFIX] = model.scores
        report = test_report(served, seen, data.test, (C.DEFAULT_K, k), compared)
        figures = save_figures(
            report, Path(tmp) / C.PLOTS_DIR, tuned_curve(tuned), params.epochs, tuned_metric(tuned)
        )
        folder = Path(tmp) / "bundle"
        bundle.write_bundle(folder, model, data.items, seen, data.test)
        if isinstance(served, Blended):
            bundle.write_blend(folder, weights, served.share)
        # Everything this run logs must fit before any of it is logged.
        space.require_for_artifacts("the model and its plots", folder, *figures, *chosen)
        for path in figures:
            mlflow.log_artifact(str(path), C.PLOTS_DIR)
        for path in chosen:
            mlflow.log_artifact(str(path), str(Path(C.EASE_FILE).parent))
        example = sorted(seen[C.USER_COL].unique()[:2].tolist())
        info = packaging.log_model(folder, example_users=example)
        failpoint("train_best:model-logged")
        # Linked to the logged model and the test set: the model's page in the UI shows them.
        mlflow.log_metrics(report.metrics, model_id=info.model_id, dataset=test_set)
        mlflow.set_tag(C.TAG_MODEL_URI, info.model_uri)
        link_upstream(preprocess_run_id=prep, hpo_run_id=tuned.info.run_id)
        key = metric_key(f"ndcg@{C.DEFAULT_K}")
        click.echo(f"test {key} = {report.metrics[C.TEST_PREFIX + key]:.4f} "
                   f"(popularity {report.metrics[C.POPULARITY_PREFIX + key]:.4f})")  # fmt: skip


def fit_ease(
    model: Recommender, data: Prepared, seen: pd.DataFrame, metric: str, k: int
) -> Ease | None:
    """EASE on ``seen`` (train and valid) with λ chosen on validation by the tuned metric
    (logged as a param); None, and the reason in a tag, when its item-item matrices would not
    fit in memory or no λ can be chosen."""
    reason = ease_fits(len(model.item_ids))
    if reason is None:
        try:
            ease = baselines.fit_ease(model, data.train, data.valid, seen, metric, k)
        except ValueError as e:  # no validation interactions to choose λ on
            reason = f"EASE's λ cannot be chosen: {e}"
        else:
            mlflow.log_param("ease.lambda", ease.lam)
            return ease
    mlflow.set_tag(C.TAG_EASE_SKIPPED, reason)
    click.echo(f"EASE baseline skipped: {reason}")
    return None


def train(df: pd.DataFrame, params: FMParams, seed: int, size: int, fit: dict) -> Recommender:
    """``size`` models trained from seeds seed, seed+1, ... and averaged; where ``params``
    diverges, again at half the learning rate (``HALVINGS`` times at most, each logged: the
    model's own params say the rate it was trained with)."""
    halved = 0
    while True:
        try:
            models = fit_ensemble(df, params, [seed + i for i in range(size)], **fit)
            return Recommender.average(models)
        except FloatingPointError as e:
            if halved == HALVINGS:
                raise UserError(f"training the best configuration failed: {e} (the learning "
                                f"rate was halved {HALVINGS} times)") from e  # fmt: skip
            lowered = dataclasses.replace(params, learning_rate=params.learning_rate / 2)
            message = (f"learning rate {params.learning_rate:.4g} diverged on "
                       f"{len(df)} interactions; trained at {lowered.learning_rate:.4g}")  # fmt: skip
            click.echo(f"warning: {message}")
            mlflow.set_tag(C.TAG_RATE_LOWERED, message)
            params, halved = lowered, halved + 1


def write_ease(ease: Ease, metric: str, folder: Path) -> Path:
    """The λ tried and chosen on validation, as the file logged at ``C.EASE_FILE``."""
    return write_json(folder / Path(C.EASE_FILE).name, metric=metric, validation=ease.validation,
                      **{"lambda": ease.lam})  # fmt: skip


def write_json(path: Path, validation: dict[float, object], **fields: object) -> Path:
    """``fields`` and the validation score at each value tried (or, nested, each pair), as a
    JSON file."""
    path.write_text(
        json.dumps({**fields, "validation": {str(v): m for v, m in validation.items()}})
    )
    return path


if __name__ == "__main__":
    main()
