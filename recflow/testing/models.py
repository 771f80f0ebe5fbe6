"""Models for the serving benchmarks and tests: random ones of a release's shape, trained ones of
ML-1M's, and the served pyfunc folder or logged model of either.

In: a seeded generator (and for ``ml1m_model`` the training parameters). Out: a ``Recommender``
and the seen table a bundle needs, a pyfunc folder that `mlflow models serve -m` takes, or a
logged model's URI. A random model needs no training, so a served model of ML-25M's size
(162,541 users x 59,047 items) is built in seconds; its seen table is long-tailed per user
(lognormal, >= 20 each) and Zipf-like over items, as ML-25M's train + valid part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recflow.constants import GENRES_COL, ITEM_COL, TITLE_COL, USER_COL
from recflow.data import preprocess
from recflow.model.recommender import FMParams, Recommender
from recflow.serving import bundle, packaging, pyfunc
from recflow.testing.synthetic import SHAPES, Shape, generate

PROJECT = Path(__file__).resolve().parents[2]
ML25M_SEEN = 19_000_000  # ML-25M's train + valid part at the default split


def items_frame(item_ids: np.ndarray) -> pd.DataFrame:
    """Titles and genres for ``item_ids``, as a bundle stores them."""
    titles = [f"Movie {i} (1999)" for i in item_ids]
    return pd.DataFrame({ITEM_COL: item_ids, TITLE_COL: titles, GENRES_COL: "Drama|Comedy"})


def random_model(
    rng: np.random.Generator, factors: int = 32, shape: Shape = SHAPES["ml-25m"],
    n_seen: int = ML25M_SEEN,
) -> tuple[Recommender, pd.DataFrame]:  # fmt: skip
    """A random recommender of ``shape``'s users and items and its seen table (``n_seen`` unique
    pairs at most)."""
    n_users, n_items = shape.n_users, shape.n_items
    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    item_ids = np.sort(rng.choice(np.arange(1, shape.max_item_id + 1), n_items, replace=False))
    dim = 2 * factors  # our recommender's embeddings are [v, x v] side by side
    model = Recommender(
        FMParams(factors=factors), user_ids, item_ids,
        rng.standard_normal((n_users, dim), dtype=np.float32) * 0.1,
        rng.standard_normal((n_items, dim), dtype=np.float32) * 0.1,
        rng.standard_normal(n_items, dtype=np.float32),
    )  # fmt: skip
    # Per-user activity: lognormal above ML's minimum of 20, scaled to 30% over n_seen as the
    # duplicates drawn are dropped, then n_seen pairs kept; item popularity: Zipf-like over a
    # random item order.
    activity = 20 + rng.lognormal(4.0, 1.3, n_users)
    counts = np.minimum(activity * (1.3 * n_seen / activity.sum()), n_items // 2).astype(int)
    popularity = 1 / np.arange(1, n_items + 1) ** 0.9
    items = rng.permutation(n_items)[
        rng.choice(n_items, counts.sum(), p=popularity / popularity.sum())
    ]
    pairs = np.unique(np.repeat(np.arange(n_users, dtype=np.int64), counts) * n_items + items)
    pairs = pairs[np.sort(rng.choice(len(pairs), min(n_seen, len(pairs)), replace=False))]
    seen = pd.DataFrame({USER_COL: user_ids[pairs // n_items], ITEM_COL: item_ids[pairs % n_items]})
    return model, seen


def log_served(model: Recommender, seen: pd.DataFrame, folder: Path) -> str:
    """Write ``model``'s bundle in ``folder`` and log it as the pipeline logs a served model, in
    the active tracking store; its model URI."""
    import mlflow

    path = folder / "bundle"
    bundle.write_bundle(path, model, items_frame(model.item_ids), seen)
    # Artifacts in ``folder`` too (a new SQLite store would put them in ./mlruns).
    experiment = mlflow.create_experiment(f"served-{folder.name}", (folder / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = packaging.log_model(path, example_users=model.user_ids[:2].tolist())
    return info.model_uri


def save_pyfunc(
    model: Recommender, items: pd.DataFrame, seen: pd.DataFrame, folder: Path, name: str = "model"
) -> Path:
    """Save ``model`` as our pyfunc in ``folder/name`` (its bundle in ``folder/bundle``; no
    tracking store), with the served model's signature and pinned requirements; that folder.
    Requirements given, MLflow infers none: inferring loads the model in a process of its own."""
    import mlflow.pyfunc

    path = folder / "bundle"
    bundle.write_bundle(path, model, items, seen)
    mlflow.pyfunc.save_model(
        folder / name, python_model=pyfunc.RecommenderModel(),
        artifacts={pyfunc.ARTIFACT_KEY: str(path)}, code_paths=[str(PROJECT / "recflow")],
        signature=packaging.signature(path, pd.DataFrame({USER_COL: model.user_ids[:2]})),
        pip_requirements=packaging.requirements(),
    )  # fmt: skip
    return folder / name


def save_served(model: Recommender, seen: pd.DataFrame, folder: Path) -> Path:
    """``save_pyfunc`` with made-up titles for ``model``'s items."""
    return save_pyfunc(model, items_frame(model.item_ids), seen, folder)


def ml1m_model(folder: Path, params: FMParams) -> tuple[Recommender, pd.DataFrame]:
    """Train ``params`` on the ML-1M-scale synthetic set (a seeded random 0.7 share of it) and
    save the served pyfunc in ``folder/model``; the model and its training interactions."""
    ratings = generate("ml-1m", np.random.default_rng(7)).ratings
    train = preprocess.split(ratings, "random", 0.2, 0.1, np.random.default_rng(1)).train
    model = Recommender.fit(train, params, seed=1)
    save_served(model, train, folder)
    return model, train
