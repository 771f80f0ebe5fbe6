"""Each row's k best finite scores without sorting whole rows: what evaluation and serving rank
with."""

from __future__ import annotations

import numpy as np

# Most columns per set when top_k_finite bounds a row's k-th best score by set maxima.
SET_SIZE = 128


def top_k_finite(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) positions of each row's ``k`` best finite scores: row by row, best first,
    ties by column; a row with fewer than ``k`` finite scores gives all of them.

    No row is sorted or partitioned whole. Split into ``k`` or more disjoint sets, a row's
    ``k``-th largest set maximum is at most its ``k``-th largest score, so only the sets whose
    maximum reaches that bound (a few more than ``k`` of them) need a closer look.
    """
    n_rows, n = scores.shape
    # ~4k sets: the bound then lets through ~1.15k scores. Set j is columns j, j + n_sets, ...
    # so that its maximum is an elementwise maximum of contiguous rows (vectorised).
    size = max(1, min(SET_SIZE, n // (4 * k)))
    n_sets = n // size
    whole = size * n_sets
    sets = scores[:, :whole].reshape(n_rows, size, n_sets)
    maxima = sets.max(axis=1)
    bound = np.partition(maxima, n_sets - k, axis=1)[:, n_sets - k]
    # Never -inf: excluded items are no candidates, and a row short of k keeps every finite one.
    bound = np.maximum(bound, np.finfo(scores.dtype).min)[:, None]
    r, j = np.nonzero(maxima >= bound)
    hot, i = np.nonzero(sets[r, :, j] >= bound[r])
    tail_rows, tail_cols = np.nonzero(scores[:, whole:] >= bound)  # the last n % size columns
    rows = np.concatenate([r[hot], tail_rows])
    cols = np.concatenate([i * n_sets + j[hot], tail_cols + whole])
    order = np.lexsort((cols, -scores[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    keep = np.arange(rows.size) - np.searchsorted(rows, rows) < k
    return rows[keep], cols[keep]
