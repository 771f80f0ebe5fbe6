"""The served model: an MLflow pyfunc that turns user IDs into ranked, titled recommendations.

In (per request): a DataFrame with a ``user_id`` column, params ``k`` and ``filter_seen``.
Out: one row per recommendation (user_id, rank, item_id, title, genres, score, source), best
first (equal scores: the item first in the model's order). With filter_seen (the default) a
user's seen items are left out, so one who has seen almost everything gets fewer than k rows.
Users the model never saw get the most popular items, with source "popular".

A ``history`` column (a list of item IDs per row, oldest first, up to ``MAX_HISTORY``) is folded
in at request time (``foldin``): an unknown user gets a vector fitted to it, a known user's
vector moves on from where training left it. Recent items weigh more (param ``half_life``, in
items; 0 weighs all alike). Those rows have source "history", leave the history items out (with
filter_seen) and count the history items the model does not know in ``history_ignored``. A
history of unknown items only falls back to the model or popularity.

An ``item_id`` column instead of ``user_id`` asks for similar items ("more like this"): each
item's ``k`` nearest items by cosine on the item vectors, itself excluded, in rows
(similar_to, rank, item_id, title, genres, score, source "similar"); unknown items get the
most popular items (source "popular").

The bundle (``write_bundle``) is the model's arrays (``Recommender.save``), ``items.parquet``
(titles, genres) and the seen table as CSR over the model's user and item positions, so that
loading it is a memory map, not a sort of millions of rows: the user at position ``u`` has seen
the items at positions ``seen_indices[seen_indptr[u]:seen_indptr[u + 1]]``
(``seen_indptr.npy``, ``seen_indices.npy``); ``popularity.npy`` counts each item's seen rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from recflow import foldin
from recflow.constants import (
    GENRES_COL,
    ITEM_COL,
    MODEL_NAME,
    RANK_COL,
    SCORE_COL,
    TITLE_COL,
    USER_COL,
)  # fmt: skip
from recflow.metrics import top_k_finite
from recflow.model import Recommender

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
# Recommendations as (input rows, item positions, scores), one entry per recommendation.
Ranked = tuple[np.ndarray, np.ndarray, np.ndarray]
ARTIFACT_KEY = "recommender"
# Scores of known users are computed this many bytes at a time (a block of 70 users at
# ML-25M's 59k items): under glibc's largest mmap threshold (32 MB), so a freed block is reused
# from the heap rather than mapped and page-faulted in again on every call.
BLOCK_BYTES = 16 * 2**20


def write_bundle(path: Path, model: Recommender, items: pd.DataFrame, seen: pd.DataFrame) -> None:
    """Write everything the served model needs into one folder."""
    model.save(path)
    items.to_parquet(path / "items.parquet", index=False)
    for name, array in seen_arrays(model, seen).items():
        np.save(path / f"{name}.npy", array)


def seen_arrays(model: Recommender, seen: pd.DataFrame) -> dict[str, np.ndarray]:
    """The seen (user, item) rows as CSR over the model's positions, and item popularity.

    Returns ``seen_indptr``, ``seen_indices`` (rows of users or items the model does not know
    are left out: they cannot be filtered) and ``popularity``, the seen rows of each item.
    Duplicate rows stay, as in the table.
    """
    users = model.user_positions(seen[USER_COL].to_numpy())
    items = model.item_positions(seen[ITEM_COL].to_numpy())
    popularity = np.bincount(items[items >= 0], minlength=len(model.item_ids))
    keep = (users >= 0) & (items >= 0)
    users, items = users[keep], items[keep]
    indptr = np.zeros(len(model.user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=len(model.user_ids)), out=indptr[1:])
    indices = items[np.argsort(users, kind="stable")].astype(np.int32)
    return {"seen_indptr": indptr, "seen_indices": indices, "popularity": popularity}


class BadRequest(MlflowException, ValueError):
    """A request the model cannot answer. MLflow's scoring server answers it with a 400 and this
    message; any other exception would reach the client as "an unexpected error"."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


@dataclass(frozen=True)
class Request:
    """A parsed request: users (each with a history, if the request has any) or items."""

    ids: np.ndarray
    k: int
    filter_seen: bool
    items: bool = False  # "more like this": ``ids`` are items
    histories: list[np.ndarray] | None = None  # per user, item IDs; None: no history column
    half_life: float = foldin.HALF_LIFE


def parse_request(
    model_input: pd.DataFrame, params: dict[str, Any], max_users: int | None = MAX_USERS
) -> Request:
    """The request's rows and params, or ``BadRequest`` saying what is wrong."""
    try:
        k = int(params.get("k", 10))
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"k must be an integer, got {params.get('k')!r}") from None
    if not 1 <= k <= MAX_K:
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
    ids = _integers(model_input[column])
    if ids is None:
        raise BadRequest(f"'{column}' values must be integers")
    histories = None
    if HISTORY_COL in columns:
        longest = MAX_HISTORY if max_users is not None else None
        histories = [
            check_history(h, row, longest) for row, h in enumerate(model_input[HISTORY_COL])
        ]
        total = sum(h.size for h in histories)
        if max_users is not None and total > MAX_REQUEST_HISTORY:
            raise BadRequest(
                f"at most {MAX_REQUEST_HISTORY} history items per request, got {total}; split "
                "the request or score many users with the recommend entry point"
            )
    return Request(ids, k, bool(filter_seen), items, histories, half_life)


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


