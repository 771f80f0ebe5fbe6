"""The served blend of the factorization model and EASE.

In: each scorer's scores for the same users (rows) and items (columns), and the share of EASE.
Out: ``(1 - share) · z(model) + share · z(EASE)``, where ``z`` standardises each user's scores
over the catalogue (mean 0, standard deviation 1), so that a share means the same whatever the
two scorers' scales. Share 0 is the factorization model alone, 1 EASE alone; ``train_best``
chooses it on the validation split from ``SHARES``.
"""

from __future__ import annotations

import numpy as np

SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each row as z-scores (float32); a constant row becomes zeros."""
    s = np.asarray(scores, dtype=np.float32)
    mean = s.mean(axis=1, keepdims=True)
    std = s.std(axis=1, keepdims=True)
    return (s - mean) / np.where(std > 0, std, 1.0)


def blend(model_scores: np.ndarray, ease_scores: np.ndarray, share: float) -> np.ndarray:
    """The blended scores of the same users over the same items."""
    if share <= 0.0:
        return np.asarray(model_scores, dtype=np.float32)
    if share >= 1.0:
        return np.asarray(ease_scores, dtype=np.float32)
    out = standardised(model_scores)
    out *= 1.0 - share
    out += share * standardised(ease_scores)
    return out
