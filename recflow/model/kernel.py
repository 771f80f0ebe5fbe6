"""One training epoch of rankfm's model (WARP or BPR loss, optional side features), compiled with
numba, with sampled negatives checked against a users x items bitmap (or, where that would be too
big, a binary search of the user's sorted items).

In: the indexed interactions, what each user has seen (``seen_items``), rankfm's weight arrays
(updated in place), the epoch's learning rate and the shuffled row order. Out: nothing; the
weights are trained one epoch.

Why not rankfmc's own kernel: it checks every sampled negative against the user's items by a
linear scan, so an epoch costs the sum over users of (items per user)^2 x negatives drawn. That
scan was about two thirds of an ML-1M-scale epoch, and heavy users (thousands of ratings) make it
most of an ML-25M one. This is the same stochastic update, step for step: the row order comes from
the same ``np.random.shuffle``, the negatives from the same per-thread LCG stream, and the
gradient, regularisation and WARP rank weight are rankfmc 0.3.5's (the rank weight can be
raised to a power, ``FMParams.rank_weight``; 1 is rankfmc's), so training is the same up to
float rounding (``tests/test_model.py`` checks it against rankfmc's kernel). What each user has
seen is indexed once, so the membership check is one memory access (O(log n) beyond the bitmap).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# rankfmc's per-thread LCG: thread t's stream starts at (t + 1) * _LCG_MUL and runs on across the
# epochs of one fit (``lcg_states``).
_LCG_MUL = np.uint64(6364136223846793005)
_LCG_INC = np.uint64(1442695040888963407)
# WARP stops drawing negatives at the first one that scores within this margin of the positive.
_MARGIN = np.float32(1.0)
# The membership check reads one bit per (user, item) while such a bitmap takes at most this many
# bytes (ML-1M: 2.8 MB, ML-25M: 1.2 GB, ML-32M: 2.2 GB), and binary-searches the user's sorted
# items beyond. A bit is one memory access; a search about log2(items of the user) of them.
BITMAP_BYTES = 2 * 2**30


def seen_items(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the membership check reads: each user's distinct items as CSR rows (``ptr``, ``idx``,
    sorted within each row) and, while it takes at most ``BITMAP_BYTES``, a users x items bitmap
    (else an empty one)."""
    order = np.lexsort((items, users))
    u, i = users[order], items[order]
    keep = np.ones(len(u), dtype=bool)
    keep[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    u, i = u[keep], i[keep]
    ptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(u, minlength=n_users), out=ptr[1:])
    row_bytes = (n_items + 7) // 8
    bits = np.zeros(
        (n_users, row_bytes) if n_users * row_bytes <= BITMAP_BYTES else (0, 0), np.uint8
    )
    if bits.size:
        _set_bits(bits, u, i)
    return ptr, np.ascontiguousarray(i, dtype=np.int32), bits


@njit(nogil=True, cache=True)
def _set_bits(bits: np.ndarray, users: np.ndarray, items: np.ndarray) -> None:
    for k in range(len(users)):
        bits[users[k], items[k] >> 3] |= np.uint8(1 << (items[k] & 7))


