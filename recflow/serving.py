"""The served model: an MLflow pyfunc that turns user IDs into ranked, titled recommendations.

In (per request): a DataFrame with a ``user_id`` column, params ``k`` and ``filter_seen``.
Out: one row per recommendation (user_id, rank, item_id, title, genres, score, source), best
first. Users the model never saw get the most popular items, with source "popular".

The bundle (``write_bundle``) is the model's arrays (``Recommender.save``), ``items.parquet``
(titles, genres) and the seen table as CSR over the model's user and item positions, so that
loading it is a memory map, not a sort of millions of rows: the user at position ``u`` has seen
the items at positions ``seen_indices[seen_indptr[u]:seen_indptr[u + 1]]``
(``seen_indptr.npy``, ``seen_indices.npy``); ``popularity.npy`` counts each item's seen rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from recflow.constants import (
    GENRES_COL,
    ITEM_COL,
    MODEL_NAME,
    RANK_COL,
    SCORE_COL,
    TITLE_COL,
    USER_COL,
)  # fmt: skip
from recflow.metrics import top_k
from recflow.model import Recommender

MAX_K = 1000
SOURCE_COL = "source"
OUTPUT_COLS = [USER_COL, RANK_COL, ITEM_COL, TITLE_COL, GENRES_COL, SCORE_COL, SOURCE_COL]
ARTIFACT_KEY = "recommender"


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


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Top-k recommendations for many users per call."""

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
        params = params or {}
        k = int(params.get("k", 10))
        filter_seen = params.get("filter_seen", True)
        if isinstance(filter_seen, str):  # in-process callers may pass "false"
            filter_seen = filter_seen.strip().lower() not in ("false", "0", "no")
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        if USER_COL not in model_input.columns:
            raise ValueError(f"input needs a '{USER_COL}' column, got {list(model_input.columns)}")
        users = pd.to_numeric(model_input[USER_COL], errors="raise").to_numpy()
        if not np.all(np.equal(np.mod(users, 1), 0)):
            raise ValueError(f"'{USER_COL}' values must be integers")
        users = users.astype(np.int64)
        pos = self.model.user_positions(users)
        known = pos >= 0
        n_items = len(self.model.item_ids)
        scores = np.empty((len(users), n_items), dtype=np.float32)
        scores[known] = self.model.scores(pos[known])
        scores[~known] = self.popularity
        exclude = np.zeros_like(scores, dtype=bool)
        if filter_seen and known.any():
            lo, hi = self.seen_indptr[pos[known]], self.seen_indptr[pos[known] + 1]
            counts = hi - lo
            # Indices lo..hi-1 of every user's slice, without a per-user Python loop.
            idx = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            exclude[np.repeat(np.flatnonzero(known), counts), self.seen_indices[idx]] = True
        ranked = top_k(scores, exclude, k)
        kk = ranked.shape[1]
        flat = ranked.ravel()
        out = pd.DataFrame(
            {
                USER_COL: np.repeat(users, kk),
                RANK_COL: np.tile(np.arange(1, kk + 1), len(users)),
                ITEM_COL: self.model.item_ids[flat],
                TITLE_COL: self.titles[flat],
                GENRES_COL: self.genres[flat],
                SCORE_COL: np.where(exclude, -np.inf, scores)[
                    np.repeat(np.arange(len(users)), kk), flat
                ].astype(float),
                SOURCE_COL: np.repeat(np.where(known, "model", "popular"), kk),
            },
            columns=OUTPUT_COLS,
        )
        # A user who has seen almost everything gets fewer than k rows, never a seen item.
        return out[np.isfinite(out[SCORE_COL])].reset_index(drop=True)


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
