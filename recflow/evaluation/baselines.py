"""Baselines the tuned model is compared with: items ranked by training popularity."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recflow.evaluation.accuracy import Ranker, Scorer, evaluate, positions


def popularity_scorer(train_items: np.ndarray, n_items: int) -> Scorer:
    """Score every item by its training count, the same for every user."""
    counts = np.bincount(train_items, minlength=n_items).astype(np.float32)
    return lambda users: np.broadcast_to(counts, (len(users), n_items))


def evaluate_popularity(
    model: Ranker, seen: pd.DataFrame, held_out: pd.DataFrame, k: int
) -> dict[str, float]:
    """The same metrics for ranking every user's items by training popularity."""
    seen_pos = positions(model, seen)
    scorer = popularity_scorer(seen_pos[1], len(model.item_ids))
    return evaluate(scorer, len(model.item_ids), seen_pos, positions(model, held_out), k)