@njit(nogil=True, cache=True)
def _has_item(idx: np.ndarray, lo: int, hi: int, item: int) -> bool:
    """Whether ``item`` is in the sorted ``idx[lo:hi]``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if idx[mid] < item:
            lo = mid + 1
        elif idx[mid] > item:
            hi = mid
        else:
            return True
    return False


# Inlined into the training loop: it runs once per sampled negative, and as a call (its arrays
# passed each time) it took a quarter of a plain epoch at 39 factors and 30 WARP samples
# (docs/cost.md, "Training kernel").
@njit(nogil=True, fastmath=True, cache=True, inline="always")
def _utility(
    i: int, u: int, u_eff: np.ndarray, w: tuple, x_if: np.ndarray, use_if: bool,
    item_terms: np.ndarray, ready: np.ndarray, step: int,
) -> np.float32:  # fmt: skip
    """rankfm's utility of item ``i`` for the step's user ``u``, whose factors plus their
    features' are ``u_eff``: ``w_i[i] + u_eff . v_i[i] + sum_q x_if[i, q] * item_terms[q]``.

    ``item_terms[q]``, feature q's weight plus its factors . u's, is the same for every item of a
    step, so it is worked out at the step's first item with feature q (then ``ready[q] ==
    step``), where rankfm works it out again for every item sampled (with the vectorised updates
    below, an item-feature epoch at ML-1M scale took 1.28 s against 1.41 s, docs/cost.md).
    """
    w_i, w_if, v_u, v_i, _, v_if = w
    res = w_i[i]
    for f in range(v_i.shape[1]):
        res += u_eff[f] * v_i[i, f]
    if use_if:
        for q in range(x_if.shape[1]):
            x = x_if[i, q]
            if x == 0.0:
                continue
            if ready[q] != step:
                t = w_if[q]
                for f in range(v_i.shape[1]):
                    t += v_if[q, f] * v_u[u, f]
                item_terms[q], ready[q] = t, step
            res += x * item_terms[q]
    return res


@njit(nogil=True, fastmath=True, cache=True)
def _train_rows(
    rows: np.ndarray, pairs: np.ndarray, weight: np.ndarray, seen: tuple, x_uf: np.ndarray,
    x_if: np.ndarray, w: tuple, alpha: np.float32, beta: np.float32, eta: np.float32,
    max_samples: int, rank_weight: float, use_uf: bool, use_if: bool, state: np.uint64,
) -> np.uint64:  # fmt: skip
    """One SGD step per row of ``pairs`` in the order ``rows``, negatives drawn from the LCG at
    ``state``; returns the LCG's state after the last draw."""
    w_i, w_if, v_u, v_i, v_uf, v_if = w
    ptr, idx, bits = seen
    use_bits = bits.shape[0] > 0
    n_items, n_factors = v_i.shape
    reg_a, reg_b = np.float32(2.0 * alpha), np.float32(2.0 * beta)
    log_items = np.log(np.float64(n_items))
    # The user's non-zero features and the item pair's non-zero feature differences, listed once
    # per step: the per-factor loops below then skip the (mostly zero) rest. A genre row has ~2
    # non-zeros of 20; looping over all of them made an item-feature epoch 2.1x a plain one,
    # against 1.6x with the lists (ML-1M scale, 39 factors, bench/training.py --compare kernel
    # --features item, before the utility was inlined).
    n_uf, uf_p, uf_x = 0, np.empty(x_uf.shape[1], np.int64), np.empty(x_uf.shape[1], x_uf.dtype)
    n_if, if_q, if_dx = 0, np.empty(x_if.shape[1], np.int64), np.empty(x_if.shape[1], x_if.dtype)
    # The step's user factors plus their features' (``_utility``), and its item feature terms.
    u_eff, d_u = np.empty(n_factors, v_u.dtype), np.empty(n_factors, v_u.dtype)
    item_terms = np.empty(x_if.shape[1], v_i.dtype)
    ready = np.full(x_if.shape[1], -1, np.int64)
    for r in range(rows.shape[0]):
        row = rows[r]
        u, i, sw = pairs[row, 0], pairs[row, 1], weight[row]
        n_uf = 0
        if use_uf:
            for p in range(x_uf.shape[1]):
                if x_uf[u, p] != 0.0:
                    uf_p[n_uf], uf_x[n_uf] = p, x_uf[u, p]
                    n_uf += 1
        for f in range(n_factors):
            u_eff[f] = v_u[u, f]
            for k in range(n_uf):
                u_eff[f] += v_uf[uf_p[k], f] * uf_x[k]
        ut_ui = _utility(i, u, u_eff, w, x_if, use_if, item_terms, ready, r)
        # WARP: draw unseen items until one scores within the margin of the positive (or
        # max_samples are drawn); the update uses the worst one. BPR draws one.
        j, worst, sampled = -1, np.float32(1e6), 0
        for s in range(1, max_samples + 1):
            sampled = s
            while True:
                state = state * _LCG_MUL + _LCG_INC
                neg = np.int64(state % np.uint64(n_items))
                if use_bits:
                    if not (bits[u, neg >> 3] >> (neg & 7)) & 1:
                        break
                elif not _has_item(idx, ptr[u], ptr[u + 1], neg):
                    break
            diff = ut_ui - _utility(neg, u, u_eff, w, x_if, use_if, item_terms, ready, r)
            if diff < worst:
                j, worst = neg, diff
            if diff < _MARGIN:
                break
        # WARP's rank weight from the number of draws (integer division, as in rankfmc), to the
        # power rank_weight (1: rankfmc's).
        mult = np.float32(np.log(np.float64((n_items - 1) // sampled)) / log_items)
        if rank_weight != 1.0 and mult > 0.0:
            mult = np.float32(mult**rank_weight)
        outer = np.float32(1.0 / (np.exp(np.float64(worst)) + 1.0))
        # Each step is sw * mult * (outer * derivative) - reg * weight, grouped as in rankfmc.
        sm = sw * mult
        w_i[i] += eta * (sm * outer - reg_a * w_i[i])
        w_i[j] += eta * (sm * -outer - reg_a * w_i[j])
        if use_if:
            n_if = 0
            for q in range(x_if.shape[1]):
                dx = x_if[i, q] - x_if[j, q]
                # Every feature weight is regularised every step, as in rankfmc.
                w_if[q] += eta * (sm * (outer * dx) - reg_b * w_if[q])
                if dx != 0.0:
                    if_q[n_if], if_dx[n_if] = q, dx
                    n_if += 1
        # Factor by factor the values are rankfmc's; each loop runs over the factors, in rows
        # (vectorised), where rankfmc interleaves the features' loops in the factors' one.
        for f in range(n_factors):
            d_u[f] = v_i[i, f] - v_i[j, f]
        for k in range(n_if):
            for f in range(n_factors):
                d_u[f] += v_if[if_q[k], f] * if_dx[k]
        for f in range(n_factors):
            # d_i = -d_j: the factors of u and its features, none of them updated yet this step
            v_u[u, f] += eta * (sm * (outer * d_u[f]) - reg_a * v_u[u, f])
            v_i[i, f] += eta * (sm * (outer * u_eff[f]) - reg_a * v_i[i, f])
            v_i[j, f] += eta * (sm * (outer * -u_eff[f]) - reg_a * v_i[j, f])
        # The feature factors see the factors just updated, as in rankfmc, and only those with a
        # non-zero input are regularised (rankfmc skips the rest too).
        for k in range(n_uf):
            p, x = uf_p[k], uf_x[k]
            for f in range(n_factors):
                d = x * (v_i[i, f] - v_i[j, f])
                v_uf[p, f] += eta * (sm * (outer * d) - reg_b * v_uf[p, f])
        for k in range(n_if):
            q, dx = if_q[k], if_dx[k]
            for f in range(n_factors):
                v_if[q, f] += eta * (sm * (outer * (dx * v_u[u, f])) - reg_b * v_if[q, f])
    return state


@njit(nogil=True, parallel=True, fastmath=True, cache=True)
def _train_hogwild(
    rows: np.ndarray, pairs: np.ndarray, weight: np.ndarray, seen: tuple, x_uf: np.ndarray,
    x_if: np.ndarray, w: tuple, alpha: np.float32, beta: np.float32, eta: np.float32,
    max_samples: int, rank_weight: float, use_uf: bool, use_if: bool, states: np.ndarray,
) -> None:  # fmt: skip
    """``_train_rows`` on one slice of ``rows`` per LCG state in ``states``, all at once and
    without locks (Hogwild), as rankfmc's parallel kernel; updates ``states``."""
    n = len(states)
    for t in prange(n):
        lo, hi = t * len(rows) // n, (t + 1) * len(rows) // n
        states[t] = _train_rows(
            rows[lo:hi], pairs, weight, seen, x_uf, x_if, w, alpha, beta, eta, max_samples,
            rank_weight, use_uf, use_if, states[t],
        )  # fmt: skip


def train_epoch(
    rows: np.ndarray, pairs: np.ndarray, weight: np.ndarray,
    seen: tuple[np.ndarray, np.ndarray, np.ndarray], x_uf: np.ndarray, x_if: np.ndarray,
    weights: tuple[np.ndarray, ...], alpha: float, beta: float, learning_rate: float,
    max_samples: int, states: np.ndarray, rank_weight: float = 1.0,
) -> None:  # fmt: skip
    """Train ``weights`` (rankfm's w_i, w_if, v_u, v_i, v_uf, v_if, in place) one epoch, on one
    thread per LCG state in ``states`` (``lcg_states``; updated for the next epoch); ``seen`` is
    ``seen_items``' answer for ``pairs``. WARP weighs each step by its rank weight to the power
    ``rank_weight``.

    The epoch visits ``pairs`` in the order ``rows``, shuffled in place first by NumPy's global
    RNG: pass the same array every epoch (it starts as ``arange``), as rankfmc's kernel does.
    """
    np.random.shuffle(rows)
    args = (
        rows, pairs, weight, seen, x_uf, x_if, weights, np.float32(alpha), np.float32(beta),
        np.float32(learning_rate), max_samples, float(rank_weight), bool(x_uf.any()),
        bool(x_if.any()),
    )  # fmt: skip
    if len(states) > 1:
        _train_hogwild(*args, states)
    else:
        states[0] = _train_rows(*args, states[0])


def lcg_states(threads: int) -> np.ndarray:
    """The negative samplers' starting states for a fit on ``threads`` threads."""
    return np.arange(1, threads + 1, dtype=np.uint64) * _LCG_MUL
