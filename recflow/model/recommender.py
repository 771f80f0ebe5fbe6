"""The factorization-machine recommender: rankfm (through the ``rankfmc`` fork) behind a small API.

In: training interactions, optional side features and ``FMParams``. Out: a fitted ``Recommender``
that scores every item for any known user with one matrix product, and saves to / loads from a
folder of NumPy arrays (so loading it needs NumPy and pandas only). User and item IDs are integers
or strings, as the training data had them (``recflow.model.ids``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from recflow.constants import ITEM_COL, USER_COL
from recflow.model.ids import IdIndex, id_array

LOSSES = ("warp", "bpr")
SCHEDULES = ("constant", "invscaling")
FEATURES = ("none", "user", "item", "both")


@dataclass(frozen=True)
class FMParams:
    """rankfm hyperparameters plus the training length and the use of side features.

    The defaults are rankfm's published MovieLens example: a strong baseline (NDCG@10 ~0.45 on
    ML-100K), and every study's first trial.
    """

    factors: int = 20
    loss: str = "warp"
    max_samples: int = 20
    alpha: float = 0.01
    beta: float = 0.1
    sigma: float = 0.1
    learning_rate: float = 0.1
    learning_schedule: str = "invscaling"
    learning_exponent: float = 0.25
    epochs: int = 20
    features: str = "none"  # side features to use: none, user, item or both
    # A user's n training interactions weigh n ** -user_weight each (scaled to mean 1): 0 weighs
    # every interaction alike (rankfm's fit), 1 every user alike. Ranking metrics average over
    # users, while plain SGD spends most of its steps on the heaviest users.
    user_weight: float = 0.0
    # WARP weighs a step by log(k) / log(items), k the positive's rank estimated from the draws it
    # took to find a violating negative, to this power: 1 is rankfm's; below 1 positives already
    # ranked near the top weigh more than rankfm weighs them (docs/tuning.md).
    rank_weight: float = 1.0

    def __post_init__(self) -> None:
        # Coerce so values read back from JSON or MLflow params (strings) behave.
        for f in fields(self):
            value = getattr(self, f.name)
            kind = {"int": int, "float": float, "str": str}[f.type]
            object.__setattr__(self, f.name, kind(value))
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.learning_schedule not in SCHEDULES:
            raise ValueError(f"learning_schedule must be one of {SCHEDULES}")
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
        if min(self.factors, self.max_samples, self.epochs) < 1:
            raise ValueError("factors, max_samples and epochs must be positive")
        if not 0.0 <= self.user_weight <= 1.0:
            raise ValueError(f"user_weight must be in [0, 1], got {self.user_weight}")
        if not self.rank_weight >= 0.0:  # also refuses nan
            raise ValueError(f"rank_weight must be at least 0, got {self.rank_weight}")

    @classmethod
    def from_dict(cls, d: dict) -> FMParams:
        """Build from a mapping, rejecting unknown keys."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown hyperparameters: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def user_weights(users: pd.Series, exponent: float) -> np.ndarray | None:
    """Each interaction's weight when its user has n of them: ``n ** -exponent``, scaled so the
    weights average 1 (the mean step stays the learning rate); None (all 1) for exponent 0."""
    if exponent == 0.0:
        return None
    counts = users.groupby(users, sort=False).transform("size").to_numpy(np.float64)
    weights = counts**-exponent
    return weights / weights.mean()


@contextlib.contextmanager
def _numpy_global_seed(seed: int) -> Iterator[None]:
    # rankfm draws its initial weights and per-epoch shuffles from NumPy's global RNG and offers
    # no seed argument; seed it for the fit only and restore the caller's state afterwards.
    state = np.random.get_state()
    np.random.seed(seed % 2**32)  # an ensemble's seed + i may pass the top of the range
    try:
        yield
    finally:
        np.random.set_state(state)


