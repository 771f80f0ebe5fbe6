"""EASE's item-item model (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

In: (user, item) position pairs and ``λ``. Out: the binary interaction matrix ``X`` and the
item-item weights ``B = I - P · diag(1 / diag(P))`` with ``P = (XᵀX + λI)⁻¹`` (a zero diagonal);
a user's scores are their row of ``X · B``. The baseline every report compares with, and the
half of the served model's blend that remembers which items go together.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack


def interactions(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_array:
    """The binary users x items matrix of (user position, item position) pairs."""
    data = np.ones(users.size, dtype=np.float32)
    x = sp.csr_array((data, (users, items)), shape=(n_users, n_items))
    x.sum_duplicates()
    x.data[:] = 1.0  # a repeated pair is one interaction
    return x


def ease_weights(gram: np.ndarray, lam: float, overwrite: bool = False) -> np.ndarray:
    """EASE's item-item weights ``B`` from the Gram matrix ``XᵀX`` and ``λ`` (float32).

    Memory: one float64 matrix and the float32 result (12 bytes per item pair) besides ``gram``;
    with ``overwrite`` (a float64 ``gram`` the caller no longer needs) the work is done in
    ``gram`` itself. ``np.linalg.inv`` would hold two float64 matrices more.
    """
    owned = overwrite and gram.dtype == np.float64 and gram.flags.c_contiguous
    p = gram if owned else np.array(gram, dtype=np.float64, order="C")
    p[np.diag_indices_from(p)] += lam
    spd_inverse(p)
    p /= -np.diag(p).copy()  # column j divided by -P_jj
    np.fill_diagonal(p, 0.0)
    return p.astype(np.float32)


# Rows mirrored per block by ``spd_inverse``: small copies, whatever the catalogue.
MIRROR_ROWS = 512


def spd_inverse(a: np.ndarray) -> None:
    """Invert the symmetric positive definite float64 matrix ``a`` (C order) in place: LAPACK's
    Cholesky factorisation and inverse (potrf, potri) work in its own memory, on one triangle,
    which is then mirrored onto the other."""
    # The C-ordered ``a`` is the Fortran-ordered ``a.T``: LAPACK takes that memory as it is,
    # and its lower triangle is ``a``'s upper one.
    if not (a.dtype == np.float64 and a.flags.c_contiguous):
        raise ValueError("spd_inverse works in place on a C-ordered float64 matrix")
    factor, info = lapack.dpotrf(a.T, lower=True, overwrite_a=True, clean=False)
    if info == 0:
        inverse, info = lapack.dpotri(factor, lower=True, overwrite_c=True)
        assert np.shares_memory(inverse, a), "LAPACK copied the matrix instead of using it"
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE's XᵀX + λI is not positive definite (LAPACK {info})")
    for lo in range(0, a.shape[0], MIRROR_ROWS):
        hi = lo + MIRROR_ROWS
        a[lo:hi, :lo] = a[:lo, lo:hi].T
        block = a[lo:hi, lo:hi]
        block[np.tril_indices_from(block, -1)] = block.T[np.tril_indices_from(block, -1)]


def rows_of(
    indptr: np.ndarray, indices: np.ndarray, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How many items each of ``users`` (positions) has in the CSR arrays (the user at position
    ``u`` has ``indices[indptr[u]:indptr[u + 1]]``), and those items, user after user."""
    lo = indptr[users]
    counts = indptr[users + 1] - lo
    # Indices lo..hi-1 of every user's slice, without a per-user Python loop.
    idx = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    return counts, indices[idx]


def seen_scores(
    indptr: np.ndarray, indices: np.ndarray, users: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Scores of ``users`` (positions) for every item: their rows of ``X · B``, with ``X`` held as
    CSR arrays (``rows_of``)."""
    counts, items = rows_of(indptr, indices, users)
    x = sp.csr_array(
        (
            np.ones(items.size, dtype=np.float32),
            items,
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
