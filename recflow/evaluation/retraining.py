"""Scoring a model against one retrained on newer data of the same dataset, fairly.

In: the newer model's splits (its train+valid and its test set), the interactions the older
model trained on, and a model. Out: the common test set (the newer test set without what the
older model trained on, and how much was left out), what of it a model knows, and a model's
metrics on it, computed by ``accuracy.Holdout`` as train_best computes its own.

A fresh random split of grown data puts into the new test set interactions the older model
trained on; scored on those, it would be rewarded for remembering them. They are left out of
the test set and, since both models know them as the user's, out of both models' rankings. The
older model's rankings also leave out the rest of what it trained on, as it does when served:
rows the newer data no longer holds (a sliding window) would otherwise fill its top-k.

A model scores the users it knows as usual. A user it does not know is folded in from their
interactions in the newer train+valid, as the served model folds a request's ``history`` in
(``recflow.model.foldin``: the same loss, recency weights and seed): a new user gets a vector
fitted to what they did. Items a model does not know it cannot recommend: they stay in the test
set as misses, its real handicap on new data. Nothing here assumes integer IDs: IDs go through
the model's own lookups (``user_positions``, ``item_positions``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.types import is_string_dtype

from recflow.constants import ITEM_COL, TIMESTAMP_COL, USER_COL
from recflow.errors import UserError
from recflow.evaluation.accuracy import Holdout
from recflow.model import foldin
from recflow.model.blend import EaseHalf
from recflow.model.recommender import Recommender


@dataclass(frozen=True)
class CommonTest:
    """The test interactions neither model trained on, and what rankings exclude."""

    test: pd.DataFrame  # the newer test set without the pairs the older model trained on
    seen: pd.DataFrame  # excluded from rankings: the newer train+valid and the left-out pairs
    history: pd.DataFrame  # the newer train+valid: what unknown users are folded in from
    n_left_out: int  # test interactions left out because the older model trained on them


def common_test(seen: pd.DataFrame, test: pd.DataFrame, trained_on: pd.DataFrame) -> CommonTest:
    """The newer model's ``test`` set without the (user, item) pairs in ``trained_on`` (what
    the older model trained on); ``seen`` is what the newer model trained on."""
    keys, pairs = trained_on[[USER_COL, ITEM_COL]].drop_duplicates(), test[[USER_COL, ITEM_COL]]
    for col in (USER_COL, ITEM_COL):
        # Grown data whose new IDs turned a column of integers into text: 42 is "42".
        if is_string_dtype(keys[col]) != is_string_dtype(pairs[col]):
            keys, pairs = keys.astype({col: str}), pairs.astype({col: str})
    # A left merge on unique keys keeps ``test``'s rows in order, one each; exact, any ID kind.
    found = pairs.merge(keys, how="left", indicator=True)["_merge"]
    leaked = (found == "both").to_numpy()
    if leaked.all():
        raise UserError(
            f"all {len(test)} test interactions of the new data were in the alias holder's "
            "training data: no interactions left to compare the two models on"
        )
    return CommonTest(
        test[~leaked].reset_index(drop=True),
        pd.concat([seen, test[leaked]], ignore_index=True),
        seen,
        int(leaked.sum()),
    )


@dataclass(frozen=True)
class Overlap:
    """How much of a test set a model knows: its distinct users and items, and how many of
    each the model was trained on."""

    users: int
    known_users: int
    items: int
    known_items: int

    def shares(self) -> dict[str, float]:
        """Known users and items as shares of the test set's."""
        return {
            "users": self.known_users / max(self.users, 1),
            "items": self.known_items / max(self.items, 1),
        }


def overlap(model: Recommender, test: pd.DataFrame) -> Overlap:
    """The users and items of ``test`` that ``model`` knows."""
    users, items = pd.unique(test[USER_COL]), pd.unique(test[ITEM_COL])
    return Overlap(
        len(users), int(np.count_nonzero(model.user_positions(users) >= 0)),
        len(items), int(np.count_nonzero(model.item_positions(items) >= 0)),
    )  # fmt: skip


@dataclass(frozen=True)
class Scored:
    """A model's metrics on a common test set, and how many of its users it folded in."""

    metrics: dict[str, float]  # keyed as logged, e.g. ndcg_at_10
    folded_users: int