class Recommender:
    """A fitted model: user/item ids and the embedding matrices that score them."""

    def __init__(
        self,
        params: FMParams,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        user_emb: np.ndarray,
        item_emb: np.ndarray,
        item_bias: np.ndarray,
    ) -> None:
        self.params = params
        self.user_ids = id_array(user_ids)
        self.item_ids = id_array(item_ids)
        self.user_emb = user_emb
        self.item_emb = item_emb
        self.item_bias = item_bias
        self._user_index = IdIndex(self.user_ids)
        self._item_index = IdIndex(self.item_ids)

    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        params: FMParams,
        seed: int,
        user_features: pd.DataFrame | None = None,
        item_features: pd.DataFrame | None = None,
        on_epoch: Callable[[int, Recommender], None] | None = None,
        threads: int = 1,
        data_share: float = 1.0,
    ) -> Recommender:
        """Train for ``params.epochs`` epochs; ``on_epoch(epoch, model)`` runs after each one.

        Epochs run one at a time so callers can evaluate (and stop) along the way; the
        ``invscaling`` schedule is applied here per epoch, as rankfm would inside one call.
        ``data_share`` < 1 says ``train`` is that share of the data being tuned for (a user
        sample): an epoch then gives each item that share of its updates, so the schedule's clock
        counts epochs of the whole data and the learning rate decays that much slower per epoch.
        ``threads`` > 1 trains with lock-free parallel SGD (Hogwild, ``recflow.model.kernel``): faster
        on big data, but the result then depends on thread timing, so it is no longer bit-for-bit
        reproducible from the seed.
        """
        from rankfmc import RankFM  # imported here: scoring a saved model does not need it

        if not 0 < data_share <= 1:
            raise ValueError(f"data_share must be in (0, 1], got {data_share}")

        use_uf = params.features in ("user", "both") and _has_features(user_features)
        use_if = params.features in ("item", "both") and _has_features(item_features)
        uf = user_features if use_uf else None
        itf = item_features if use_if else None
        pairs = train[[USER_COL, ITEM_COL]]
        if uf is not None:
            uf = uf[uf[USER_COL].isin(pairs[USER_COL])]
        if itf is not None:
            itf = itf[itf[ITEM_COL].isin(pairs[ITEM_COL])]
        fm = RankFM(
            factors=params.factors, loss=params.loss, max_samples=params.max_samples,
            alpha=params.alpha, beta=params.beta, sigma=params.sigma,
            learning_rate=params.learning_rate, learning_schedule=params.learning_schedule,
            learning_exponent=params.learning_exponent,
        )  # fmt: skip
        with _numpy_global_seed(seed):
            # rankfm indexes the data and draws the initial weights as its fit() would; the
            # epochs run recflow.model.kernel (rankfm's update with a fast membership check) on that
            # indexed data, one call per epoch so callers can evaluate and stop along the way.
            fm._reset_state()
            indexed, weight = fm._init_all(
                pairs, user_features=uf, item_features=itf,
                sample_weight=user_weights(pairs[USER_COL], params.user_weight),
            )  # fmt: skip
            fm.is_fit = True
            epoch_kernel = _EpochKernel(fm, indexed, weight, threads, params.rank_weight)
            for epoch in range(params.epochs):
                rate = params.learning_rate
                if params.learning_schedule == "invscaling":
                    # On a user sample (see data_share) items learn slowly from tiny initial
                    # weights: with the whole data's decay per epoch, the configurations that win
                    # on all users (small sigma, low learning rate) stayed at popularity level on a
                    # quarter of ML-1M's users (bench/fidelity_transfer.py).
                    rate /= (1 + data_share * epoch) ** params.learning_exponent
                epoch_kernel.run(rate)
                if on_epoch is not None or epoch == params.epochs - 1:
                    model = cls._from_rankfm(fm, params)
                if on_epoch is not None:
                    on_epoch(epoch, model)
        return model

    @classmethod
    def average(cls, models: list[Recommender]) -> Recommender:
        """One model whose scores are the mean of ``models``' scores (trained on the same data,
        so with the same users and items in the same order). Each half of the embeddings is
        concatenated across models and scaled by 1/sqrt(n), the biases averaged: scoring stays
        one matrix product, and the halves keep their meaning (``foldin``)."""
        first = models[0]
        for other in models[1:]:
            if not (
                np.array_equal(other.user_ids, first.user_ids)
                and np.array_equal(other.item_ids, first.item_ids)
            ):
                raise ValueError("models to average must have the same users and items")
        if len(models) == 1:
            return first
        half = first.user_emb.shape[1] // 2
        scale = np.float32(1 / np.sqrt(len(models)))

        def halves(name: str) -> np.ndarray:
            arrays = [getattr(m, name) for m in models]
            return np.hstack([a[:, :half] for a in arrays] + [a[:, half:] for a in arrays]) * scale

        bias = np.mean([m.item_bias for m in models], axis=0, dtype=np.float32)
        return cls(
            first.params, first.user_ids, first.item_ids, halves("user_emb"), halves("item_emb"),
            bias,
        )  # fmt: skip

    @classmethod
    def _from_rankfm(cls, fm, params: FMParams) -> Recommender:
        # rankfm's utility: w_i + x_if.w_if + v_u.v_i + (x_uf v_uf).v_i + (x_if v_if).v_u
        # == [v_u + x_uf v_uf, v_u] . [v_i, x_if v_if] + (w_i + x_if.w_if)
        user_emb = np.hstack([fm.v_u + fm.x_uf @ fm.v_uf, fm.v_u]).astype(np.float32)
        item_emb = np.hstack([fm.v_i, fm.x_if @ fm.v_if]).astype(np.float32)
        item_bias = (fm.w_i + fm.x_if @ fm.w_if).astype(np.float32)
        if not (np.isfinite(user_emb).all() and np.isfinite(item_emb).all()):
            raise FloatingPointError("training diverged (non-finite weights): lower learning_rate")
        return cls(
            params, fm.user_id.to_numpy(), fm.item_id.to_numpy(), user_emb, item_emb, item_bias
        )

    def user_positions(self, user_ids: np.ndarray) -> np.ndarray:
        """Row positions of ``user_ids`` in the model; -1 for unknown users."""
        return self._user_index.positions(user_ids)

    def item_positions(self, item_ids: np.ndarray) -> np.ndarray:
        """Column positions of ``item_ids``; -1 for unknown items."""
        return self._item_index.positions(item_ids)

    def scores(self, user_pos: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Scores of every item for the users at ``user_pos``: shape (len(user_pos), n_items),
        written into ``out`` if given (float32, C-contiguous)."""
        scores = np.matmul(self.user_emb[user_pos], self.item_emb.T, out=out)
        scores += self.item_bias  # in place: no second users x items array
        return scores

    def save(self, path: Path) -> None:
        """Write the model to a folder: arrays as .npy (string IDs as NumPy unicode, which
        loads without pickle), parameters as JSON."""
        path.mkdir(parents=True, exist_ok=True)
        (path / "params.json").write_text(json.dumps(self.params.to_dict(), indent=2))
        for name in ("user_ids", "item_ids", "user_emb", "item_emb", "item_bias"):
            np.save(path / f"{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, path: Path) -> Recommender:
        """Read a model written by :meth:`save`."""
        params = FMParams.from_dict(json.loads((path / "params.json").read_text()))
        arrays = {
            n: np.load(path / f"{n}.npy")
            for n in ("user_ids", "item_ids", "user_emb", "item_emb", "item_bias")
        }
        return cls(params, **arrays)


class _EpochKernel:
    """One more training epoch of a ``RankFM`` on the data it was indexed with.

    rankfmc's weight arrays are trained in place by ``recflow.model.kernel``; what each user has seen
    (for the kernel's check of sampled negatives) is indexed once.
    """

    def __init__(
        self, fm, indexed: np.ndarray, weight: np.ndarray, threads: int, rank_weight: float
    ) -> None:
        # Imported here, as rankfmc is: the served model scores with NumPy and ships without numba.
        from recflow.model.kernel import lcg_states, seen_items

        self.fm, self.indexed, self.weight, self.rank_weight = fm, indexed, weight, rank_weight
        # The sampler's state and the row order carry over from epoch to epoch, as in one fit().
        self.states = lcg_states(threads)
        self.rows = np.arange(len(indexed), dtype=np.int32)
        self.seen = seen_items(indexed[:, 0], indexed[:, 1], len(fm.user_idx), len(fm.item_idx))
        self.max_samples = 1 if fm.loss == "bpr" else fm.max_samples

    def run(self, learning_rate: float) -> None:
        from recflow.model.kernel import train_epoch

        fm = self.fm
        weights = (fm.w_i, fm.w_if, fm.v_u, fm.v_i, fm.v_uf, fm.v_if)
        train_epoch(
            self.rows, self.indexed, self.weight, self.seen, fm.x_uf, fm.x_if, weights, fm.alpha,
            fm.beta, learning_rate, self.max_samples, self.states, self.rank_weight,
        )  # fmt: skip
        if not all(np.isfinite(w).all() for w in weights):
            raise FloatingPointError("training diverged (non-finite weights): lower learning_rate")


def _has_features(df: pd.DataFrame | None) -> bool:
    return df is not None and df.shape[1] > 1
