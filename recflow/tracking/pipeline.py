"""The whole pipeline for ``main``: each step reused from the step cache or run with ``mlflow.run``.

In: main's parameters, the experiment and whether to force re-runs. Out: each step's run ID,
whether it was reused and how long it took; each step's run is tagged on main's active run.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import ExecutionException
from mlflow.tracking import MlflowClient

from recflow.constants import (
    BASELINES,
    TAG_MAIN_STEP_RUN,
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
    TAG_PROMOTED,
    TAG_PROMOTION_REASON,
    TEST_PREFIX,
)
from recflow.data import download
from recflow.data.datasets import INTERACTIONS, get_spec
from recflow.errors import UserError
from recflow.evaluation.names import METRICS, metric_key
from recflow.tracking.cache import (
    PROJECT_ROOT,
    code_version,
    entry_point_defaults,
    find_reusable_run,
)
from recflow.tracking.runs import ui_link


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What ``main`` was asked for: its MLproject parameters, by name."""

    dataset: str
    data_url: str
    checksum: str
    items_url: str
    items_checksum: str
    user_col: str
    item_col: str
    rating_col: str
    time_col: str
    title_col: str
    n_trials: str
    timeout: int
    n_jobs: int
    sample_users: str
    eval_users: str
    split: str
    test_size: float
    valid_size: float
    ensemble: str
    blend: str
    metric: str
    seed: int
    model_name: str

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> Plan:
        """The plan in ``params`` (main's options; those that are no part of it, such as
        ``force``, are left out)."""
        return cls(**{f.name: params[f.name] for f in fields(cls)})

    @classmethod
    def with_defaults(cls, **given: Any) -> Plan:
        """main's MLproject defaults, with ``given`` instead where given."""
        declared = entry_point_defaults()["main"]
        convert: dict[str, Callable[[str], Any]] = {
            "int": lambda v: int(float(v)), "float": float, "str": str,
        }  # fmt: skip
        return cls(**{
            f.name: given[f.name] if f.name in given else convert[f.type](declared[f.name])
            for f in fields(cls)
        })  # fmt: skip

    def keyed_on_content(self, cache_dir: Path) -> Plan:
        """The plan with the sha256 of ``data_url``'s file (an interactions file or a MovieLens
        archive of the user's) and of an items file as download's checksum where none was
        given. The step cache compares parameters, so a file changed at the same path or URL
        then gets a new download and everything after it. A URL's file is fetched into
        ``cache_dir`` to digest it, where the download step finds it again. The official
        MovieLens archives have known checksums already."""
        if self.dataset != INTERACTIONS:
            if not self.data_url or self.checksum:
                return self
            fetched = download.fetch_archive(get_spec(self.dataset), cache_dir, self.data_url)
            return dataclasses.replace(self, checksum=fetched.checksum)
        sums = {}
        for param, key in (("data_url", "checksum"), ("items_url", "items_checksum")):
            url = getattr(self, param)
            if url and not getattr(self, key):
                fetched = download.fetch_file(url, cache_dir / INTERACTIONS, param=param)
                sums[key] = fetched.checksum
        return dataclasses.replace(self, **sums)


@dataclass(frozen=True)
class StepRun:
    step: str
    run_id: str
    reused: bool
    seconds: float


def run_step(step: str, params: dict[str, str], experiment_id: str, version: str | None) -> StepRun:
    """Reuse a finished run of ``step`` with these params (MLproject defaults filled in) and code
    ``version``, or run it (always when ``version`` is None)."""
    start = time.monotonic()
    if version is not None:
        cached = find_reusable_run(experiment_id, step, params, version)
        if cached is not None:
            return StepRun(step, cached.info.run_id, True, time.monotonic() - start)
    # MLflow makes a folder for each run it starts, for parameters of type path (we have none),
    # and never removes it: in /tmp, or inside the one given, which goes with the step.
    try:
        with tempfile.TemporaryDirectory(prefix=f"recflow-{step}-") as storage:
            submitted = mlflow.run(
                str(PROJECT_ROOT), entry_point=step, parameters=params, env_manager="local",
                experiment_id=experiment_id, synchronous=True, storage_dir=storage,
            )  # fmt: skip
    except ExecutionException as e:
        raise UserError(f"step {step} failed (its error is printed above): {e}") from e
    # mlflow.run() inside an active run makes the step run its child (mlflow.parentRunId).
    return StepRun(step, submitted.run_id, False, time.monotonic() - start)


