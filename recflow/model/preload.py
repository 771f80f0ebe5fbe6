"""Imported by the fork server that every training process is forked from
(``recflow.model.training``): training a three-interaction model for one epoch there loads the
compiled kernel once, and each forked trial or ensemble model starts with it. Loaded in every
child instead (numba's on-disk cache, one signature for all of training on one thread), it cost
each child about 0.8 s on 2 cores, eighty times a small data set's whole fit. The parallel kernel
(``threads`` > 1: from 2M training interactions without side features) still loads in its child:
a second of a fit that takes minutes.
"""

from __future__ import annotations

import contextlib

import pandas as pd

from recflow.constants import ITEM_COL, USER_COL
from recflow.model.recommender import FMParams, Recommender

# Only a head start: should it fail, the server must still start (it would die, and every fit
# with it), and each child's own fit then loads the kernel and reports what is wrong.
with contextlib.suppress(Exception):
    # Each user has an item it has not seen: WARP draws negatives until it finds one.
    Recommender.fit(
        pd.DataFrame({USER_COL: [1, 1, 2], ITEM_COL: [1, 2, 3]}), FMParams(factors=2, epochs=1), 0
    )
