"""Requests to the served model: the rows and params it accepts, parsed and checked.

In: a DataFrame with a ``user_id`` column (optionally ``history``, a list of item IDs per row,
oldest first) or an ``item_id`` column (similar items), params ``k``, ``filter_seen`` and
``half_life``, and whether the model's user and item IDs are strings. Out: a ``Request`` whose IDs
are of the model's kind, or ``BadRequest`` (MLflow's scoring server answers it with a 400 and its
message). For an integer model IDs must be integer-valued (the text "42" is 42); for a string
model an ID is a string or an integer, looked up by its text (42 is "42").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from recflow.constants import GENRES_COL, ITEM_COL, RANK_COL, SCORE_COL, TITLE_COL, USER_COL
from recflow.model import foldin

MAX_K = 1000
# Users per request to the server: one request of 10,000 users held a worker for a second and
# more, stalling every other client queued behind it (bench/serve_abuse.py: p99 of one-user
# requests 584 ms, server memory +15 % after 200 of them). Batch scoring lifts the limit.
MAX_USERS = 1000
# Items per history: folding one in costs ~0.1 ms per item (bench/foldin_latency.py), and a
# longer history adds little that its latest few hundred items do not already say.
MAX_HISTORY = 500
# History items per request to the server: folding in costs about 0.1 ms per item, so this keeps
# one request under a second of a worker's time, as MAX_USERS does for known users.
MAX_REQUEST_HISTORY = 5000
SOURCE_COL = "source"
HISTORY_COL = "history"
IGNORED_COL = "history_ignored"
SIMILAR_TO_COL = "similar_to"
OUTPUT_COLS = [USER_COL, RANK_COL, ITEM_COL, TITLE_COL, GENRES_COL, SCORE_COL, SOURCE_COL]
SIMILAR_COLS = [SIMILAR_TO_COL, *OUTPUT_COLS[1:]]


class BadRequest(MlflowException, ValueError):
    """A request the model cannot answer. MLflow's scoring server answers it with a 400 and this
    message; any other exception would reach the client as "an unexpected error"."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


@dataclass(frozen=True)
class Request:
    """A parsed request: users (each with a history, if the request has any) or items."""

    ids: np.ndarray  # int64, or str for a model with string IDs
    k: int
    filter_seen: bool
    items: bool = False  # "more like this": ``ids`` are items
    histories: list[np.ndarray] | None = None  # per user, item IDs; None: no history column
    half_life: float = foldin.HALF_LIFE


def parse_request(
    model_input: pd.DataFrame,
    params: dict[str, Any],
    max_users: int | None = MAX_USERS,
    *,
    string_users: bool = False,
    string_items: bool = False,
) -> Request:
    """The request's rows and params, or ``BadRequest`` saying what is wrong; ``string_users``
    and ``string_items`` say the model's IDs are strings. ``max_users`` None is batch scoring:
    no limit on users, k or history lengths."""
    try:
        k = int(params.get("k", 10))
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"k must be an integer, got {params.get('k')!r}") from None
    if k < 1 or (max_users is not None and k > MAX_K):
        raise BadRequest(f"k must be between 1 and {MAX_K}, got {k}")
    filter_seen = params.get("filter_seen", True)
    if isinstance(filter_seen, str):  # in-process callers may pass "false"
        filter_seen = filter_seen.strip().lower() not in ("false", "0", "no")
    try:
        half_life = float(params.get("half_life", foldin.HALF_LIFE))
    except (TypeError, ValueError):
        half_life = -1.0
    if not 0 <= half_life < float("inf"):
        raise BadRequest(f"half_life must be a number >= 0, got {params.get('half_life')!r}")
    columns = list(model_input.columns)
    if (USER_COL in columns) == (ITEM_COL in columns):
        raise BadRequest(
            f"input needs a '{USER_COL}' column (or '{ITEM_COL}' for similar items), "
            f"{'not both' if USER_COL in columns else f'got {columns}'}"
        )
    items = ITEM_COL in columns
    if items and HISTORY_COL in columns:
        raise BadRequest(f"'{HISTORY_COL}' goes with '{USER_COL}' rows, not '{ITEM_COL}' rows")
    if max_users is not None and len(model_input) > max_users:
        raise BadRequest(
            f"at most {max_users} {'items' if items else 'users'} per request, got "
            f"{len(model_input)}; split the request "
            "or score many users with the recommend entry point"
        )
    column = ITEM_COL if items else USER_COL
    strings = string_items if items else string_users
    ids = to_ids(model_input[column], strings)
    if ids is None:
        raise BadRequest(
            f"'{column}' values must be {'IDs (strings or integers)' if strings else 'integers'}"
        )
    histories = None
    if HISTORY_COL in columns:
        longest = MAX_HISTORY if max_users is not None else None
        histories = [
            check_history(h, row, longest, string_items)
            for row, h in enumerate(model_input[HISTORY_COL])
        ]
        total = sum(h.size for h in histories)
        if max_users is not None and total > MAX_REQUEST_HISTORY:
            raise BadRequest(
                f"at most {MAX_REQUEST_HISTORY} history items per request, got {total}; split "
                "the request or score many users with the recommend entry point"
            )
    return Request(ids, k, bool(filter_seen), items, histories, half_life)


def to_ids(values: Any, strings: bool) -> np.ndarray | None:
    """``values`` as a model's IDs: int64 (``strings`` False: integer-valued numbers or their
    text) or str (strings as they are, integer-valued numbers as their decimal text); None if
    one of them cannot be."""
    if not strings:
        return _integers(values)
    out = []
    for value in list(values):
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, int | np.integer) and _is_number(value):
            out.append(str(value))
        elif _is_number(value) and float(value).is_integer():  # 42.0: JSON's integers, at times
            out.append(str(int(value)))
        else:  # None, NaN, a list...
            return None
    return np.array(out, dtype=str)


def _integers(values: Any) -> np.ndarray | None:
    # Integer-valued numbers as int64, or None.
    try:
        array = np.asarray(pd.to_numeric(values, errors="raise"))
    except (TypeError, ValueError, OverflowError):
        return None
    exact = array.dtype.kind in "iu" or (
        array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0) and np.all(np.abs(array) < 2**63)
    )
    if not exact or (array.dtype.kind == "u" and array.size and array.max() >= 2**63):
        return None
    return array.astype(np.int64)


def check_history(
    value: Any, row: int, longest: int | None = MAX_HISTORY, strings: bool = False
) -> np.ndarray:
    """One row's history as item IDs (missing: empty), int64 or (``strings``) str, at most
    ``longest`` of them (None: no limit), or ``BadRequest``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.empty(0, dtype=str if strings else np.int64)
    # A list from JSON, a 1-d array from Parquet (pyarrow); anything else is no history.
    if not (isinstance(value, list | tuple) or (isinstance(value, np.ndarray) and value.ndim == 1)):
        raise BadRequest(
            f"'{HISTORY_COL}' of row {row} must be a list of item IDs, got {type(value).__name__}"
        )
    if longest is not None and len(value) > longest:
        raise BadRequest(f"'{HISTORY_COL}' of row {row} has {len(value)} items; at most {longest}")
    if strings:
        items = to_ids(value, strings=True)
    else:
        items = _integers(list(value)) if all(_is_number(v) for v in value) else None
    if items is None:
        kind = "item IDs (strings or integers)" if strings else "integer item IDs"
        raise BadRequest(f"'{HISTORY_COL}' of row {row} must hold {kind} only")
    return items


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
