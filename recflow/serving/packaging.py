"""Packaging the served model for MLflow: its pinned requirements, signature and ``log_model``.

The signature declares ``user_id`` and ``item_id`` in the kind of the model's IDs: ``long`` for
integer IDs (as every model before string IDs), ``string`` for string IDs. MLflow's schema check
(``mlflow.models.utils._enforce_mlflow_datatype``) passes only that kind of column: ``long``
refuses a column of text and ``string`` a column of integers, so no one type serves both kinds of
model; ``AnyType`` would pass anything, but then the signature no longer tells clients what an ID
is, and the check runs per value. Before that check, the scoring server casts a request's values
to the declared type (``cast_df_types_according_to_schema``, ``convert_data_type``): over HTTP, in
every format, a string model asked for 42 looks up "42" and an integer model asked for "42" looks
up 42. In process, ``PyFuncModel.predict`` takes the declared kind only (strings for a string
model); ``parsing`` converts what gets through.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from recflow.constants import ITEM_COL, MODEL_NAME, USER_COL
from recflow.model import foldin
from recflow.model.ids import id_array, is_string
from recflow.serving.parsing import HISTORY_COL, IGNORED_COL, SIMILAR_TO_COL
from recflow.serving.pyfunc import ARTIFACT_KEY, RecommenderModel


def requirements() -> list[str]:
    """Pinned runtime requirements of the served model (it scores with NumPy, and SciPy's
    sparse matrices for a blend with EASE; no rankfmc)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "numpy", "pandas", "pyarrow", "scipy")]


def signature(bundle: Path, example: pd.DataFrame) -> mlflow.models.ModelSignature:
    """The served model's signature: inputs, the output of ``example`` and the params."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    python_model = RecommenderModel.from_bundle(bundle)
    model = python_model.model
    users, items = (
        "string" if is_string(ids) else "long" for ids in (model.user_ids, model.item_ids)
    )
    params = {"k": 10, "filter_seen": True, "half_life": foldin.HALF_LIFE}
    inferred = infer_signature(example, python_model.predict(None, example, params), params)
    # Every column optional: a request has user_id (with or without history) or item_id. The
    # history is checked by parse_request, whose messages say more than MLflow's type checks,
    # and rows without one (NaN in a records request) would fail an array type.
    inputs = Schema(
        [
            ColSpec(users, USER_COL, required=False),
            ColSpec(AnyType(), HISTORY_COL, required=False),
            ColSpec(items, ITEM_COL, required=False),
        ]
    )
    # Outputs: a user request's columns, plus those of history and similar-items requests.
    outputs = Schema(
        [ColSpec(c.type, c.name, required=c.name != USER_COL) for c in inferred.outputs.inputs]
        + [
            ColSpec("long", IGNORED_COL, required=False),
            ColSpec(items, SIMILAR_TO_COL, required=False),
        ]
    )
    return ModelSignature(inputs, outputs, inferred.params)


def log_model(bundle: Path, example_users: list) -> mlflow.models.model.ModelInfo:
    """Log the bundle as a pyfunc model named ``model`` with signature and input example
    (``example_users``: IDs the model knows, integers or strings as its own)."""
    example = pd.DataFrame({USER_COL: id_array(example_users)})
    return mlflow.pyfunc.log_model(
        name=MODEL_NAME,
        python_model=RecommenderModel(),
        artifacts={ARTIFACT_KEY: str(bundle)},
        code_paths=[str(Path(__file__).resolve().parents[1])],  # the whole recflow package
        signature=signature(bundle, example),
        input_example=example,
        pip_requirements=requirements(),
    )
