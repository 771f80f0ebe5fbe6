"""Side features: one-hot user demographics and item metadata flags, and the items' metadata.

In: the users and items frames of a dataset (MovieLens's parsed files, or the catalogue of an
interactions file) and the IDs of the training users / items. Out: one row per ID, the ID first,
then float32 flags (all zeros for an ID without data); and each item's title and genres. Pure
functions: no I/O.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from recflow.constants import GENRES_COL, ITEM_COL, TITLE_COL, USER_COL

# ML-1M's age buckets; ML-100K's exact ages are mapped onto them so both share features.
AGE_BINS = (1, 18, 25, 35, 45, 50, 56)
# A metadata column with more distinct values than this (free text, prices) is no item feature.
MAX_FEATURE_VALUES = 1000

log = logging.getLogger(__name__)


def user_features(users: pd.DataFrame | None, user_ids: np.ndarray) -> pd.DataFrame:
    """One-hot gender, age bucket and occupation for ``user_ids`` (user_id first column).

    Users without demographics get all-zero rows; a dataset without a users file gets a frame
    with only the user_id column.
    """
    base = pd.DataFrame({USER_COL: np.sort(user_ids)})
    if users is None:
        return base
    u = users.copy()
    u["age"] = np.asarray(AGE_BINS)[
        np.searchsorted(AGE_BINS, u["age"].to_numpy(), side="right") - 1
    ]
    onehot = pd.get_dummies(u[["gender", "age", "occupation"]].astype(str), dtype=np.float32)
    onehot.insert(0, USER_COL, u[USER_COL].to_numpy())
    return base.merge(onehot, on=USER_COL, how="left").fillna(0.0)


def item_features(items: pd.DataFrame, item_ids: np.ndarray) -> pd.DataFrame:
    """Flags for ``item_ids`` (item_id first column): one per value of each metadata column but
    the title, '|'-separated values apart: ``genre_<g>`` for genres, ``<column>_<value>`` for
    the others (e.g. ``category_shoes``). A column with more than ``MAX_FEATURE_VALUES``
    distinct values (free text, prices) is left out."""
    base = pd.DataFrame({ITEM_COL: np.sort(item_ids)})
    blocks = [items[[ITEM_COL]].reset_index(drop=True)]
    for col in items.columns.drop([ITEM_COL, TITLE_COL], errors="ignore"):
        text = items[col].astype("str").fillna("").reset_index(drop=True)
        n_values = text.str.split("|").explode().nunique()
        if n_values > MAX_FEATURE_VALUES:
            log.warning("item metadata %r has %d distinct values: not a feature", col, n_values)
            continue
        flags = text.str.get_dummies(sep="|").astype(np.float32)
        flags = flags.drop(columns=[""], errors="ignore")  # items without a value: all zeros
        prefix = "genre" if col == GENRES_COL else col
        blocks.append(flags.add_prefix(f"{prefix}_"))
    flags = pd.concat(blocks, axis=1).drop_duplicates(ITEM_COL)
    return base.merge(flags, on=ITEM_COL, how="left").fillna(0.0)


def item_metadata(items: pd.DataFrame, item_ids: np.ndarray) -> pd.DataFrame:
    """id, title, genres for ``item_ids``; unknown items get an empty title."""
    base = pd.DataFrame({ITEM_COL: np.sort(item_ids)})
    meta = items[[ITEM_COL, TITLE_COL, GENRES_COL]].drop_duplicates(ITEM_COL)
    return base.merge(meta, on=ITEM_COL, how="left").fillna({TITLE_COL: "", GENRES_COL: ""})