def score(
    model: Recommender, common: CommonTest, k: int, ease: EaseHalf | None = None,
    trained_on: pd.DataFrame | None = None,
) -> Scored:  # fmt: skip
    """``model``'s metrics at ``k`` on ``common``, as it is served (blended with ``ease``'s
    half when it has one): known users scored as usual, unknown ones folded in from their
    history, unknown items never recommended (but still relevant), and what it ``trained_on``
    (the holder's own training pairs, which the served model filters out) never ranked."""
    n_users, n_items = len(model.user_ids), len(model.item_ids)
    test = common.test
    # Users and items of the test set the model does not know get positions after its own.
    new_users = _unknown(model.user_positions, test[USER_COL])
    new_items = _unknown(model.item_positions, test[ITEM_COL])

    def at(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        u = _extended(model.user_positions, df[USER_COL], new_users, n_users)
        i = _extended(model.item_positions, df[ITEM_COL], new_items, n_items)
        keep = (u >= 0) & (i >= 0)
        return u[keep], i[keep]

    seen = common.seen if trained_on is None else pd.concat([common.seen, trained_on])
    holdout = Holdout.from_pairs(n_items + len(new_items), at(seen), at(test))
    histories = _histories(model, common.history, new_users)
    vectors = foldin.item_vectors(model).astype(np.float64)

    def known_scores(users: np.ndarray) -> np.ndarray:
        scores = model.scores(users)
        return scores if ease is None else ease.known(scores, users)

    def scorer(batch: np.ndarray) -> np.ndarray:
        known = batch < n_users
        if known.all() and not len(new_items):
            return known_scores(batch)  # as train_best scores: no second users x items array
        out = np.full((batch.size, holdout.n_items), -np.inf, dtype=np.float32)
        if known.any():
            out[known, :n_items] = known_scores(batch[known])
        for row in np.flatnonzero(~known):
            j = batch[row] - n_users
            scores = folded_scores(model, vectors, histories[j], foldin.seed_of(new_users[j]))
            if ease is not None:  # EASE's half sees the history alike, as served
                scores = ease.history(scores, histories[j])
            out[row, :n_items] = scores
        return out

    return Scored(holdout.evaluate(scorer, k), len(new_users))


def folded_scores(
    model: Recommender, vectors: np.ndarray, history: np.ndarray, seed: int
) -> np.ndarray:
    """Every item's score for a user ``model`` never saw, from their ``history`` (item
    positions, latest first), as the served model folds a request's history in; a history of
    items the model does not know leaves the model's item biases."""
    base = model.item_bias.astype(np.float64)
    if history.size == 0:
        return base.astype(np.float32)
    mine = np.zeros(len(model.item_ids), dtype=bool)
    mine[history] = True
    weights = foldin.recency_weights(history.size, foldin.HALF_LIFE)
    p = foldin.fold_in(vectors, base, history, mine, model.params, seed, None, weights)
    return (base + vectors @ p).astype(np.float32)


def _unknown(lookup, ids: pd.Series) -> np.ndarray:
    # The distinct ``ids`` the model's ``lookup`` does not know, in order of appearance.
    distinct = pd.unique(ids)
    return distinct[lookup(distinct) < 0]


def _extended(lookup, ids: pd.Series, extra: np.ndarray, offset: int) -> np.ndarray:
    # Positions of ``ids``: the model's, else ``offset`` + the index in ``extra``, else -1.
    values = ids.to_numpy()
    pos = lookup(values)
    missing = pos < 0
    if missing.any() and extra.size:
        more = pd.Index(extra).get_indexer(values[missing])
        pos[missing] = np.where(more >= 0, offset + more, -1)
    return pos


def _histories(model: Recommender, seen: pd.DataFrame, users: np.ndarray) -> list[np.ndarray]:
    # Each of ``users``' distinct items in ``seen`` that the model knows, as positions, latest
    # first (the order the served model folds a history in).
    mine = seen[seen[USER_COL].isin(users)]
    if TIMESTAMP_COL in mine.columns:
        mine = mine.sort_values(TIMESTAMP_COL, kind="stable")
    owner = pd.Index(users).get_indexer(mine[USER_COL].to_numpy())
    items = model.item_positions(mine[ITEM_COL].to_numpy())
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(len(users) + 1))
    histories = []
    for j in range(len(users)):
        found = items[order[bounds[j] : bounds[j + 1]]]
        latest = found[found >= 0][::-1]
        _, first = np.unique(latest, return_index=True)
        histories.append(latest[np.sort(first)])
    return histories
