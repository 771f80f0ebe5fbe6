"""The served model's bundle: what ``train_best`` writes and ``RecommenderModel`` loads.

The bundle is the model's arrays (``Recommender.save``), ``items.parquet`` (titles, genres) and
the seen table as CSR over the model's user and item positions, so that loading it is a memory
map, not a sort of millions of rows: the user at position ``u`` has seen the items at positions
``seen_indices[seen_indptr[u]:seen_indptr[u + 1]]`` (``seen_indptr.npy``,
``seen_indices.npy``); ``popularity.npy`` counts each item's seen rows. IDs are integers or
strings, as the model's (``user_ids.npy``, ``item_ids.npy``); a blend with EASE adds
``ease_weights.npy`` and ``blend.json`` (``write_blend``); ``items.parquet``'s ``item_id``
column is written in the model's kind, so a string model's titles are found by their text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recflow.constants import ITEM_COL, USER_COL
from recflow.model.ids import is_string
from recflow.model.recommender import Recommender

# Where the factorization model is served blended with EASE: EASE's item-item weights (float32,
# items x items in the model's order) and the blend's share.
BLEND_WEIGHTS = "ease_weights.npy"
# The test split's (user, item) pairs as CSR over the model's positions, like the seen ones.
HELD_OUT = ("held_out_indptr", "held_out_indices")
BLEND_JSON = "blend.json"


def write_bundle(
    path: Path, model: Recommender, items: pd.DataFrame, seen: pd.DataFrame,
    held_out: pd.DataFrame | None = None,
) -> None:  # fmt: skip
    """Write everything the served model needs into one folder; ``held_out`` (the test split:
    interactions the model was not trained on, but the users' own) is filtered out of answers
    too, as ``HELD_OUT`` CSR arrays."""
    model.save(path)
    if is_string(model.item_ids):
        items = items.assign(**{ITEM_COL: items[ITEM_COL].astype(str)})
    items.to_parquet(path / "items.parquet", index=False)
    for name, array in seen_arrays(model, seen).items():
        np.save(path / f"{name}.npy", array)
    if held_out is not None:
        arrays = seen_arrays(model, held_out)
        for name, key in zip(HELD_OUT, ("seen_indptr", "seen_indices"), strict=True):
            np.save(path / f"{name}.npy", arrays[key])


def read_held_out(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The held-out CSR arrays ``write_bundle`` wrote (memory-mapped); None in a bundle written
    without them (before they existed)."""
    files = [path / f"{name}.npy" for name in HELD_OUT]
    if not all(f.exists() for f in files):
        return None
    indptr, indices = (np.load(f, mmap_mode="r") for f in files)
    return indptr, indices


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


def write_blend(path: Path, weights: np.ndarray, share: float) -> None:
    """Add EASE's item-item weights and its share of the served blend (``recflow.model.blend``)."""
    np.save(path / BLEND_WEIGHTS, weights.astype(np.float32, copy=False))
    (path / BLEND_JSON).write_text(json.dumps({"share": share}))


def read_blend(path: Path) -> tuple[np.ndarray, float] | None:
    """EASE's weights (memory-mapped) and share, or None for a bundle of the model alone."""
    if not (path / BLEND_JSON).is_file():
        return None
    share = float(json.loads((path / BLEND_JSON).read_text())["share"])
    return np.load(path / BLEND_WEIGHTS, mmap_mode="r"), share
