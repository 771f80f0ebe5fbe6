"""The search space: a YAML file of hyperparameter ranges, parsed, validated and sampled.

In: a search-space file (see ``search_space.yaml``) and an optuna trial. Out: ``Dimension``s,
and for each trial an ``FMParams`` configuration.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import optuna
import yaml

from recflow.errors import UserError
from recflow.model.recommender import FMParams

DEFAULT_SPACE = Path(__file__).with_name("search_space.yaml")


@dataclass(frozen=True)
class Dimension:
    """One searchable hyperparameter."""

    name: str
    type: str  # int, float, categorical or fixed (one value for every trial, not searched)
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
        if self.type == "fixed":
            return self.choices[0]
        return trial.suggest_categorical(self.name, list(self.choices))

    @property
    def highest(self) -> Any:
        """The largest value this dimension can take."""
        return max(self.choices) if self.type in ("categorical", "fixed") else self.high


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
        if not isinstance(spec, dict | list):
            # A plain value fixes the parameter for every trial.
            try:
                FMParams.from_dict({name: spec})
            except (TypeError, ValueError) as e:
                raise UserError(f"{where}: invalid value ({e})") from e
            dims.append(Dimension(name, "fixed", choices=(spec,)))
            continue
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
                # Every choice must make a valid configuration (e.g. epochs: [2, "many"] not).
                for choice in dim.choices:
                    FMParams.from_dict({name: choice})
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


# The default space at scale. Its upper bounds were widened on real data of ~200k interactions
# (ML-100K, the ML-1M ratings of users 1-1500), where they paid. An epoch of WARP costs more
# with more factors and samples (ML-1M scale: 128 factors and 100 samples took 2.2x an epoch of
# 32 and 30), and train_best trains the tuned epochs on all the data, so at ML-10M/25M scale the
# wide bounds would take the default main past its 90-minute budget. From LARGE training
# interactions on, the default space keeps the bounds the ML-25M-scale main was measured with
# (docs/cost.md); a space the user passes is theirs and is never capped.
LARGE = 5_000_000
AT_SCALE = {"factors": 64, "max_samples": 50, "epochs": 40}


def at_scale(space: list[Dimension], n_interactions: int) -> tuple[list[Dimension], dict[str, int]]:
    """``space`` with its upper bounds capped at ``AT_SCALE`` from ``LARGE`` training
    interactions on, and the caps that changed it (empty below ``LARGE``)."""
    if n_interactions < LARGE:
        return space, {}
    capped, applied = [], {}
    for dim in space:
        cap = AT_SCALE.get(dim.name)
        if cap is not None and dim.type == "fixed" and dim.choices[0] > cap:
            dim, applied[dim.name] = replace(dim, choices=(cap,)), cap
        elif cap is not None and dim.type in ("int", "float") and dim.low < cap < dim.high:
            dim, applied[dim.name] = replace(dim, high=float(cap)), cap
        capped.append(dim)
    return capped, applied


def suggest(trial: optuna.Trial, space: list[Dimension]) -> FMParams:
    """Sample one configuration; conditional dimensions apply only when their condition holds."""
    return FMParams.from_dict(_walk(space, lambda dim: dim.suggest(trial)))


def configuration(sampled: dict[str, Any], space: list[Dimension]) -> dict[str, Any]:
    """A trial's whole configuration: what optuna sampled (``trial.params``) and the space's
    fixed values, which optuna never records (a space with ``loss: bpr`` trains BPR)."""
    return _walk(space, lambda dim: dim.choices[0] if dim.type == "fixed" else sampled[dim.name])


def _walk(space: list[Dimension], value: Callable[[Dimension], Any]) -> dict[str, Any]:
    # Each dimension's value, in order, where the values before it meet its condition.
    values: dict[str, Any] = {}
    for dim in space:
        if all(values.get(k) in allowed for k, allowed in dim.when):
            values[dim.name] = value(dim)
    return values


# A study's first trials, in order: known-good configurations, so that a study never ends worse
# than them. rankfm's published example (the defaults), then the best region found on ML-100K's
# per-user 75/25 protocol: more factors and WARP samples, stronger regularisation (mean test
# NDCG@10 over three split seeds 0.462 at the epoch early stopping picks, 0.478 at 76 epochs;
# the example 0.444 and 0.452 at its 20 epochs).
WARM_STARTS = (FMParams(), FMParams(factors=40, max_samples=40, alpha=0.02))


def warm_starts(space: list[Dimension]) -> list[dict[str, Any]]:
    """:data:`WARM_STARTS` as :func:`warm_start` fits each to ``space``, without repeats."""
    fitted = [warm_start(space, params) for params in WARM_STARTS]
    return [v for i, v in enumerate(fitted) if v not in fitted[:i]]


def warm_start(space: list[Dimension], params: FMParams = WARM_STARTS[0]) -> dict[str, Any]:
    """``params`` (by default rankfm's published example) as values of ``space``'s searched
    dimensions, for a study's first trials. Left to the sampler: epochs (early stopping decides
    them) and dimensions that cannot take the value (out of range, condition not met)."""
    default = params.to_dict()
    values: dict[str, Any] = {}  # what the trial will have, fixed dimensions included
    for dim in space:
        value = dim.choices[0] if dim.type == "fixed" else default[dim.name]
        if not all(values.get(k) in ok for k, ok in dim.when):
            continue
        if dim.type in ("categorical", "fixed"):
            fits = value in dim.choices
        else:
            fits = dim.low <= value <= dim.high
        if fits:
            values[dim.name] = value
    fixed = {d.name for d in space if d.type == "fixed"}
    return {k: v for k, v in values.items() if k not in fixed and k != "epochs"}


def max_epochs(space: list[Dimension]) -> int:
    """The most epochs a trial can train (the pruner's resource bound), whatever the entry's
    type; the default when the space leaves epochs out."""
    return max([int(d.highest) for d in space if d.name == "epochs"] or [FMParams().epochs])


def space_digest(space: list[Dimension]) -> str:
    """A short fingerprint of a search space."""
    return hashlib.sha256(repr(space).encode()).hexdigest()[:8]
