"""Users the model never saw, recommended from their history at request time: the protocol.

Per seed: hold out 10 % of the users entirely; train on everyone else (rankfm's published
configuration, the library default). Each held-out user's interactions, by time, are split in
half: the first half is the history, the second half what we try to predict (top-10 over items
not in the history). ``one_seed`` compares, on the same users and the same second halves:

    fold-in      the served model (RecommenderModel.predict) given the history per request
    fold-in, all alike   the same with ``half_life=0``: every history item weighs the same
    popularity   the most popular training items not in the history
    retrained    a model trained with the held-out users' first halves as well (they are then
                 known users, the history their seen items)

and returns each one's NDCG@10 and P@10 (bench/new_users.py prints them over several seeds).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from recflow.constants import ITEM_COL, TIMESTAMP_COL, USER_COL
from recflow.evaluation.accuracy import ranking_metrics
from recflow.model.recommender import FMParams, Recommender
from recflow.serving import bundle, pyfunc

K = 10
HELD_OUT = 0.10


def split(ratings: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(training rows of the other users, held-out users' first halves, their second halves)."""
    rng = np.random.default_rng(seed)
    users = ratings[USER_COL].unique()
    held = rng.choice(users, size=round(HELD_OUT * users.size), replace=False)
    out = ratings[ratings[USER_COL].isin(held)].sort_values(
        [USER_COL, TIMESTAMP_COL, ITEM_COL], kind="stable"
    )
    position = out.groupby(USER_COL).cumcount()
    size = out.groupby(USER_COL)[ITEM_COL].transform("size")
    first = position < size // 2
    return ratings[~ratings[USER_COL].isin(held)], out[first], out[~first]


def scores_of(recs: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Mean NDCG@K and P@K of (user_id, rank, item_id) rows against the truth rows."""
    relevant = truth.groupby(USER_COL)[ITEM_COL].apply(set)
    users = relevant.index.to_numpy()
    hits = np.zeros((users.size, K), dtype=bool)
    row_of = {u: i for i, u in enumerate(users)}
    for user, rank, item in recs[[USER_COL, "rank", ITEM_COL]].itertuples(index=False):
        if user in row_of and rank <= K:
            hits[row_of[user], rank - 1] = item in relevant[user]
    n_relevant = relevant.map(len).to_numpy()
    m = ranking_metrics(hits, n_relevant)
    return {"ndcg": float(m["ndcg"].mean()), "precision": float(m["precision"].mean())}


def in_process(model: Recommender, items: pd.DataFrame, seen: pd.DataFrame, folder: Path):
    """The served pyfunc model of ``model``, loaded as the scoring server loads it."""
    bundle.write_bundle(folder, model, items, seen)
    python_model = pyfunc.RecommenderModel.from_bundle(folder)
    python_model.max_users = None
    return python_model


def one_seed(ratings: pd.DataFrame, items: pd.DataFrame, seed: int) -> dict[str, dict]:
    """Each recommender's NDCG@K and P@K on one seed's held-out users."""
    train, first, second = split(ratings, seed)
    with tempfile.TemporaryDirectory(prefix="bench-new-users-") as tmp:
        return _compare(train, first, second, items, seed, Path(tmp))


def _compare(
    train: pd.DataFrame, first: pd.DataFrame, second: pd.DataFrame, items: pd.DataFrame,
    seed: int, folder: Path,
) -> dict[str, dict]:  # fmt: skip
    params = FMParams()
    model = in_process(Recommender.fit(train, params, seed), items, train, folder / "a")
    histories = first.groupby(USER_COL)[ITEM_COL].apply(list)
    request = pd.DataFrame({USER_COL: histories.index, "history": histories.to_numpy()})
    start = time.perf_counter()
    folded = model.predict(None, request, {"k": K})
    per_user_ms = (time.perf_counter() - start) / len(request) * 1000
    assert (folded["source"] == "history").all()
    alike = model.predict(None, request, {"k": K, "half_life": 0})

    counts = train[ITEM_COL].value_counts()
    popular = []
    for user, history in histories.items():
        top = [i for i in counts.index[: K + len(history)] if i not in set(history)][:K]
        popular += [(user, r + 1, i) for r, i in enumerate(top)]
    popular = pd.DataFrame(popular, columns=[USER_COL, "rank", ITEM_COL])

    both = pd.concat([train, first])
    again = in_process(Recommender.fit(both, params, seed), items, both, folder / "b")
    retrained = again.predict(None, pd.DataFrame({USER_COL: histories.index}), {"k": K})
    assert (retrained["source"] == "model").all()
    return {
        "fold-in": scores_of(folded, second) | {"ms": per_user_ms},
        "fold-in, all alike": scores_of(alike, second),
        "popularity": scores_of(popular, second),
        "retrained": scores_of(retrained, second),
    }