def run_pipeline(plan: Plan, experiment_id: str, force: bool) -> list[StepRun]:
    """Run (or reuse) download -> preprocess -> hpo -> train_best -> register, in order."""
    # Read once: the code and the MLproject defaults do not change during the run.
    version = None if force else code_version()
    defaults = entry_point_defaults()
    done: list[StepRun] = []

    def step(name: str, **params: object) -> str:
        full = defaults[name] | {k: str(v) for k, v in params.items()}
        done.append(run_step(name, full, experiment_id, version))
        mlflow.set_tag(TAG_MAIN_STEP_RUN + name, done[-1].run_id)
        return done[-1].run_id

    raw = step(
        "download", dataset=plan.dataset, data_url=plan.data_url, checksum=plan.checksum,
        items_url=plan.items_url, items_checksum=plan.items_checksum, user_col=plan.user_col,
        item_col=plan.item_col, rating_col=plan.rating_col, time_col=plan.time_col,
        title_col=plan.title_col,
    )  # fmt: skip
    prep = step(
        "preprocess", raw_run_id=raw, split=plan.split, test_size=plan.test_size,
        valid_size=plan.valid_size, seed=plan.seed,
    )  # fmt: skip
    tuned = step(
        "hpo", preprocess_run_id=prep, n_trials=plan.n_trials, metric=plan.metric,
        seed=plan.seed, timeout=plan.timeout, n_jobs=plan.n_jobs,
        sample_users=plan.sample_users, eval_users=plan.eval_users,
    )  # fmt: skip
    trained = step(
        "train_best", preprocess_run_id=prep, hpo_run_id=tuned, seed=plan.seed,
        ensemble=plan.ensemble, blend=plan.blend,
    )  # fmt: skip
    # The tuned metric decides promotion too.
    step("register", train_run_id=trained, model_name=plan.model_name, metric=plan.metric)
    return done


def outcome(done: list[StepRun]) -> tuple[dict[str, float], dict[str, str]]:
    """What main's own run carries, so that the UI shows the result without opening a step:
    train_best's test metrics of the model and its baselines, the model's ratio to each
    baseline (``vs_ease_ndcg_at_10``), and register's model version and verdict."""
    client = MlflowClient()
    steps = {r.step: r.run_id for r in done}
    trained = client.get_run(steps["train_best"]).data.metrics
    metrics = {k: v for k, v in trained.items() if k.startswith((TEST_PREFIX, *BASELINES))}
    metrics |= ratios(metrics)
    registered = client.get_run(steps["register"]).data
    metrics |= {k: v for k, v in registered.metrics.items() if k == "model_version"}
    carried = (TAG_MODEL_NAME, TAG_MODEL_VERSION, TAG_PROMOTED, TAG_PROMOTION_REASON)
    tags = {k: v for k, v in registered.tags.items() if k in carried}
    return metrics, tags


def ratios(metrics: Mapping[str, float]) -> dict[str, float]:
    """The model's accuracy over each baseline's, e.g. ``vs_ease_ndcg_at_10``: test_ndcg_at_10
    / ease_ndcg_at_10, for every accuracy metric both have (a zero baseline gives none)."""
    out = {}
    for key, ours in metrics.items():
        name = key.removeprefix(TEST_PREFIX)
        if key.startswith(TEST_PREFIX) and name.split("_at_")[0] in METRICS:
            for prefix in BASELINES:
                if metrics.get(prefix + name):
                    out[f"vs_{prefix}{name}"] = ours / metrics[prefix + name]
    return out


def summary(
    done: list[StepRun],
    model_name: str,
    metrics: dict[str, float],
    tags: dict[str, str],
    experiment_id: str,
    metric: str,
) -> list[str]:
    """The lines ``main`` prints: each step, the registry's decision, the test metrics (the
    :func:`outcome`), the tuned ``metric`` against each baseline, and where the UI shows the
    runs."""
    lines = [
        f"{r.step:<11} {'reused' if r.reused else 'ran':<6} {r.run_id}  {r.seconds:7.1f}s"
        for r in done
    ]
    lines.append(f"registry: {tags.get(TAG_PROMOTION_REASON, '')}")
    shown = ", ".join(
        f"{k.removeprefix(TEST_PREFIX)}={v:.4f}"
        for k, v in sorted(metrics.items())
        if k.startswith(TEST_PREFIX)
    )
    lines.append(f"model {model_name} version {tags.get(TAG_MODEL_VERSION)}: {shown}")
    name = metric_key(metric)
    against = [
        f"{metrics[f'vs_{prefix}{name}']:.2f}x {label} ({metrics[prefix + name]:.4f})"
        for prefix, label in BASELINES.items()
        if f"vs_{prefix}{name}" in metrics
    ]
    if against:
        lines.append(f"{name} {metrics[TEST_PREFIX + name]:.4f}: " + ", ".join(against))
    lines.append(f"runs: {ui_link(experiment_id)}")
    return lines
