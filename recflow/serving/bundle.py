"""The served model's bundle: what ``train_best`` writes and ``RecommenderModel`` loads.

The bundle is the model's arrays (``Recommender.save``), ``items.parquet`` (titles, genres) and
the seen table as CSR over the model's user and item positions, so that loading it is a memory
map, not a sort of millions of rows: the user at position ``u`` has seen the items at positions
``seen_indices[seen_indptr[u]:seen_indptr[u + 1]]`` (``seen_indptr.npy``,
``seen_indices.npy``); ``popularity.npy`` counts each item's seen rows. IDs are integers or
strings, as the model's (``user_ids.npy``, ``item_ids.npy``); ``items.parquet``'s ``item_id``
column is written in the model's kind, so a string model's titles are found by their text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recflow.constants import ITEM_COL, USER_COL
from recflow.model.ids import is_string
from recflow.model.recommender import Recommender


def write_bundle(path: Path, model: Recommender, items: pd.DataFrame, seen: pd.DataFrame) -> None:
    """Write everything the served model needs into one folder."""
    model.save(path)
    if is_string(model.item_ids):
        items = items.assign(**{ITEM_COL: items[ITEM_COL].astype(str)})
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
