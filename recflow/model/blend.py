"""The served blend of the factorization model and EASE.

In: each scorer's scores for the same users (rows) and items (columns), and the share of EASE.
Out: ``(1 - share) · z(model) + share · z(EASE)``, where ``z`` standardises each user's scores
over the catalogue (mean 0, standard deviation 1), so that a share means the same whatever the
two scorers' scales. Share 0 is the factorization model alone, 1 EASE alone; ``train_best``
chooses it on the validation split from ``SHARES``. ``EaseHalf`` is EASE's half as the served
model holds it: it blends a known user's scores (EASE over what they had seen in training) and a
history's (EASE over the history) with the factorization model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recflow.model.ease import history_scores, seen_scores

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


@dataclass(frozen=True)
class EaseHalf:
    """EASE's half of a model served blended with it: the item-item weights (in the model's
    item order), EASE's share, and the items each known user had seen when it was trained (CSR
    arrays over the model's positions), which EASE scores them from."""

    weights: np.ndarray
    share: float
    indptr: np.ndarray
    indices: np.ndarray

    def known(self, model_scores: np.ndarray, users: np.ndarray) -> np.ndarray:
        """The blend for known ``users`` (positions), ``model_scores`` being the model's."""
        ease = seen_scores(self.indptr, self.indices, users, self.weights)
        return blend(model_scores, ease, self.share)

    def history(self, model_scores: np.ndarray, items: np.ndarray) -> np.ndarray:
        """One user's blend from the items they have had (positions, every one alike: EASE
        was fitted unweighted), ``model_scores`` being the model's for that user."""
        ease = history_scores(self.weights, items)
        return blend(model_scores[None, :], ease[None, :], self.share)[0]
