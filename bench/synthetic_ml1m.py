"""A synthetic ML-1M-scale ratings frame, for benchmarks: a thin wrapper over bench/synthetic.py.

In: a seeded ``numpy.random.Generator``. Out: a ratings frame (user_id, item_id, rating,
timestamp) of the ``ml-1m`` shape of ``bench.synthetic`` (real ML-1M users and movies when
../shared/data/ml-1m is present, Zipf popularity, lognormal activity and latent tastes). Reuse it
from another benchmark with::

    from bench.synthetic_ml1m import ml1m_ratings
    ratings = ml1m_ratings(np.random.default_rng(0))

Run ``bench/synthetic.py --shape ml-1m --out DIR`` for the zip and its shape statistics.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.synthetic import generate  # noqa: E402


def ml1m_ratings(rng: np.random.Generator) -> pd.DataFrame:
    """The ratings of a seeded synthetic ML-1M-shaped dataset."""
    return generate("ml-1m", rng).ratings
