"""Hyperparameter search: the search space file, the objective and the optuna study.

In: prepared splits, a search-space YAML file, an objective metric and a seed. Out: an optuna
study whose trials are nested MLflow runs (params, per-epoch objective, all @k metrics).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
import yaml
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from recflow.errors import UserError
from recflow.metrics import evaluate_model, parse_metric
from recflow.model import FMParams, Recommender, fit_isolated
from recflow.tracking import Prepared

log = logging.getLogger(__name__)

DEFAULT_SPACE = Path(__file__).with_name("search_space.yaml")
PRUNERS = ("median", "hyperband", "none")


@dataclass(frozen=True)
class Dimension:
    """One searchable hyperparameter."""

    name: str
    type: str  # int, float or categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))


def load_space(path: Path) -> list[Dimension]:
    """Parse and validate a search-space file (see ``search_space.yaml``)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read search space {path}: {e}") from e
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"search space {path} must be a non-empty mapping of parameter: spec")
    known = {f.name for f in fields(FMParams)}
    dims: list[Dimension] = []
    for name, spec in raw.items():
        where = f"search space {path}, {name!r}"
        if name not in known:
            raise UserError(f"{where}: unknown parameter; known: {', '.join(sorted(known))}")
        if not isinstance(spec, dict) or spec.get("type") not in ("int", "float", "categorical"):
            raise UserError(f"{where}: needs 'type: int | float | categorical'")
        when = spec.get("when") or {}
        earlier = {d.name for d in dims}
        if not isinstance(when, dict) or not set(when) <= earlier:
            raise UserError(f"{where}: 'when' must name parameters listed before it")
        cond = tuple((k, tuple(v if isinstance(v, list) else [v])) for k, v in when.items())
        try:
            if spec["type"] == "categorical":
                dim = Dimension(name, "categorical", choices=tuple(spec["choices"]), when=cond)
                if not dim.choices:
                    raise ValueError("empty choices")
            else:
                lo, hi = float(spec["low"]), float(spec["high"])
                if not lo < hi or (spec.get("log") and lo <= 0):
                    raise ValueError(
                        f"need 0 < low < high for log, low < high otherwise ({lo}, {hi})"
                    )
                dim = Dimension(name, spec["type"], lo, hi, bool(spec.get("log")), when=cond)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{where}: invalid spec ({e})") from e
        dims.append(dim)
    return dims


def suggest(trial: optuna.Trial, space: list[Dimension]) -> FMParams:
    """Sample one configuration; conditional dimensions apply only when their condition holds."""
    values: dict[str, Any] = {}
    for dim in space:
        if all(values.get(k) in allowed for k, allowed in dim.when):
            values[dim.name] = dim.suggest(trial)
    return FMParams.from_dict(values)


def study_name(preprocess_run_id: str, metric: str, space: list[Dimension]) -> str:
    """Default study name: the data, the objective and a digest of the search space."""
    return f"{preprocess_run_id}-{metric}-{space_digest(space)}"


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """Multivariate TPE whose random draws for a trial depend on the seed and the trial number.

    A plain seeded sampler gives every worker the same random stream, so workers sharing a study
    would try the same configurations in lockstep. Each trial here gets its own TPE sampler,
    seeded from the seed and the trial number: a serial run stays repeatable (same seed, same
    data, same trials) while workers, holding different trial numbers, draw different
    configurations. TPE keeps no state between trials but its random stream (it reads the history
    from the study), so a fresh sampler per trial loses nothing.
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
    """The epoch-wise pruner. ``median`` (default) stops a trial whose objective is below the
    median of earlier trials at the same epoch, after 5 trials and 5 epochs of warm-up: mild
    enough that a 20-100 trial budget of *complete* trials is not spent on pruned ones.
    ``hyperband`` prunes harder (most trials stop at its first rungs)."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, max_resource=max_epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}; choose one of: {', '.join(PRUNERS)}")


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
        n_trials: int,
    ) -> None:
        self.data, self.space, self.seed, self.n_trials = data, space, seed, n_trials
        self.base, self.k = parse_metric(metric)
        self.key = f"{self.base}_at_{self.k}"
        self.parent = MlflowClient().get_run(parent_run_id)
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, trial: optuna.Trial) -> float:
        with self._lock:  # trials may run in threads (n_jobs)
            self.calls += 1
        # The run first: a trial with a worker always names that worker's run.
        trial.set_user_attr(WORKER_RUN, self.parent.info.run_id)
        trial.set_user_attr(WORKER, worker_id())
        claim_budget(trial, self.n_trials)
        client = MlflowClient()
        params = suggest(trial, self.space)
        run = client.create_run(
            self.parent.info.experiment_id,
            run_name=f"trial-{trial.number}",
            tags={
                "mlflow.parentRunId": self.parent.info.run_id,
                "optuna.study": trial.study.study_name,
                TRIAL_NUMBER_TAG: str(trial.number),
            },
        )
        run_id = run.info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        client.log_batch(
            run_id,
            params=[
                Param(k, str(v))
                for k, v in {**params.to_dict(), "trial_number": trial.number}.items()
            ],
        )
        last: dict[str, float] = {}

        def on_epoch(epoch: int, model: Recommender) -> None:
            last.update(evaluate_model(model, self.data.train, self.data.valid, self.k))
            client.log_metric(run_id, self.key, last[self.key], step=epoch + 1)
            trial.report(last[self.key], epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")

        state, status = "FAILED", "FAILED"
        try:
            fit_isolated(
                self.data.train, params, self.seed + trial.number,
                self.data.user_features, self.data.item_features, on_epoch,
            )  # fmt: skip
            # The objective's history is already logged epoch by epoch; add the other metrics.
            others = [_metric(k, v) for k, v in last.items() if k != self.key]
            client.log_batch(run_id, metrics=others)
            state, status = "COMPLETE", "FINISHED"
            return last[self.key]
        except optuna.TrialPruned:
            # A pruned trial ran fine: FINISHED in MLflow, tagged PRUNED.
            state, status = "PRUNED", "FINISHED"
            raise
        finally:
            client.set_tag(run_id, "trial_state", state)
            client.set_terminated(run_id, status)


def _metric(key: str, value: float) -> Metric:
    return Metric(key, value, int(time.time() * 1000), 0)


def heartbeat_seconds() -> int:
    """How often a trial on a database storage proves its worker alive (RECFLOW_HEARTBEAT_SECONDS,
    default 30); a RUNNING trial silent for three intervals belongs to a dead worker."""
    raw = os.environ.get("RECFLOW_HEARTBEAT_SECONDS", "30")
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"RECFLOW_HEARTBEAT_SECONDS must be a whole number of seconds, not {raw!r}")
    return int(raw)


