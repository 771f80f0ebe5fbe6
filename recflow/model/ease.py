"""EASE's item-item model (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

In: (user, item) position pairs and ``λ``. Out: the binary interaction matrix ``X`` and the
item-item weights ``B = I - P · diag(1 / diag(P))`` with ``P = (XᵀX + λI)⁻¹`` (a zero diagonal);
a user's scores are their row of ``X · B``. The baseline every report compares with, and the
half of the served model's blend that remembers which items go together.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def interactions(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_array:
    """The binary users x items matrix of (user position, item position) pairs."""
    data = np.ones(users.size, dtype=np.float32)
    x = sp.csr_array((data, (users, items)), shape=(n_users, n_items))
    x.sum_duplicates()
    x.data[:] = 1.0  # a repeated pair is one interaction
    return x


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE's item-item weights ``B`` from the Gram matrix ``XᵀX`` and ``λ`` (float32)."""
    g = gram.astype(np.float64)  # a copy: the caller's Gram serves every λ
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = p / -np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def seen_scores(
    indptr: np.ndarray, indices: np.ndarray, users: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Scores of ``users`` (positions) for every item: their rows of ``X · B``, with ``X`` held as
    CSR arrays (the user at position ``u`` has seen ``indices[indptr[u]:indptr[u + 1]]``)."""
    lo = indptr[users]
    counts = indptr[users + 1] - lo
    # Indices lo..hi-1 of every user's slice, without a per-user Python loop.
    idx = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    x = sp.csr_array(
        (
            np.ones(idx.size, dtype=np.float32),
            indices[idx],
            np.concatenate([[0], np.cumsum(counts)]),
        ),
        shape=(users.size, weights.shape[0]),
    )
    x.sum_duplicates()
    x.data[:] = 1.0  # a repeated seen row is one interaction, as EASE was fitted
    return np.asarray(x @ weights, dtype=np.float32)


def history_scores(weights: np.ndarray, items: np.ndarray) -> np.ndarray:
    """One user's scores for every item from the items they have had (positions; a repeated
    item counts once, as EASE was fitted): their row of ``X · B``."""
    return weights[np.unique(items)].sum(axis=0, dtype=np.float32)
