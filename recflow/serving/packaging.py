"""Packaging the served model for MLflow: its pinned requirements, signature and ``log_model``."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from recflow.constants import ITEM_COL, MODEL_NAME, USER_COL
from recflow.model import foldin
from recflow.serving.parsing import HISTORY_COL, IGNORED_COL, SIMILAR_TO_COL
from recflow.serving.pyfunc import ARTIFACT_KEY, RecommenderModel


def requirements() -> list[str]:
    """Pinned runtime requirements of the served model (it scores with NumPy; no rankfmc)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "numpy", "pandas", "pyarrow")]


def signature(bundle: Path, example: pd.DataFrame) -> mlflow.models.ModelSignature:
    """The served model's signature: inputs, the output of ``example`` and the params."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    python_model = RecommenderModel.from_bundle(bundle)
    params = {"k": 10, "filter_seen": True, "half_life": foldin.HALF_LIFE}
    inferred = infer_signature(example, python_model.predict(None, example, params), params)
    # Every column optional: a request has user_id (with or without history) or item_id. The
    # history is checked by parse_request, whose messages say more than MLflow's type checks,
    # and rows without one (NaN in a records request) would fail an array type.
    inputs = Schema(
        [
            ColSpec("long", USER_COL, required=False),
            ColSpec(AnyType(), HISTORY_COL, required=False),
            ColSpec("long", ITEM_COL, required=False),
        ]
    )
    # Outputs: a user request's columns, plus those of history and similar-items requests.
    outputs = Schema(
        [ColSpec(c.type, c.name, required=c.name != USER_COL) for c in inferred.outputs.inputs]
        + [
            ColSpec("long", IGNORED_COL, required=False),
            ColSpec("long", SIMILAR_TO_COL, required=False),
        ]
    )
    return ModelSignature(inputs, outputs, inferred.params)


def log_model(bundle: Path, example_users: list[int]) -> mlflow.models.model.ModelInfo:
    """Log the bundle as a pyfunc model named ``model`` with signature and input example."""
    example = pd.DataFrame({USER_COL: np.asarray(example_users, dtype=np.int64)})
    return mlflow.pyfunc.log_model(
        name=MODEL_NAME,
        python_model=RecommenderModel(),
        artifacts={ARTIFACT_KEY: str(bundle)},
        code_paths=[str(Path(__file__).resolve().parents[1])],  # the whole recflow package
        signature=signature(bundle, example),
        input_example=example,
        pip_requirements=requirements(),
    )