def open_storage(storage: str, default_dir: Path) -> optuna.storages.BaseStorage:
    """An optuna storage: "" = a journal file under ``default_dir``, a URL = a database, else a
    journal file at that path. Journal files survive a killed process and allow several local
    workers; a database URL (e.g. postgresql://) serves workers on many machines.
    """
    try:
        if "://" in storage:
            return _open_database(storage)
        path = Path(storage) if storage else default_dir / "optuna" / "studies.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.JournalStorage(backend)
    except UserError:
        raise
    except Exception as e:  # sqlalchemy and driver errors have no common base worth naming
        raise UserError(f"cannot open optuna storage {_redact(storage)}: {_first_line(e)}") from e


def _open_database(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An optuna database storage with heartbeats, which let a surviving worker fail the trials
    of a worker that was killed.

    Workers started together on an empty database race to create optuna's tables; the loser's
    CREATE fails (PostgreSQL: a duplicate key in pg_type) although the tables now exist, so
    creation is retried.
    """
    beat = heartbeat_seconds()
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=beat, grace_period=3 * beat,
                failed_trial_callback=end_dead_trial_runs,
                engine_kwargs={"pool_pre_ping": True},
            )  # fmt: skip
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts:
                raise
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


_PASSWORD_IN_URL = re.compile(r"//([^:/@]+):[^@]*@")  # //user:password@


def has_password(url: str) -> bool:
    """Whether a database URL carries a password (which MLflow would record as a parameter)."""
    return _PASSWORD_IN_URL.search(url) is not None


def _redact(url: str) -> str:
    return _PASSWORD_IN_URL.sub(r"//\1:***@", url) or "(default journal file)"


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def open_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    metric: str,
    space: list[Dimension],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create the study or continue it, refusing one made for another metric or search space."""
    digest = space_digest(space)
    try:
        # Load first: checking an existing study must not write to its storage.
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, pruner=pruner,
            direction="maximize", load_if_exists=True,  # another worker may create it first
        )  # fmt: skip
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"study {name!r} minimises; ours maximise {metric}: use another study_name")
    for key, value in (("metric", metric), ("search_space", digest)):
        stored = study.user_attrs.get(key)
        if stored is None:
            study.set_user_attr(key, value)
        elif stored != value:
            raise UserError(
                f"study {name!r} was created with {key} {stored!r}, not {value!r}; "
                "use another study_name or the original settings"
            )
    return study


def space_digest(space: list[Dimension]) -> str:
    """A short fingerprint of a search space."""
    return hashlib.sha256(repr(space).encode()).hexdigest()[:8]


def count(study: optuna.Study, *states: TrialState) -> int:
    """Trials in any of ``states``, leaving out the ones skipped because the budget was full."""
    trials = study.get_trials(deepcopy=False, states=states)
    return sum(1 for t in trials if not t.user_attrs.get(BUDGET_SKIP))


