"""What crosses a step boundary, written and read by name: one pair of functions per contract.

In: a step's outputs (prepared splits, the tuned configuration, upstream run IDs). Out: artifacts
and tags of the step's MLflow run, and the same objects read back from a run by the next step.
Names come from ``constants``; nothing here depends on file or field order.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from pathlib import Path

import mlflow
import mlflow.data
import mlflow.pyfunc
import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from recflow import constants as C
from recflow.data.preprocess import Prepared
from recflow.errors import UserError, first_line
from recflow.evaluation.names import metric_key
from recflow.failpoints import failpoint
from recflow.model.blend import EaseHalf
from recflow.model.recommender import FMParams, Recommender
from recflow.tracking import space
from recflow.tracking.cache import unquote
from recflow.tracking.promotion import METRIC_TAG, Model
from recflow.tracking.runs import download, upstream_tag

# Each field of Prepared and its file under the run's DATA_DIR.
PREPARED_FILES = {
    "train": C.TRAIN_FILE, "valid": C.VALID_FILE, "test": C.TEST_FILE,
    "user_features": C.USER_FEATURES_FILE, "item_features": C.ITEM_FEATURES_FILE,
    "items": C.ITEMS_FILE,
}  # fmt: skip


def log_prepared(data: Prepared) -> None:
    """Log the prepared data as the active run's DATA_DIR artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, file in PREPARED_FILES.items():
            getattr(data, name).to_parquet(Path(tmp) / file, index=False)
            failpoint("preprocess:mid-splits")
        space.require_for_artifacts("the prepared splits", Path(tmp))
        mlflow.log_artifacts(tmp, C.DATA_DIR)


# The MLflow input context of each split (the run page's Datasets used, the runs list's column).
SPLIT_CONTEXTS = {"train": "training", "valid": "validation", "test": "test"}


def content_digest(df: pd.DataFrame) -> str:
    """A digest of every (user, item) pair in order, so that two test sets compare equal only
    when they hold the same interactions. MLflow's own pandas digest hashes the first 10,000
    rows only (and types every cell, which is slow on millions of rows)."""
    pairs = pd.util.hash_pandas_object(df[[C.USER_COL, C.ITEM_COL]], index=False)
    return hashlib.sha256(pairs.to_numpy().tobytes()).hexdigest()[:16]


def as_dataset(df: pd.DataFrame, name: str, source: str | None = None) -> PandasDataset:
    """``df`` as an MLflow dataset named ``name`` (e.g. ``ml-1m test``) with its content digest."""
    with warnings.catch_warnings():
        # MLflow's hint that integer columns cannot hold missing values: ours never do.
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        dataset = mlflow.data.from_pandas(df, source=source, name=name, digest=content_digest(df))
        # MLflow infers the schema (a cached property) by testing every cell for None/NaN in
        # Python, 40 s for ML-25M's training split; our columns never hold missing values, so
        # the first rows give the same schema.
        dataset.__dict__["schema"] = infer_signature(df.head(1000)).inputs
    return dataset


def log_splits(data: Prepared, dataset: str, contexts: dict[str, str] = SPLIT_CONTEXTS) -> None:
    """Log the named splits (field -> MLflow context) as the active run's input datasets."""
    for split, context in contexts.items():
        log_input(as_dataset(getattr(data, split), f"{dataset} {split}"), context)


def log_input(dataset: PandasDataset, context: str) -> None:
    """``mlflow.log_input``, once more when another run logged the same dataset at that moment.

    The tracking store looks a dataset up by experiment, name and digest and inserts it when it
    is missing; two runs logging the same one at once (two mains started together on one
    server) both miss it, and the second insert fails on the store's unique key. Retried, the
    lookup finds the first run's dataset.
    """
    try:
        mlflow.log_input(dataset, context=context)
    except MlflowException as e:
        if not any(
            s in str(e) for s in ("UniqueViolation", "UNIQUE constraint", "Duplicate entry")
        ):
            raise
        mlflow.log_input(dataset, context=context)


def load_prepared(run_id: str, dst: Path) -> Prepared:
    """The prepared data of preprocess run ``run_id``, downloaded into ``dst``."""
    folder = download(run_id, C.DATA_DIR, dst)
    return Prepared(**{name: pd.read_parquet(folder / f) for name, f in PREPARED_FILES.items()})


def log_best_params(params: FMParams) -> None:
    """Log the tuned configuration, defaults included, so train_best needs nothing else."""
    mlflow.log_dict(params.to_dict(), C.BEST_PARAMS_FILE)


def load_best_params(run_id: str, dst: Path) -> FMParams:
    """The configuration an hpo run logged with :func:`log_best_params`."""
    return FMParams.from_dict(json.loads(download(run_id, C.BEST_PARAMS_FILE, dst).read_text()))


def link_upstream(**run_ids: str) -> None:
    """Tag the active run with the upstream runs its parameters resolved to."""
    mlflow.set_tags({upstream_tag(param): run_id for param, run_id in run_ids.items()})


def linked(run: Run, param: str) -> str:
    """The upstream run ID that ``run``'s parameter ``param`` resolved to."""
    return run.data.tags[upstream_tag(param)]


def tuned_metric(hpo_run: Run) -> str:
    """The objective an hpo run tuned, e.g. ``ndcg@10``."""
    return unquote(hpo_run.data.params["metric"])