def check_history(value: Any, row: int, longest: int | None = MAX_HISTORY) -> np.ndarray:
    """One row's history as int64 item IDs (missing: empty), at most ``longest`` of them (None:
    no limit), or ``BadRequest``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.empty(0, dtype=np.int64)
    # A list from JSON, a 1-d array from Parquet (pyarrow); anything else is no history.
    if not (isinstance(value, list | tuple) or (isinstance(value, np.ndarray) and value.ndim == 1)):
        raise BadRequest(
            f"'{HISTORY_COL}' of row {row} must be a list of item IDs, got {type(value).__name__}"
        )
    if longest is not None and len(value) > longest:
        raise BadRequest(f"'{HISTORY_COL}' of row {row} has {len(value)} items; at most {longest}")
    items = _integers(list(value)) if all(_is_number(v) for v in value) else None
    if items is None:
        raise BadRequest(f"'{HISTORY_COL}' of row {row} must hold integer item IDs only")
    return items


def _latest_first(items: np.ndarray) -> np.ndarray:
    # Distinct items of a history given oldest first, the latest first.
    latest = items[::-1]
    _, first = np.unique(latest, return_index=True)
    return latest[np.sort(first)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Top-k recommendations for many users per call (up to ``max_users``; None: no limit)."""

    max_users: int | None = MAX_USERS

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        path = Path(context.artifacts[ARTIFACT_KEY])
        self.model = Recommender.load(path)
        items = pd.read_parquet(path / "items.parquet").set_index(ITEM_COL)
        meta = items.reindex(self.model.item_ids)
        self.titles = meta[TITLE_COL].fillna("").to_numpy()
        self.genres = meta[GENRES_COL].fillna("").to_numpy()
        # Mapped, not read: a request touches only its users' rows, and workers share the pages.
        self.seen_indptr = np.load(path / "seen_indptr.npy", mmap_mode="r")
        self.seen_indices = np.load(path / "seen_indices.npy", mmap_mode="r")
        self.popularity = np.load(path / "popularity.npy").astype(np.float32)
        # What unknown users get: every item, most popular first (ties by position).
        self.popular = np.argsort(-self.popularity, kind="stable")
        # For histories and similar items: items as a user vector [p, p] sees them.
        self.vectors = foldin.item_vectors(self.model).astype(np.float64)
        self.unit = foldin.unit_vectors(self.vectors)

    @property
    def user_ids(self) -> np.ndarray:
        """The users the model was trained on (others get popular items)."""
        return self.model.user_ids

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        request = parse_request(model_input, params or {}, self.max_users)
        if request.items:
            return self._similar(request)
        users = request.ids
        pos = self.model.user_positions(users)
        k = min(request.k, len(self.model.item_ids))
        # Each row's history as item positions; items the model does not know are counted.
        history = [np.empty(0, dtype=np.int64)] * len(users)
        ignored = np.zeros(len(users), dtype=np.int64)
        if request.histories is not None:
            for row, ids in enumerate(request.histories):
                found = self.model.item_positions(ids)
                history[row] = _latest_first(found[found >= 0])
                ignored[row] = np.count_nonzero(found < 0)
        folded = np.array([h.size > 0 for h in history], dtype=bool)
        known = (pos >= 0) & ~folded
        parts = list(
            self._ranked(
                np.flatnonzero(known), k,
                lambda rows, out: self._scores(pos[rows], out, request.filter_seen),
            )
        )  # fmt: skip
        # Users with a history, one at a time: a few milliseconds each.
        for row in np.flatnonzero(folded):
            user_scores = self._folded(
                users[row], pos[row], history[row], request.filter_seen, request.half_life
            )
            _, c = top_k_finite(user_scores[None, :], k)
            parts.append((np.full(c.size, row), c, user_scores[c]))
        parts.append(self._popular_for(np.flatnonzero(~known & ~folded), k))
        source = np.where(folded, "history", np.where(known, "model", "popular"))
        extra = {IGNORED_COL: ignored} if request.histories is not None else {}
        return self._frame(USER_COL, users, parts, source, extra)

    def _ranked(
        self, rows: np.ndarray, k: int, fill: Callable[[np.ndarray, np.ndarray], object]
    ) -> Iterator[Ranked]:
        # The top k of each of ``rows`` (input rows), ``fill(rows, out)`` writing their scores
        # of every item into ``out``. A block at a time, into one buffer reused for the whole
        # call: memory stays at one block whatever the number of rows, its pages stay mapped.
        n_items = len(self.model.item_ids)
        step = max(2, BLOCK_BYTES // (4 * n_items))
        bounds = list(range(0, rows.size, step)) + [rows.size]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            # No one-row block after others: BLAS scores one row with a matrix-vector
            # product, whose rounding differs from the matrix product of the other blocks.
            del bounds[-2]
        buffer = np.empty((min(step + 1, rows.size), n_items), dtype=np.float32)
        for start, stop in itertools.pairwise(bounds):
            block_rows, block = rows[start:stop], buffer[: stop - start]
            fill(block_rows, block)
            r, c = top_k_finite(block, k)
            yield block_rows[r], c, block[r, c]

    def _popular_for(self, rows: np.ndarray, k: int) -> Ranked:
        # Every one of ``rows`` gets the same list: the k most popular items.
        top = self.popular[:k]
        return np.repeat(rows, k), np.tile(top, rows.size), np.tile(self.popularity[top], rows.size)

    def _frame(
        self,
        id_col: str,
        ids: np.ndarray,
        parts: list[Ranked],
        source: np.ndarray,
        extra: dict[str, np.ndarray] | None = None,
    ) -> pd.DataFrame:
        # The output frame: rows back in the input's order, best first per input row; ``extra``
        # holds more columns, a value per input row.
        rows, cols, scores = zip(*parts, strict=True)
        row = np.concatenate(rows).astype(np.int64)
        order = np.argsort(row, kind="stable")
        row, col = row[order], np.concatenate(cols)[order]
        return pd.DataFrame(
            {
                id_col: ids[row],
                RANK_COL: np.arange(1, row.size + 1) - np.searchsorted(row, row),
                ITEM_COL: self.model.item_ids[col],
                TITLE_COL: self.titles[col],
                GENRES_COL: self.genres[col],
                SCORE_COL: np.concatenate(scores)[order].astype(float),
                SOURCE_COL: source[row],
                **{name: values[row] for name, values in (extra or {}).items()},
            },
            columns=[id_col, *OUTPUT_COLS[1:], *(extra or {})],
        )

    def _scores(self, pos: np.ndarray, out: np.ndarray, filter_seen: bool) -> np.ndarray:
        # Every item's score for the users at ``pos``, into ``out``; seen items get -inf.
        self.model.scores(pos, out=out)
        if filter_seen:
            lo = self.seen_indptr[pos]
            counts = self.seen_indptr[pos + 1] - lo
            # Indices lo..hi-1 of every user's slice, without a per-user Python loop.
            idx = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            out[np.repeat(np.arange(pos.size), counts), self.seen_indices[idx]] = -np.inf
        return out

    def _folded(
        self, user: int, pos: int, history: np.ndarray, filter_seen: bool, half_life: float
    ) -> np.ndarray:
        # Every item's score for a user with a history (item positions, latest first); the
        # history (and a known user's seen items) at -inf with filter_seen.
        mine = np.zeros(len(self.model.item_ids), dtype=bool)
        mine[history] = True
        start = None
        base = self.model.item_bias.astype(np.float64)
        if pos >= 0:  # a known user: on from their trained vector, their seen items are theirs
            mine[self.seen_indices[self.seen_indptr[pos] : self.seen_indptr[pos + 1]]] = True
            base = self.model.scores(np.array([pos]))[0].astype(np.float64)
            start = np.zeros(self.vectors.shape[1])
        weights = foldin.recency_weights(history.size, half_life)
        params = self.model.params
        p = foldin.fold_in(self.vectors, base, history, mine, params, user, start, weights)
        scores = (base + self.vectors @ p).astype(np.float32)
        if filter_seen:
            scores[mine] = -np.inf
        return scores

    def _similar(self, request: Request) -> pd.DataFrame:
        # Each item's k most similar items (cosine), itself excluded; unknown items: popular.
        pos = self.model.item_positions(request.ids)
        k = min(request.k, len(self.model.item_ids))
        known = pos >= 0

        def cosines(rows: np.ndarray, out: np.ndarray) -> None:
            np.matmul(self.unit[pos[rows]], self.unit.T, out=out)
            out[np.arange(rows.size), pos[rows]] = -np.inf

        parts = [
            *self._ranked(np.flatnonzero(known), k, cosines),
            self._popular_for(np.flatnonzero(~known), k),
        ]
        source = np.where(known, "similar", "popular")
        return self._frame(SIMILAR_TO_COL, request.ids, parts, source)


def known_users(model: mlflow.pyfunc.PyFuncModel) -> np.ndarray:
    """The users a loaded recommender model was trained on."""
    return model.unwrap_python_model().user_ids


def requirements() -> list[str]:
    """Pinned runtime requirements of the served model (it scores with NumPy; no rankfmc)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "numpy", "pandas", "pyarrow")]


def signature(bundle: Path, example: pd.DataFrame) -> mlflow.models.ModelSignature:
    """The served model's signature: inputs, the output of ``example`` and the params."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    python_model = RecommenderModel()
    python_model.load_context(_Context({ARTIFACT_KEY: str(bundle)}))
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
        code_paths=[str(Path(__file__).resolve().parent)],
        signature=signature(bundle, example),
        input_example=example,
        pip_requirements=requirements(),
    )


class _Context:
    # Just enough of PythonModelContext to load the model before it is logged.
    def __init__(self, artifacts: dict[str, str]) -> None:
        self.artifacts = artifacts
