"""The served model: an MLflow pyfunc that turns user IDs into ranked, titled recommendations.

In (per request): a DataFrame with a ``user_id`` column, params ``k`` and ``filter_seen``.
Out: one row per recommendation (user_id, rank, item_id, title, genres, score, source), best
first (equal scores: the item first in the model's order). With filter_seen (the default) a
user's seen items are left out, so one who has seen almost everything gets fewer than k rows.
Users the model never saw get the most popular items, with source "popular".

The bundle (``write_bundle``) is the model's arrays (``Recommender.save``), ``items.parquet``
(titles, genres) and the seen table as CSR over the model's user and item positions, so that
loading it is a memory map, not a sort of millions of rows: the user at position ``u`` has seen
the items at positions ``seen_indices[seen_indptr[u]:seen_indptr[u + 1]]``
(``seen_indptr.npy``, ``seen_indices.npy``); ``popularity.npy`` counts each item's seen rows.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

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
SOURCE_COL = "source"
OUTPUT_COLS = [USER_COL, RANK_COL, ITEM_COL, TITLE_COL, GENRES_COL, SCORE_COL, SOURCE_COL]
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


def parse_request(
    model_input: pd.DataFrame, params: dict[str, Any], max_users: int | None = MAX_USERS
) -> tuple[np.ndarray, int, bool]:
    """User IDs, k and filter_seen of a request, or ``BadRequest`` saying what is wrong."""
    try:
        k = int(params.get("k", 10))
    except (TypeError, ValueError):
        raise BadRequest(f"k must be an integer, got {params.get('k')!r}") from None
    if not 1 <= k <= MAX_K:
        raise BadRequest(f"k must be between 1 and {MAX_K}, got {k}")
    filter_seen = params.get("filter_seen", True)
    if isinstance(filter_seen, str):  # in-process callers may pass "false"
        filter_seen = filter_seen.strip().lower() not in ("false", "0", "no")
    if USER_COL not in model_input.columns:
        raise BadRequest(f"input needs a '{USER_COL}' column, got {list(model_input.columns)}")
    if max_users is not None and len(model_input) > max_users:
        raise BadRequest(
            f"at most {max_users} users per request, got {len(model_input)}; split the request "
            "or score many users with the recommend entry point"
        )
    try:
        users = pd.to_numeric(model_input[USER_COL], errors="raise").to_numpy()
    except (TypeError, ValueError):
        users = np.array([np.nan])
    exact = users.dtype.kind in "iub" or (
        users.dtype.kind == "f" and np.all(np.mod(users, 1) == 0) and np.all(np.abs(users) < 2**63)
    )
    if not exact or (users.dtype.kind == "u" and users.size and users.max() >= 2**63):
        raise BadRequest(f"'{USER_COL}' values must be integers")
    return users.astype(np.int64), k, bool(filter_seen)


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
        users, k, filter_seen = parse_request(model_input, params or {}, self.max_users)
        pos = self.model.user_positions(users)
        known = pos >= 0
        n_items = len(self.model.item_ids)
        k = min(k, n_items)
        rows, cols, scores = [], [], []
        # Known users a block at a time, into one buffer reused for the whole call: memory stays
        # at one block whatever the number of users, and the block's pages stay mapped.
        known_rows = np.flatnonzero(known)
        step = max(2, BLOCK_BYTES // (4 * n_items))
        bounds = list(range(0, known_rows.size, step)) + [known_rows.size]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            # No one-user block after others: BLAS scores one user with a matrix-vector
            # product, whose rounding differs from the matrix product of the other blocks.
            del bounds[-2]
        buffer = np.empty((min(step + 1, known_rows.size), n_items), dtype=np.float32)
        for start, stop in itertools.pairwise(bounds):
            block_rows = known_rows[start:stop]
            block = self._scores(pos[block_rows], buffer[: block_rows.size], filter_seen)
            r, c = top_k_finite(block, k)
            rows.append(block_rows[r])
            cols.append(c)
            scores.append(block[r, c])
        # Unknown users all get the same list: the most popular items.
        unknown = np.flatnonzero(~known)
        rows.append(np.repeat(unknown, k))
        cols.append(np.tile(self.popular[:k], unknown.size))
        scores.append(np.tile(self.popularity[self.popular[:k]], unknown.size))
        row = np.concatenate(rows)
        order = np.argsort(row, kind="stable")  # back to the input's order, best first per user
        row, col = row[order], np.concatenate(cols)[order]
        return pd.DataFrame(
            {
                USER_COL: users[row],
                RANK_COL: np.arange(1, row.size + 1) - np.searchsorted(row, row),
                ITEM_COL: self.model.item_ids[col],
                TITLE_COL: self.titles[col],
                GENRES_COL: self.genres[col],
                SCORE_COL: np.concatenate(scores)[order].astype(float),
                SOURCE_COL: np.where(known[row], "model", "popular"),
            },
            columns=OUTPUT_COLS,
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


def known_users(model: mlflow.pyfunc.PyFuncModel) -> np.ndarray:
    """The users a loaded recommender model was trained on."""
    return model.unwrap_python_model().user_ids


def requirements() -> list[str]:
    """Pinned runtime requirements of the served model (it scores with NumPy; no rankfmc)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "numpy", "pandas", "pyarrow")]


def log_model(bundle: Path, example_users: list[int]) -> mlflow.models.model.ModelInfo:
    """Log the bundle as a pyfunc model named ``model`` with signature and input example."""
    from mlflow.models import infer_signature

    example = pd.DataFrame({USER_COL: np.asarray(example_users, dtype=np.int64)})
    python_model = RecommenderModel()
    python_model.load_context(_Context({ARTIFACT_KEY: str(bundle)}))
    params = {"k": 10, "filter_seen": True}
    signature = infer_signature(example, python_model.predict(None, example, params), params)
    return mlflow.pyfunc.log_model(
        name=MODEL_NAME,
        python_model=RecommenderModel(),
        artifacts={ARTIFACT_KEY: str(bundle)},
        code_paths=[str(Path(__file__).resolve().parent)],
        signature=signature,
        input_example=example,
        pip_requirements=requirements(),
    )


class _Context:
    # Just enough of PythonModelContext to load the model before it is logged.
    def __init__(self, artifacts: dict[str, str]) -> None:
        self.artifacts = artifacts
