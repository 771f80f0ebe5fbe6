"""Choosing the served blend of the factorization model and EASE on the validation split.

In: the factorization model fitted on the training split, the training and validation
interactions, and EASE alone as chosen on validation. Out: the share (``recflow.model.blend``)
whose blend ranks validation best at the blend's λ, and the blended ranker over the final models
that ``train_best`` tests and serves.

Blended with the factorization model, EASE does best less regularised than alone, so the blend
takes the grid's λ just under EASE alone's (on test, nine runs of three real data sets: 50-200
best in the blend, 500 chosen alone). The λ is not chosen on validation with the share: on 14
runs that choice was noise, and one λ gave the same or better test NDCG@10 on 11 of them
(docs/results.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recflow.evaluation.accuracy import Ranker, Scorer
from recflow.evaluation.baselines import EASE_LAMBDAS, Ease, on_validation
from recflow.model import blend as shares_of
from recflow.model.blend import blend, standardised

# The grid the blend's λ is taken from: the grid EASE alone is chosen from.
LAMBDAS = EASE_LAMBDAS
# The blend is served below this many training interactions. Choosing its share trains the
# configuration once more, on the training split: at ML-10M scale (7M) one more training of
# ~25 minutes (docs/cost.md), for a gain measured only on real data of up to 250k interactions.
BLEND_BELOW = 2_000_000


def blend_skipped(n_interactions: int) -> str | None:
    """Why the blend is not served on ``n_interactions`` training interactions; None if it is."""
    if n_interactions < BLEND_BELOW:
        return None
    return (
        f"{n_interactions:,} training interactions, from {BLEND_BELOW:,} on the share would be "
        "chosen at the cost of one more training; the model is served alone (EASE's metrics "
        "are still logged beside it)"
    )


def blend_lambda(alone: float, lambdas: Sequence[float] | None = None) -> float:
    """EASE's λ in the blend: the grid's (default ``LAMBDAS``) largest λ under ``alone``, the λ
    EASE alone was chosen with; the grid's smallest when none is under it."""
    grid = sorted(LAMBDAS if lambdas is None else lambdas)
    under = [lam for lam in grid if lam < alone]
    return float(under[-1] if under else grid[0])


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
    """The share that scored best on validation and EASE's λ in what is served: the blend's,
    or EASE alone's at share 1."""

    lam: float
    share: float
    validation: dict[float, float]  # the metric at each share


def choose_blend(
    model: Ranker,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    metric: str,
    k: int,
    ease: Ease,
    shares: Sequence[float] | None = None,
) -> BlendChoice:
    """The share (default: ``blend.SHARES``) whose blend of ``model`` (fitted on ``train``) and
    EASE fitted on ``train`` at ``blend_lambda(ease.lam)`` scores best by ``metric`` at ``k`` on
    ``valid``, all shares ranked in one pass over the users. ``ease`` is EASE alone, chosen by
    the same metric: share 1 is EASE alone at its own λ, so the blend never serves a weaker EASE
    than the baseline it is compared with. Ties: the smallest share (0: the model alone)."""
    shares = [float(s) for s in (shares_of.SHARES if shares is None else shares)]
    lam = blend_lambda(ease.lam)
    blended = [s for s in shares if s < 1.0]
    (tallies,) = on_validation(
        model, train, valid, [lam],
        lambda holdout, ease: holdout.tally_each(blends(model.scores, ease, blended), [k]),
    ).values()  # fmt: skip
    alone = ease.validation[ease.lam]  # share 1: EASE alone, as it was chosen
    validation = {
        s: alone if s >= 1.0 else tallies[s].metrics(k)[f"{metric}_at_{k}"] for s in shares
    }
    share = max(shares, key=lambda s: (validation[s], -s))
    return BlendChoice(float(ease.lam if share >= 1.0 else lam), share, validation)


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
