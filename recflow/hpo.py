"""Hyperparameter search: the search space file, the objective and the optuna study.

In: prepared splits, a search-space YAML file, an objective metric and a seed. Out: an optuna
study whose trials are nested MLflow runs (params, per-epoch objective, all @k metrics).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import mlflow
import optuna
import yaml

from recflow.errors import UserError
from recflow.metrics import evaluate_model, parse_metric
from recflow.model import FMParams, Recommender, fit_isolated
from recflow.tracking import Prepared

log = logging.getLogger(__name__)

DEFAULT_SPACE = Path(__file__).with_name("search_space.yaml")
PRUNERS = ("hyperband", "median", "none")


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
    digest = hashlib.sha256(repr(space).encode()).hexdigest()[:8]
    return f"{preprocess_run_id}-{metric}-{digest}"


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """Hyperband suits TPE at 20-100 trials (optuna's benchmarks); median is the simple option."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, max_resource=max_epochs)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}; choose one of: {', '.join(PRUNERS)}")


class Objective:
    """Train one configuration, evaluating on the validation split after every epoch."""

    def __init__(self, data: Prepared, space: list[Dimension], metric: str, seed: int) -> None:
        self.data, self.space, self.seed = data, space, seed
        self.base, self.k = parse_metric(metric)
        self.key = f"{self.base}_at_{self.k}"

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.space)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            mlflow.log_params({**params.to_dict(), "trial_number": trial.number})
            best = -math.inf

            def on_epoch(epoch: int, model: Recommender) -> None:
                nonlocal best
                value = evaluate_model(model, self.data.train, self.data.valid, self.k)[self.key]
                best = max(best, value)
                mlflow.log_metric(self.key, value, step=epoch + 1)
                trial.report(value, epoch + 1)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")

            try:
                model = fit_isolated(
                    self.data.train, params, self.seed + trial.number,
                    self.data.user_features, self.data.item_features, on_epoch,
                )  # fmt: skip
            except optuna.TrialPruned as e:
                # A pruned trial ran fine: FINISHED, tagged, not FAILED.
                mlflow.set_tag("trial_state", "PRUNED")
                pruned = e
            else:
                metrics = evaluate_model(model, self.data.train, self.data.valid, self.k)
                mlflow.log_metrics(metrics)
                mlflow.set_tag("trial_state", "COMPLETE")
                return metrics[self.key]
        raise pruned
