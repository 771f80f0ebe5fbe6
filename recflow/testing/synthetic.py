"""Synthetic MovieLens-shaped datasets with real taste signal, in recflow.data.datasets' tidy form.

In: a shape name (ml-1m, ml-10m, ml-25m) or a ``Shape`` of one's own, and a seeded generator.
Out: ratings, movies (and for ml-1m users) frames with the shape's user, item and rating counts;
``recflow.testing.archives`` packs them as that release's official zip. ml-1m reuses the real
ML-1M users.dat and movies.dat from ../shared/data/ml-1m when present (the real ratings.dat is not
available offline). Who rates what follows ``recflow.testing.sampling``'s taste model; rating
values follow the release's star shares and timestamps its time span, both independent of the
taste. ``generate("ml-1m", np.random.default_rng(0)).ratings`` is the ML-1M-scale set the
benchmarks share, and ``training_split`` the one split the training benchmarks compare on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recflow.constants import GENRES_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL, TITLE_COL, USER_COL
from recflow.data import preprocess
from recflow.data.datasets import DATASETS, get_spec, parse_items, parse_ratings, parse_users
from recflow.testing.sampling import Shape, Tastes, draw

# The real MovieLens files beside the checkout (read only, never copied into the project).
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
ML1M = SHARED_DATA / "ml-1m"
ML100K = SHARED_DATA / "ml-100k"

GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
WHOLE_STARS = ((1.0, 2.0, 3.0, 4.0, 5.0), (0.056, 0.108, 0.261, 0.349, 0.226))  # ML-1M's shares
HALF_STARS = (  # ML-25M's shares of 0.5..5 stars
    tuple(np.arange(1, 11) / 2),
    (0.016, 0.031, 0.016, 0.066, 0.050, 0.196, 0.126, 0.266, 0.085, 0.148),
)


SHAPES = {
    s.name: s
    for s in [
        Shape("ml-1m", 6_040, 3_706, 1_000_209, 6_040, 3_952, (956_703_932, 1_046_454_590),
              False, 0.6, 1.0, 15.0),
        Shape("ml-10m", 69_878, 10_677, 10_000_054, 71_567, 65_133, (789_652_009, 1_231_131_736),
              True, 0.6, 1.1, 60.0,
              ((0, 250_000), (0.01, 14_000), (0.1, 3_850), (0.3, 570), (0.5, 74), (0.8, 11),
               (1, 1))),
        Shape("ml-25m", 162_541, 59_047, 25_000_095, 162_541, 209_171,
              (789_652_009, 1_574_327_703), True, 0.55, 1.25, 100.0,
              ((0, 900_000), (0.01, 11_000), (0.1, 980), (0.2, 215), (0.35, 9), (0.5, 1.55),
               (0.8, 1.03), (1, 1))),
    ]
}  # fmt: skip
DEFAULT_TASTES = Tastes()


@dataclass(frozen=True)
class Synthetic:
    """A generated dataset: frames in recflow.data.datasets' tidy form."""

    shape: Shape
    ratings: pd.DataFrame  # user_id, item_id, rating, timestamp
    items: pd.DataFrame  # item_id, title, genres
    users: pd.DataFrame | None  # ml-1m only: user_id, gender, age, occupation


