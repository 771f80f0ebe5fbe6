"""Beyond-accuracy figures of top-k lists: coverage, Gini of exposure, novelty, popularity."""

from __future__ import annotations

import numpy as np

BEYOND_ACCURACY = ("coverage", "gini", "novelty", "avg_popularity")


def beyond_accuracy(shown: np.ndarray, popularity: np.ndarray, n_users: int) -> dict[str, float]:
    """Beyond-accuracy figures of top-k lists, from how many users were shown each catalogue
    item (``shown``) and how many training users had it (``popularity``):

    - coverage: the share of the catalogue recommended to anyone;
    - gini: the Gini index of exposure over the catalogue, 0 when every item is shown equally
      often, (n - 1) / n when one item takes it all;
    - novelty: the mean self-information -log2(popularity / n_users) of recommended items;
    - avg_popularity: the mean training popularity of recommended items.
    """
    total = shown.sum()
    if not total:
        raise ValueError("no recommendations to measure")
    n = shown.size
    ascending = np.sort(shown).astype(np.float64)
    gini = float(((2 * np.arange(1, n + 1) - n - 1) * ascending).sum() / (n * total))
    # An item no training user had (only side features could rank it) is as novel as can be.
    share = np.maximum(popularity, 1) / n_users
    return {
        "coverage": float((shown > 0).mean()),
        "gini": gini,
        "novelty": float((shown * -np.log2(share)).sum() / total),
        "avg_popularity": float((shown * popularity).sum() / total),
    }