BUDGET_SKIP = "skipped_budget_full"


def claim_budget(trial: optuna.Trial, n_trials: int) -> None:
    """Stop this worker when finished plus in-flight trials already reach ``n_trials``.

    Checked as each trial starts, so several workers sharing a study together complete exactly
    ``n_trials`` trials instead of each overshooting by its in-flight ones.
    """
    others = count(trial.study, TrialState.COMPLETE, TrialState.RUNNING) - 1
    if others >= n_trials:
        trial.set_user_attr(BUDGET_SKIP, True)
        trial.study.stop()
        raise optuna.TrialPruned("n_trials reached")


WORKER = "worker"
WORKER_RUN = "worker_run_id"
ORPHAN_AFTER = datetime.timedelta(seconds=60)
TRIAL_NUMBER_TAG = "optuna.trial_number"


def worker_id() -> str:
    """host:pid of this process, recorded on each trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get(WORKER, "")).rpartition(":")
        if WORKER not in t.user_attrs:
            # Killed between creating the trial and recording its worker: no owner left, once
            # a live worker would long have recorded itself.
            start = t.datetime_start
            if start is None or datetime.datetime.now(start.tzinfo) - start < ORPHAN_AFTER:
                continue
        elif worker_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        if storage.set_trial_state_values(trial_id, TrialState.FAIL):
            end_dead_trial_runs(study, t)


def end_dead_trial_runs(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Mark KILLED the MLflow run of a trial whose worker died, and that worker's hpo run.

    The trial's run is found by its trial-number tag when the worker died before recording the
    run's ID on the trial. An error here is logged, not raised: it must not stop the live worker.
    """
    log.warning("trial %d of a dead worker failed; ending its runs", trial.number)
    try:
        client = MlflowClient()
        worker_run = trial.user_attrs.get(WORKER_RUN)
        run_ids = [trial.user_attrs.get("mlflow_run_id"), worker_run]
        if run_ids[0] is None and worker_run:
            experiment = client.get_run(worker_run).info.experiment_id
            found = client.search_runs(
                [experiment],
                f"tags.mlflow.parentRunId = '{worker_run}' "
                f"and tags.`{TRIAL_NUMBER_TAG}` = '{trial.number}'",
            )  # fmt: skip
            run_ids[0] = found[0].info.run_id if found else None
        for run_id in run_ids:
            if run_id and client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, "KILLED")
    except Exception as e:  # the tracking server may be down too; the study comes first
        log.warning("could not end the runs of trial %d: %s", trial.number, _first_line(e))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_when_budget_full(n_trials: int):
    """An optuna callback: stop this worker once complete plus in-flight trials reach n_trials."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if count(study, TrialState.COMPLETE, TrialState.RUNNING) >= n_trials:
            study.stop()

    return callback


def run_worker(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    objective: Objective,
    n_trials: int,
    timeout: int = 0,
    n_jobs: int = 1,
) -> None:
    """Run trials until the study has ``n_trials`` complete ones, this worker's or others'.

    Trials other workers are running count towards the budget, so this worker stops starting
    trials once they would fill it, then waits: should such a worker die, its trial is failed
    (dead process, or silent heartbeat on a database) and this worker runs a replacement.
    Stops early at ``timeout`` seconds or after 4 * n_trials + 10 attempts of its own, since
    pruned and failed trials do not count.
    """
    deadline = time.monotonic() + timeout if timeout else None
    max_attempts = 4 * n_trials + 10
    poll = min(heartbeat_seconds(), 5)
    while True:
        fail_stale_trials(study, storage)
        complete = count(study, TrialState.COMPLETE)
        left = None if deadline is None else deadline - time.monotonic()
        if complete >= n_trials or (left is not None and left <= 0):
            return
        if complete + count(study, TrialState.RUNNING) < n_trials:
            if objective.calls >= max_attempts:
                log.warning("stopping after %d attempts of this worker", objective.calls)
                return
            study.optimize(
                objective, n_trials=max_attempts - objective.calls, timeout=left, n_jobs=n_jobs,
                catch=(FloatingPointError,), callbacks=[stop_when_budget_full(n_trials)],
            )  # fmt: skip
        else:
            time.sleep(poll)


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimization history, parameter importances, parallel coordinates and learning curves."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    plots = {
        "optimization_history": ovm.plot_optimization_history,
        "param_importances": ovm.plot_param_importances,
        "parallel_coordinate": ovm.plot_parallel_coordinate,
        "intermediate_values": ovm.plot_intermediate_values,
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in plots.items():
        try:
            ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            # e.g. importances need two complete trials with varied parameters.
            log.warning("skipping plot %s: %s", name, e)
            continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
        fig.set_size_inches(10, 6)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