def tuned_curve(hpo_run: Run) -> list[tuple[int, float]]:
    """The validation curve (epoch, value) of an hpo run's best trial; empty if it has none."""
    trial = hpo_run.data.tags.get(C.TAG_BEST_TRIAL_RUN)
    if not trial:
        return []
    key = metric_key(tuned_metric(hpo_run))
    history = MlflowClient().get_metric_history(trial, key)
    return sorted((m.step, m.value) for m in history)


def input_digest(run: Run, context: str) -> str:
    """The content digest of the dataset ``run`` logged as input ``context``; "" if none."""
    for item in run.inputs.dataset_inputs if run.inputs else ():
        if any(t.key == "mlflow.data.context" and t.value == context for t in item.tags):
            return item.dataset.digest
    return ""


def load_served(model_uri: str, dst: Path) -> tuple[Recommender, EaseHalf | None]:
    """The recommender inside the served model at ``model_uri`` and, where it is served
    blended with EASE, EASE's half (to score it again as it is served). Its files are put in
    ``dst`` (from a remote store MLflow would download them into a folder nobody removes; from
    a local one this copies them), and its arrays are read from there: use the model while
    ``dst`` exists."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        served = mlflow.pyfunc.load_model(model_uri, dst_path=str(dst)).unwrap_python_model()
        model = served.model
    except Exception as e:  # a missing or foreign model: all mean the same here
        raise UserError(f"cannot load {model_uri} to re-score it: {first_line(e)}") from e
    return model, getattr(served, "ease", None)


def lineage(train: Run) -> dict[str, str]:
    """Tags tracing a train_best run's model back to its data, split, hpo run and training run."""
    client = MlflowClient()
    preprocess = client.get_run(linked(train, "preprocess_run_id"))
    raw = client.get_run(linked(preprocess, "raw_run_id"))
    # The column of the data that holds item IDs, when the data steps take one (else ours).
    item_cols = [unquote(run.data.params.get("item_col", "")) for run in (preprocess, raw)]
    return {
        "dataset": raw.data.params.get("dataset", ""),
        "checksum": raw.data.tags.get(C.TAG_CHECKSUM, ""),
        "split": preprocess.data.params.get("split", ""),
        "item_col": next((c for c in item_cols if c), C.ITEM_COL),
        "testset_digest": input_digest(train, "test"),
        "download_run_id": raw.info.run_id,
        "preprocess_run_id": preprocess.info.run_id,
        "hpo_run_id": linked(train, "hpo_run_id"),
        "train_run_id": train.info.run_id,
    }


def check_registry_names(model_name: str, alias: str | None = None) -> None:
    """A one-line ``UserError`` for a model name or alias the registry would refuse, by MLflow's
    own rules, so that it fails before anything is trained or registered (the registry itself
    refuses an alias only after the version it names exists)."""
    # Private, but they are the rules the registry applies; mlflow is pinned (pyproject.toml).
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
        _validate_model_name,
    )

    if alias == C.CHALLENGER_ALIAS:  # where a version that is not promoted goes
        raise UserError(f"alias={alias!r} is where versions that lose go; choose another alias")
    checks = [("model_name", model_name, [_validate_model_name])]
    if alias is not None:
        checks.append(
            ("alias", alias, [_validate_model_alias_name, _validate_model_alias_name_reserved])
        )
    for param, value, validators in checks:
        try:
            for validate in validators:
                validate(value)
        except MlflowException as e:
            raise UserError(
                f"{param}={value!r} is refused by the model registry: {e.message}"
            ) from e


def register_version(train: Run, name: str, figures: Model) -> ModelVersion:
    """Register a train_best run's model under ``name`` with its lineage and test metrics as
    tags (read back by :func:`alias_holder`) and a one-line description."""
    tags = {**figures.tags, **{k: repr(v) for k, v in figures.metrics.items()}}  # full precision
    version = mlflow.register_model(train.data.tags[C.TAG_MODEL_URI], name, tags=tags)
    description = (
        f"rankfm recommender on {figures.tags['dataset']} ({figures.tags['split']} split); "
        + ", ".join(f"{k}={v:.4f}" for k, v in sorted(figures.metrics.items()))
    )
    MlflowClient().update_model_version(name, version.version, description=description)
    return version


def registered_from(train: Run, name: str, metric: str) -> list[ModelVersion]:
    """The versions of ``name`` already registered from ``train``'s model on ``metric`` (by a
    register run that ran before, or one killed before it set the alias), oldest first."""
    # By run ID only: the filter's quoting of a name holding a quote is MLflow's business.
    found = MlflowClient().search_model_versions(f"run_id = '{train.info.run_id}'")
    mine = [v for v in found if v.name == name and v.tags.get(METRIC_TAG) == metric]
    return sorted(mine, key=lambda v: int(v.version))


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    """Point ``alias`` of model ``name`` at ``version``. MLflow sets an alias by reading, then
    inserting or updating: two registers setting a new alias at once on one server can both
    insert, and one fails on the table's key (seen on PostgreSQL). That one sets it again, now
    an update, as it would have had it come a moment later."""
    try:
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as e:
        if "registered_model_alias" not in str(e):
            raise
        client.set_registered_model_alias(name, alias, version)


def alias_holder(name: str, alias: str) -> Model | None:
    """The version of model ``name`` holding ``alias``, with the lineage and test metrics
    :func:`register_version` gave it; None when no version holds it yet."""
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None  # no such model or alias yet
    test = {k: float(v) for k, v in version.tags.items() if k.startswith(C.TEST_PREFIX)}
    return Model(version.tags, test, str(version.version))
