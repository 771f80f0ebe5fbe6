"""The served model: an MLflow pyfunc that turns user IDs into ranked, titled recommendations.

In (per request): a DataFrame with a ``user_id`` column, params ``k`` and ``filter_seen``.
Out: one row per recommendation (user_id, rank, item_id, title, genres, score, source), best
first (equal scores: the item first in the model's order). With filter_seen (the default) a
user's seen items are left out (those the model trained on and the test split's, which it did
not), so one who has seen almost everything gets fewer than k rows.
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

User and item IDs are integers or strings, as the model's training data had them
(``recflow.model.ids``); answers carry them in that kind, and a string model looks an integer ID
up by its text. Where train_best chose a blend with EASE (``recflow.model.blend``), users and histories are
ranked by the blend of the model's scores and EASE's over their seen items (and history), each
standardised per user, so scores are then z-scores; similar items stay the model's cosines.

Requests are parsed by ``parsing``; the model loads the folder ``bundle`` writes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from recflow.constants import GENRES_COL, ITEM_COL, RANK_COL, SCORE_COL, TITLE_COL, USER_COL
from recflow.evaluation.topk import top_k_finite
from recflow.model import foldin
from recflow.model.blend import EaseHalf
from recflow.model.ease import rows_of
from recflow.model.ids import is_string
from recflow.model.recommender import Recommender
from recflow.serving import bundle
from recflow.serving.parsing import (
    IGNORED_COL,
    MAX_USERS,
    OUTPUT_COLS,
    SIMILAR_TO_COL,
    SOURCE_COL,
    Request,
    parse_request,
)

# Recommendations as (input rows, item positions, scores), one entry per recommendation.
Ranked = tuple[np.ndarray, np.ndarray, np.ndarray]
ARTIFACT_KEY = "recommender"
# Scores of known users are computed this many bytes at a time (a block of 70 users at
# ML-25M's 59k items): under glibc's largest mmap threshold (32 MB), so a freed block is reused
# from the heap rather than mapped and page-faulted in again on every call.
BLOCK_BYTES = 16 * 2**20


def _latest_first(items: np.ndarray) -> np.ndarray:
    # Distinct items of a history given oldest first, the latest first.
    latest = items[::-1]
    _, first = np.unique(latest, return_index=True)
    return latest[np.sort(first)]


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Top-k recommendations for many users per call (up to ``max_users``; None: no limit)."""

    max_users: int | None = MAX_USERS

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        path = Path(context.artifacts[ARTIFACT_KEY])
        # Mapped, not read: a request touches only its users' rows, and workers share the pages.
        self._set(
            Recommender.load(path),
            pd.read_parquet(path / "items.parquet"),
            np.load(path / "seen_indptr.npy", mmap_mode="r"),
            np.load(path / "seen_indices.npy", mmap_mode="r"),
            np.load(path / "popularity.npy"),
            bundle.read_blend(path),
            bundle.read_held_out(path),
        )

    @classmethod
    def from_bundle(cls, path: Path) -> RecommenderModel:
        """The model as MLflow loads it, from a folder ``bundle.write_bundle`` wrote."""
        python_model = cls()
        python_model.load_context(_Context({ARTIFACT_KEY: str(path)}))
        return python_model

    @classmethod
    def from_arrays(
        cls,
        model: Recommender,
        items: pd.DataFrame,
        seen_indptr: np.ndarray,
        seen_indices: np.ndarray,
        popularity: np.ndarray,
        blended: tuple[np.ndarray, float] | None = None,
        held_out: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> RecommenderModel:
        """The model from what its bundle holds, in memory (``bundle.seen_arrays`` makes the
        seen CSR and popularity from a seen table; ``blended``: EASE's weights and share;
        ``held_out``: the CSR of pairs filtered out of answers though not trained on)."""
        python_model = cls()
        python_model._set(model, items, seen_indptr, seen_indices, popularity, blended, held_out)
        return python_model

    def _set(
        self,
        model: Recommender,
        items: pd.DataFrame,
        seen_indptr: np.ndarray,
        seen_indices: np.ndarray,
        popularity: np.ndarray,
        blended: tuple[np.ndarray, float] | None = None,
        held_out: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.model = model
        # EASE's half where the model is served blended with EASE, scoring from the seen CSR.
        self.ease = None if blended is None else EaseHalf(*blended, seen_indptr, seen_indices)
        meta = items.set_index(ITEM_COL)
        if is_string(model.item_ids):  # titles of string items found whatever the file's kind
            meta.index = meta.index.astype(str)
        meta = meta.reindex(model.item_ids)
        self.titles = meta[TITLE_COL].fillna("").to_numpy()
        self.genres = meta[GENRES_COL].fillna("").to_numpy()
        self.seen_indptr = seen_indptr
        self.seen_indices = seen_indices
        # A user's test-split items: never trained on, but theirs, so filtered like the seen.
        self.filtered = [(seen_indptr, seen_indices), *([held_out] if held_out else [])]
        self.popularity = popularity.astype(np.float32)
        # What unknown users get: every item, most popular first (ties by position).
        self.popular = np.argsort(-self.popularity, kind="stable")
        # For histories and similar items: items as a user vector [p, p] sees them.
        self.vectors = foldin.item_vectors(model).astype(np.float64)
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
        request = parse_request(
            model_input, params or {}, self.max_users,
            string_users=is_string(self.model.user_ids),
            string_items=is_string(self.model.item_ids),
        )  # fmt: skip
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
        if self.ease is not None:
            out[:] = self.ease.known(out, pos)
        if filter_seen:
            for indptr, indices in self.filtered:
                counts, items = rows_of(indptr, indices, pos)
                out[np.repeat(np.arange(pos.size), counts), items] = -np.inf
        return out

    def _folded(
        self, user: object, pos: int, history: np.ndarray, filter_seen: bool, half_life: float
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
        seed = foldin.seed_of(user)
        p = foldin.fold_in(self.vectors, base, history, mine, params, seed, start, weights)
        scores = (base + self.vectors @ p).astype(np.float32)
        if self.ease is not None:
            # EASE's half sees the history (and a known user's seen items) alike, unweighted.
            scores = self.ease.history(scores, np.flatnonzero(mine))
        if filter_seen:
            scores[mine] = -np.inf
            if pos >= 0:
                for indptr, indices in self.filtered[1:]:
                    scores[indices[indptr[pos] : indptr[pos + 1]]] = -np.inf
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


def string_ids(model: mlflow.pyfunc.PyFuncModel) -> tuple[bool, bool]:
    """Whether a loaded recommender model's user IDs and its item IDs are strings."""
    recommender = model.unwrap_python_model().model
    return is_string(recommender.user_ids), is_string(recommender.item_ids)


class _Context:
    # Just enough of PythonModelContext to load the model outside MLflow.
    def __init__(self, artifacts: dict[str, str]) -> None:
        self.artifacts = artifacts
