"""How much data a trial sees: tuning on a seeded sample of users, validating on a sample of them.

In: the prepared splits, the requested ``sample_users`` and ``eval_users`` ("auto", "all" or a
count) and a seed. Out: a ``Fidelity`` (the counts resolved against the data) and the prepared
splits a trial trains and validates on. Big data is tuned on a sample so that a trial takes about
a minute; ``train_best`` always trains on everything and tests on the whole test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from recflow.constants import ITEM_COL, USER_COL
from recflow.data.preprocess import Prepared
from recflow.errors import UserError

# "auto" tunes on all users while the training split has at most this many rows (ML-1M has
# ~0.7M, so it and ML-100K stay whole) and on about this many rows' worth of users above it: an
# epoch of ~2M rows takes a few seconds, so a trial of up to 40 epochs about a minute.
AUTO_TRAIN_ROWS = 2_000_000
# "auto" validates every trial on at most this many users: the validation error of NDCG@10 over
# 10,000 users is ~0.003, below the differences between configurations worth telling apart.
AUTO_EVAL_USERS = 10_000
AUTO, ALL = "auto", "all"


def parse_count(name: str, value: str, words: tuple[str, ...], minimum: int) -> str | int:
    """One of ``words`` or an integer >= ``minimum`` (0 or 1); anything else is a one-line error
    naming ``name``. Integral floats pass: MLproject hands numbers over as e.g. ``5.0``."""
    text = str(value).strip().lower()
    if text in words:
        return text
    try:
        number = float(text)
    except ValueError:
        number = minimum - 1.0
    if not math.isfinite(number) or number != int(number) or number < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        allowed = ", ".join(f"'{w}'" for w in words)
        raise UserError(f"{name} must be {allowed} or {kind}, got {value!r}")
    return int(number)


def parse_users(name: str, value: str) -> str | int:
    """'auto', 'all' or a positive integer; anything else is a one-line error naming ``name``."""
    return parse_count(name, value, (AUTO, ALL), minimum=1)


@dataclass(frozen=True)
class Fidelity:
    """Resolved user counts: ``None`` means all of them."""

    sample_users: int | None
    eval_users: int | None

    @property
    def label(self) -> str:
        """For study names and attributes, e.g. ``users=20000,eval=all``; empty at full fidelity
        (so a full-fidelity study keeps the name it had before sampling existed)."""
        if self.sample_users is None and self.eval_users is None:
            return ""
        return f"users={self.sample_users or ALL},eval={self.eval_users or ALL}"


def resolve(data: Prepared, sample_users: str | int, eval_users: str | int) -> Fidelity:
    """Turn requested counts into a ``Fidelity`` for ``data``; counts beyond the data are errors."""
    n_users = data.train[USER_COL].nunique()
    n_rows = len(data.train)
    if sample_users == AUTO:
        wanted = round(n_users * AUTO_TRAIN_ROWS / n_rows) if n_rows > AUTO_TRAIN_ROWS else None
    else:
        wanted = None if sample_users == ALL else int(sample_users)
        if wanted is not None and wanted > n_users:
            raise UserError(
                f"sample_users={wanted} is more than the {n_users} users in the training split; "
                "use 'all' or a smaller number"
            )
    sampled = wanted if wanted is not None and wanted < n_users else None
    n_valid = data.valid[USER_COL].nunique()
    if sampled is not None:
        # About this many validation users are among the sampled ones (apply() checks the count).
        n_valid = round(n_valid * sampled / n_users)
    if eval_users == AUTO:
        evals = AUTO_EVAL_USERS if n_valid > AUTO_EVAL_USERS else None
    elif eval_users == ALL:
        evals = None
    else:
        evals = int(eval_users)
        if sampled is None and evals >= n_valid:
            if evals > n_valid:
                raise UserError(
                    f"eval_users={evals} is more than the {n_valid} users in the validation "
                    "split; use 'all' or a smaller number"
                )
            evals = None
    return Fidelity(sampled, evals)


def apply(data: Prepared, fidelity: Fidelity, seed: int) -> Prepared:
    """The splits a trial sees: train and valid of a seeded user sample, valid of a user sample.

    The test split and the item metadata are left as they are: tuning never reads them.
    """
    rng = np.random.default_rng(seed)
    train, valid = data.train, data.valid
    if fidelity.sample_users is not None:
        users = _sample(train[USER_COL].unique(), fidelity.sample_users, rng)
        train = train[train[USER_COL].isin(users)]
        # Items only the dropped users had are unknown to the trial's model.
        valid = valid[valid[USER_COL].isin(users) & valid[ITEM_COL].isin(train[ITEM_COL])]
        if valid.empty:
            raise UserError(
                f"sample_users={fidelity.sample_users} leaves no validation user; "
                "raise sample_users"
            )
    if fidelity.eval_users is not None:
        users = valid[USER_COL].unique()
        if fidelity.eval_users > len(users):
            raise UserError(
                f"eval_users={fidelity.eval_users} is more than the {len(users)} validation users "
                f"left by sample_users={fidelity.sample_users}; lower eval_users"
            )
        valid = valid[valid[USER_COL].isin(_sample(users, fidelity.eval_users, rng))]
    return replace(
        data,
        train=train.reset_index(drop=True),
        valid=valid.reset_index(drop=True),
        user_features=_rows_of(data.user_features, USER_COL, train[USER_COL]),
        item_features=_rows_of(data.item_features, ITEM_COL, train[ITEM_COL]),
    )


def _sample(ids: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    # Sorted first, so the sample depends on the seed and the set of ids, not on row order.
    return rng.choice(np.sort(ids), size=n, replace=False)


def _rows_of(features: pd.DataFrame, col: str, keep: pd.Series) -> pd.DataFrame:
    return features[features[col].isin(keep)].reset_index(drop=True)
