"""Choosing the served blend of the factorization model and EASE on the validation split.

In: the factorization model fitted on the training split, and the training and validation
interactions. Out: EASE's λ and share (``recflow.model.blend``) whose blend ranks validation best,
and the blended ranker over the final models that ``train_best`` tests and serves.

The λ is chosen with the share, not taken from EASE alone: blended with the factorization model,
EASE does best less regularised than alone (real ML-100K, three split seeds: λ 50-200 in the
blend against 500 alone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recflow.evaluation.accuracy import Ranker, Scorer
from recflow.evaluation.baselines import EASE_LAMBDAS, train_scorers
from recflow.model import blend as shares_of
from recflow.model.blend import blend, standardised

# The λ the blend tries: the grid EASE alone is chosen from.
LAMBDAS = EASE_LAMBDAS


def blends(
    model: Scorer, ease: Scorer, shares: Sequence[float]
) -> Callable[[np.ndarray], Iterator[tuple[float, np.ndarray]]]:
    """For a batch of users, the blend at each of ``shares`` (as ``blend.blend`` scores it), each
    an array of its own, with both scorers and their standardised scores computed once."""

    def scores(users: np.ndarray) -> Iterator[tuple[float, np.ndarray]]:
        m, e = model(users), ease(users)
        zm, ze = standardised(m), standardised(e)
        for s in shares:
            if s <= 0.0:
                yield s, np.array(m, dtype=np.float32)
            elif s >= 1.0:
                yield s, np.array(e, dtype=np.float32)
            else:
                out = zm * (1.0 - s)
                out += s * ze
                yield s, out

    return scores


@dataclass(frozen=True)
class BlendChoice:
    """EASE's λ and share in the blend that scored best on validation."""

    lam: float
    share: float
    validation: dict[float, dict[float, float]]  # the metric at each λ, then each share


def choose_blend(
    model: Ranker,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    metric: str,
    k: int,
    lambdas: Sequence[float] | None = None,
    shares: Sequence[float] | None = None,
) -> BlendChoice:
    """The λ of EASE fitted on ``train`` (default: ``LAMBDAS``) and its share (default:
    ``blend.SHARES``) whose blend with ``model`` (fitted on ``train`` too) scores best by
    ``metric`` at ``k`` on ``valid``. Each λ's blends are ranked in one pass over the users.
    Ties: the smallest share, then the first λ; share 0 is the model alone at every λ."""
    lambdas = LAMBDAS if lambdas is None else lambdas
    shares = shares_of.SHARES if shares is None else shares
    name = f"{metric}_at_{k}"
    validation: dict[float, dict[float, float]] = {}
    alone = None  # the model alone (share 0) ranks the same at every λ: ranked at the first only
    for lam, holdout, ease in train_scorers(model, train, valid, lambdas):
        tried = [float(s) for s in shares if s > 0.0 or alone is None]
        tallies = holdout.tally_each(blends(model.scores, ease, tried), [k])
        scored = {s: tallies[s].metrics(k)[name] for s in tried}
        alone = scored.get(0.0, alone)
        validation[lam] = {float(s): scored.get(float(s), alone) for s in shares}
    candidates = [(v, -s, -i, lam, s) for i, (lam, by_share) in enumerate(validation.items())
                  for s, v in by_share.items()]  # fmt: skip
    _, _, _, lam, share = max(candidates)
    return BlendChoice(lam, share, validation)


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
