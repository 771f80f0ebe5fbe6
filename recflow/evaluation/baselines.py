"""Baselines the tuned model is compared with: items ranked by training popularity, and EASE.

EASE (``recflow.model.ease``) is the strong simple baseline for top-N from implicit feedback.
Its one parameter ``λ`` is chosen on the validation split. The item-item matrices are dense:
catalogues whose matrices exceed ``EASE_BUDGET`` bytes are not fitted (``ease_fits`` says why).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recflow.evaluation.accuracy import Holdout, Ranker, Scorer, evaluate, positions
from recflow.model.ease import ease_weights, interactions

# λ grid: Steck reports λ in the hundreds on MovieLens-sized data; the grid spans both sides.
EASE_LAMBDAS = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 3000.0)
# The item-item matrices held at once, at most this many bytes: 16 per item pair. While λ is
# chosen, the training split's float32 Gram, a float64 copy inverted in place (``ease_weights``)
# and the float32 weights; while the blend's share is chosen (``recflow.evaluation.blending``),
# EASE alone's float32 weights and the training split's float64 Gram inverted in place with its
# float32 weights. 2 GiB fits 11,585 items (ML-1M has 3,706, ML-10M 10,677, ML-20M 26,744).
EASE_BUDGET = 2 * 2**30
T = TypeVar("T")
# Columns of XᵀX computed at once by ``gram``: a sparse product holds up to 12 bytes per nonzero
# before it is made dense, so the whole product at once could need more than the dense matrix.
GRAM_BLOCK = 256


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


def ease_bytes(n_items: int) -> int:
    """Memory EASE needs for a catalogue of ``n_items``."""
    return n_items * n_items * (4 + 8 + 4)


def ease_fits(n_items: int, budget: int | None = None) -> str | None:
    """None when EASE fits in ``budget`` bytes (default ``EASE_BUDGET``), else why it is not
    fitted."""
    budget = EASE_BUDGET if budget is None else budget
    need = ease_bytes(n_items)
    if need <= budget:
        return None
    return (
        f"{n_items:,} items need {need / 2**30:.1f} GiB of item-item matrices for EASE, "
        f"over its {budget / 2**30:.1f} GiB budget"
    )


def ease_scorer(x: sp.csr_array, weights: np.ndarray) -> Scorer:
    """Scores of users (rows of ``x``) for every item: their rows of ``X · B``."""
    return lambda users: np.asarray(x[users] @ weights, dtype=np.float32)


@dataclass(frozen=True)
class Ease:
    """EASE fitted on the seen data with the ``lam`` that scored best on validation."""

    lam: float
    validation: dict[float, float]  # the chosen metric on validation at each λ tried
    x: sp.csr_array  # the seen interactions (users x items, the model's positions)
    weights: np.ndarray  # B, fitted on ``x`` with ``lam``

    @property
    def scorer(self) -> Scorer:
        return ease_scorer(self.x, self.weights)

    def weights_at(self, lam: float) -> np.ndarray:
        """B fitted on the same seen data with another ``lam`` (``weights`` at ``lam``)."""
        if lam == self.lam:
            return self.weights
        return ease_weights(gram(self.x, np.float64), lam, overwrite=True)


def gram(x: sp.csr_array, dtype: type = np.float32) -> np.ndarray:
    """``XᵀX`` as a dense array of ``dtype``, built ``GRAM_BLOCK`` columns at a time."""
    n = x.shape[1]
    out = np.empty((n, n), dtype=dtype)
    items_by_user, by_column = x.T.tocsr(), x.tocsc()
    for lo in range(0, n, GRAM_BLOCK):
        out[:, lo : lo + GRAM_BLOCK] = (
            items_by_user @ by_column[:, lo : lo + GRAM_BLOCK]
        ).toarray()
    return out


def on_validation(
    model: Ranker,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    lambdas: Sequence[float],
    score: Callable[[Holdout, Scorer], T],
) -> dict[float, T]:
    """``score`` of EASE fitted on ``train`` at each of ``lambdas``, given the holdout of
    ``valid`` to rank it on; one λ's weights alive at a time. Users and items are ``model``'s
    positions."""
    holdout = Holdout.of(model, train, valid)
    x = interactions(holdout.seen_u, holdout.seen_i, len(model.user_ids), len(model.item_ids))
    if len(lambdas) == 1:  # one λ: fitted in the Gram's own memory
        lam = float(lambdas[0])
        weights = ease_weights(gram(x, np.float64), lam, overwrite=True)
        return {lam: score(holdout, ease_scorer(x, weights))}
    g = gram(x)  # float32, copied for each λ
    # Each λ's weights die with its scorer, before the next λ's are fitted.
    return {float(lam): score(holdout, ease_scorer(x, ease_weights(g, lam))) for lam in lambdas}


def fit_ease(
    model: Ranker,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    seen: pd.DataFrame,
    metric: str,
    k: int,
    lambdas: Sequence[float] = EASE_LAMBDAS,
) -> Ease:
    """Choose λ by ``metric`` at ``k`` (e.g. "ndcg", 10) of EASE fitted on ``train`` and ranked
    on ``valid``, then fit it on ``seen`` (train and valid). Users and items are ``model``'s
    positions, so EASE scores the same rows and columns the model does."""
    name = f"{metric}_at_{k}"
    validation = on_validation(
        model, train, valid, lambdas, lambda holdout, scorer: holdout.evaluate(scorer, k)[name]
    )
    best = max(validation, key=validation.__getitem__)  # ties: the first
    x = interactions(*positions(model, seen), len(model.user_ids), len(model.item_ids))
    return Ease(best, validation, x, ease_weights(gram(x, np.float64), best, overwrite=True))
