"""Choosing the served blend of the factorization model and EASE on the validation split.

In: the factorization model and EASE, both fitted on the training split, and the validation
interactions. Out: the share of EASE (``recflow.model.blend``) whose blend ranks validation best,
and the blended ranker over the final models that ``train_best`` tests and serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recflow.evaluation.accuracy import Holdout, Ranker, Scorer
from recflow.model import blend as shares_of
from recflow.model.blend import blend


def blended_scorer(model: Scorer, ease: Scorer, share: float) -> Scorer:
    """Scores of the blend, for users given as positions."""
    return lambda users: blend(model(users), ease(users), share)


def choose_share(
    model: Ranker,
    ease: Scorer,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    metric: str,
    k: int,
    shares: Sequence[float] | None = None,
) -> tuple[float, dict[float, float]]:
    """The share of EASE whose blend with ``model`` scores best by ``metric`` at ``k`` on
    ``valid`` (ties: the smallest), and the score at each share (default: ``blend.SHARES``).
    ``model`` and ``ease`` are fitted on ``train``, over the same positions."""
    shares = shares_of.SHARES if shares is None else shares
    holdout = Holdout.of(model, train, valid)
    name = f"{metric}_at_{k}"
    validation = {
        float(s): holdout.evaluate(blended_scorer(model.scores, ease, s), k)[name] for s in shares
    }
    return max(validation, key=validation.__getitem__), validation


@dataclass(frozen=True)
class Blended:
    """A ``Ranker`` over ``model``'s users and items that ranks by the blend with EASE."""

    model: Ranker
    ease: Scorer
    share: float

    @property
    def user_ids(self) -> np.ndarray:
        return self.model.user_ids

    @property
    def item_ids(self) -> np.ndarray:
        return self.model.item_ids

    def user_positions(self, user_ids: np.ndarray) -> np.ndarray:
        return self.model.user_positions(user_ids)

    def item_positions(self, item_ids: np.ndarray) -> np.ndarray:
        return self.model.item_positions(item_ids)

    def scores(self, user_pos: np.ndarray) -> np.ndarray:
        return blend(self.model.scores(user_pos), self.ease(user_pos), self.share)