def _ml1m_meta(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    if not all((folder / n).is_file() for n in ("users.dat", "movies.dat")):
        return None
    spec = DATASETS["ml-1m"]
    return parse_users(spec, folder), parse_items(spec, folder)


def _movies(rng: np.random.Generator, ids: np.ndarray, topic: np.ndarray) -> pd.DataFrame:
    # Each topic leans to two genres, so genres (item features) carry some of the taste.
    n = ids.size
    home = rng.integers(0, len(GENRES), (topic.max() + 1, 2))[topic]
    flags = np.zeros((n, len(GENRES)), dtype=bool)
    rows = np.arange(n)
    flags[rows, home[:, 0]] = rng.random(n) < 0.8
    flags[rows, home[:, 1]] |= rng.random(n) < 0.5
    flags[rows, rng.integers(0, len(GENRES), n)] |= rng.random(n) < 0.3
    names = np.array(GENRES, dtype=object)
    genres = ["|".join(names[f]) or "(no genres listed)" for f in flags]
    years = rng.integers(1915, 2020, n)
    titles = [f"Synthetic Movie {i} ({y})" for i, y in zip(ids, years, strict=True)]
    return pd.DataFrame({ITEM_COL: ids, TITLE_COL: titles, GENRES_COL: genres})


def _synthetic_users(rng: np.random.Generator, ids: np.ndarray) -> pd.DataFrame:
    ages = np.array([1, 18, 25, 35, 45, 50, 56])
    return pd.DataFrame(
        {
            USER_COL: ids,
            "gender": rng.choice(np.array(["F", "M"]), ids.size, p=[0.28, 0.72]),
            "age": rng.choice(ages, ids.size),
            "occupation": rng.integers(0, 21, ids.size).astype(str),
        }
    )


def generate(
    shape: str | Shape, rng: np.random.Generator, tastes: Tastes = DEFAULT_TASTES, ml1m: Path = ML1M
) -> Synthetic:
    """A seeded synthetic dataset of ``shape``, a name in ``SHAPES`` or a ``Shape`` of one's own
    (e.g. scaled down for a test); see recflow.testing.sampling for the model."""
    sh = SHAPES[shape] if isinstance(shape, str) else shape
    shape = sh.name
    meta = _ml1m_meta(ml1m) if shape == "ml-1m" else None
    if meta is not None:
        users, all_items = meta
        user_ids = users[USER_COL].to_numpy()
        item_ids = np.sort(rng.choice(all_items[ITEM_COL].to_numpy(), sh.n_items, replace=False))
    else:
        users = None
        user_ids = np.sort(rng.choice(np.arange(1, sh.max_user_id + 1), sh.n_users, replace=False))
        item_ids = np.sort(rng.choice(np.arange(1, sh.max_item_id + 1), sh.n_items, replace=False))
        if shape == "ml-1m":
            users = _synthetic_users(rng, user_ids)
    pos, sizes, topic = draw(rng, sh, tastes)
    items = item_ids[pos]

    stars, shares = HALF_STARS if sh.half_stars else WHOLE_STARS
    ratings = rng.choice(
        np.asarray(stars, np.float32), sh.n_ratings, p=np.asarray(shares) / sum(shares)
    )
    # Each user rates over a window of the span, most of it in the first weeks.
    lo, hi = sh.time_span
    first = rng.integers(lo, hi, sh.n_users)
    stretch = np.repeat(hi - first, sizes)
    timestamps = np.repeat(first, sizes) + (stretch * rng.beta(0.3, 3.0, sh.n_ratings)).astype(
        np.int64
    )
    frame = pd.DataFrame(
        {
            USER_COL: np.repeat(user_ids, sizes),
            ITEM_COL: items,
            RATING_COL: ratings,
            TIMESTAMP_COL: timestamps,
        }
    )
    movies = meta[1] if meta is not None else _movies(rng, item_ids, topic)
    return Synthetic(sh, frame, movies, users)


def real_ml100k() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The real ML-100K's ratings and items from ../shared/data; exits when they are missing."""
    if not (ML100K / "u.data").is_file():
        raise SystemExit(f"needs the real ML-100K files in {ML100K}; see ../shared/data/README.md")
    spec = get_spec("ml-100k")
    return parse_ratings(spec, ML100K), parse_items(spec, ML100K)


def training_split(
    data: str, features: str = "none", seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The training benchmarks' one split: ``data`` (a name in ``SHAPES``, generated with
    ``seed``, or ``ml-100k``, the real files) as positives, split per user (seeded 1492; 20%
    test, 5% validation left out). Returns train, test and item features (``features="item"``)
    or None."""
    if data == "ml-100k":
        ratings, movies = real_ml100k()
    else:
        synthetic = generate(data, np.random.default_rng(seed))
        ratings, movies = synthetic.ratings, synthetic.items
    positives = preprocess.to_implicit(ratings, 0)
    splits = preprocess.split(positives, "user", 0.2, 0.05, np.random.default_rng(1492))
    items = None
    if features == "item":
        items = preprocess.item_features(movies, np.sort(splits.train[ITEM_COL].unique()))
    return splits.train, splits.test, items


def stats(df: pd.DataFrame) -> list[str]:
    """Shape statistics of a ratings frame, one line each."""
    per_user = df[USER_COL].value_counts()
    per_item = df[ITEM_COL].value_counts()
    return [
        f"{len(df):,} ratings, {per_user.size:,} users, {per_item.size:,} movies rated",
        f"per user: min {per_user.min()}, median {per_user.median():.0f}, "
        f"mean {per_user.mean():.0f}, max {per_user.max()}",
        f"per movie: median {per_item.median():.0f}, max {per_item.max()} "
        f"({per_item.max() / per_user.size:.0%} of users), "
        f"top 10% of movies hold {per_item.iloc[: per_item.size // 10].sum() / len(df):.0%}, "
        f"{(per_item <= 3).mean():.0%} have <= 3",
        f"duplicates (user, movie): {df.duplicated([USER_COL, ITEM_COL]).sum()}",
    ]
