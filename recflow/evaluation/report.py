"""train_best's test report: every metric at every k, for the model and for its baselines."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recflow.constants import POPULARITY_PREFIX, TEST_PREFIX, USER_COL
from recflow.evaluation.accuracy import Holdout, Ranker, Scorer, Tally
from recflow.evaluation.baselines import popularity_scorer
from recflow.evaluation.beyond import beyond_accuracy
from recflow.evaluation.names import key

# train_best's plots show the metrics at every k up to this.
CURVE_K = 20


@dataclass(frozen=True)
class Report:
    """train_best's test: the metrics it logs and what its plots are drawn from."""

    metrics: dict[str, float]  # test_..., popularity_... and each baseline's at each asked k
    tallies: dict[str, Tally]  # by prefix (test_, popularity_, ...), ranks 1..CURVE_K at least
    popularity: np.ndarray  # training users of each catalogue item


def test_report(
    model: Ranker,
    seen: pd.DataFrame,
    test: pd.DataFrame,
    ks: Iterable[int],
    baselines: Mapping[str, Scorer] | None = None,
) -> Report:
    """Every metric at every k in ``ks``, accuracy and beyond, for the model (``test_``...), for
    popularity (``popularity_``...) and for each of ``baselines`` (metric prefix -> scorer over
    the model's positions, e.g. ``ease_``), as train_best logs them; one ranking pass each."""
    holdout = Holdout.of(model, seen, test)
    n_items = holdout.n_items
    popularity = np.bincount(holdout.seen_i, minlength=n_items)
    n_users = seen[USER_COL].nunique()
    scorers = {
        TEST_PREFIX: model.scores,
        POPULARITY_PREFIX: popularity_scorer(holdout.seen_i, n_items),
        **(baselines or {}),
    }
    ks = sorted(set(ks))
    metrics, tallies = {}, {}
    for prefix, scorer in scorers.items():
        tally = tallies[prefix] = holdout.tally(
            scorer, [*ks, *range(1, CURVE_K + 1)], exposure=True
        )
        for k in ks:
            shown = beyond_accuracy(tally.shown(k), popularity, n_users)
            metrics |= {prefix + name: v for name, v in tally.metrics(k).items()}
            metrics |= {prefix + key(name, k): v for name, v in shown.items()}
    return Report(metrics, tallies, popularity)
