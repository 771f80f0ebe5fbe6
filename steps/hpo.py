"""Step 3: tune the recommender's hyperparameters with optuna, one nested MLflow run per trial."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import click
import mlflow
import optuna

from recflow import constants as C
from recflow.evaluation.names import metric_key
from recflow.hpo import budget, fidelity, sampling, space, tune
from recflow.hpo.objective import MAX_PATIENCE, PATIENCE, auto_patience, parse_patience
from recflow.hpo.storage import default_study_name, open_storage
from recflow.tracking.contracts import load_prepared, log_splits
from steps.common import SEED, data_dir, options, step

option = options("hpo")


@click.command(
    help="Search hyperparameters on the validation split (TPE sampler, epoch-wise pruning, early "
    "stopping at each trial's best epoch, which becomes the tuned epochs). The first trials are "
    "known-good configurations (the default first). Big data is tuned on a seeded sample of users (--sample_users) "
    "and validated on a sample (--eval_users); train_best trains on everything. Re-running with "
    "the same study continues it until n_trials trials are complete; several processes sharing "
    "a storage and study split the work.\n\n"
    f"Reads: the {C.DATA_DIR}/ artifacts of a preprocess run (--preprocess_run_id).\n"
    f"Writes: one nested run per trial; {C.BEST_PARAMS_FILE}; best.<param> params; "
    f"best_<metric>; n_complete / n_pruned / n_fail; {C.PLOTS_DIR}/*.png and {C.PLOTS_DIR}/study.html (interactive); the resolved "
    f"fidelity.* params and the {C.TAG_TUNED_ON_SAMPLE} tag."
)
@option("preprocess_run_id", help="Run ID of a finished preprocess run (default: the latest).")  # fmt: skip
@option("n_trials", help="Complete trials the study should have in total; 'auto': "
              f"{budget.TRIALS}, or {budget.SMALL_DATA_TRIALS} while the training split has fewer than "
              f"{budget.SMALL_DATA_ROWS:,} rows, where trials are cheap.")  # fmt: skip
@option("timeout", type=click.IntRange(min=0), help="Stop starting trials after this many seconds; 0 = no limit.")  # fmt: skip
@option("metric", help="Objective on the validation split, e.g. ndcg@10, recall@20.")  # fmt: skip
@option("search_space", help="Search-space YAML (default: the packaged one).")
@option("pruner", type=click.Choice(sampling.PRUNERS))
@option("storage", help="optuna storage: a database URL or a journal file path "
              "(default: $RECFLOW_DATA_DIR/optuna/studies.journal).")  # fmt: skip
@option("study_name", help="Default: <preprocess run>-<metric>-<space digest>.")
@option("n_jobs", type=click.IntRange(min=0), help="Trials run in parallel in this process; 0 = one per CPU core.")  # fmt: skip
@option("sample_users", help="Tune on this many users (seeded sample): a number, 'all', or 'auto' (all "
              f"while the training split has <= {fidelity.AUTO_TRAIN_ROWS:,} rows, else about "
              "that many rows' worth of users).")  # fmt: skip
@option("eval_users", help="Validate each trial on this many validation users (seeded sample): a number, "
              f"'all', or 'auto' (at most {fidelity.AUTO_EVAL_USERS:,}).")  # fmt: skip
@option("patience", help="A trial stops after this many epochs without a better validation score "
              f"(0 = train every trial to its epochs); 'auto': {PATIENCE}, up to {MAX_PATIENCE} "
              "on small data, where epochs are cheap.")  # fmt: skip
@option("seed", type=SEED)
def main(
    preprocess_run_id: str, n_trials: str, timeout: int, metric: str, search_space: str,
    pruner: str, storage: str, study_name: str, n_jobs: int, sample_users: str, eval_users: str,
    patience: str, seed: int,
) -> None:  # fmt: skip
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    with step("hpo") as s, tempfile.TemporaryDirectory() as tmp:
        # Everything that can be wrong is checked before the first trial.
        metric_key(metric)
        wait = parse_patience(patience)
        trials = budget.parse_trials(n_trials)
        wanted = (
            fidelity.parse_users("sample_users", sample_users),
            fidelity.parse_users("eval_users", eval_users),
        )
        dims = space.load_space(Path(search_space) if search_space else space.DEFAULT_SPACE)
        prep_run = s.upstream("preprocess_run_id", preprocess_run_id)
        prep = prep_run.info.run_id
        data = load_prepared(prep, Path(tmp))
        if not search_space:
            dims, capped = space.at_scale(dims, len(data.train))
            if capped:  # logged, so that the UI shows why the study's bounds are narrower
                mlflow.log_params({f"space.{name}_capped_at": cap for name, cap in capped.items()})
        fid = fidelity.resolve(data, *wanted)
        sampled = [f"{fid.sample_users} users"] if fid.sample_users else []
        dataset = prep_run.data.tags.get(C.TAG_DATASET, "?")
        s.label(dataset, *sampled)  # named before the sample is drawn, which can fail
        trial_data = fidelity.apply(data, fid, seed)  # too small a sample fails here
        if trials == "auto":
            trials = budget.auto_trials(len(trial_data.train))
        s.label(dataset, f"{trials} trial{'s' * (trials != 1)}", *sampled)
        # What the trials trained and validated on: a user sample is a dataset of its own.
        log_splits(
            trial_data, " ".join([dataset, *sampled]), {"train": "training", "valid": "validation"}
        )
        name = study_name or default_study_name(prep, metric, dims, fid.label, seed)
        store = open_storage(storage, data_dir())
        mlflow.set_tag(C.TAG_STUDY, name)
        mlflow.set_tag(C.TAG_TUNED_ON_SAMPLE, str(fid.sample_users is not None).lower())
        share = len(trial_data.train) / len(data.train)
        mlflow.log_params({
            "fidelity.sample_users": fid.sample_users or fidelity.ALL,
            "fidelity.eval_users": fid.eval_users or fidelity.ALL,
            "fidelity.data_share": round(share, 4),
        })  # fmt: skip
        if wait == "auto":
            wait = auto_patience(len(trial_data.train))
        mlflow.log_params({"early_stopping.patience": wait, "study.n_trials": trials})
        # Each trial trains in its own process; more threads than cores only queue.
        jobs = n_jobs or len(os.sched_getaffinity(0))
        search = tune.Search(metric, dims, trials, seed, pruner, timeout, jobs, fid, wait, share)
        result = tune.tune(trial_data, search, store, name, s.run_id)
        tune.log_result(result, metric, prep, dims)
        best, counts = result.best, result.counts
        click.echo(
            f"study {name}: best {metric} = {best.value:.4f} (trial {best.number}); "
            f"{counts['n_complete']} complete, {counts['n_pruned']} pruned, "
            f"{counts['n_fail']} failed; run {s.run_id}"
        )


if __name__ == "__main__":
    main()
