"""A synthetic ML-1M-scale ``ratings.dat`` over the real ML-1M users and movies, for benchmarks.

In: a seeded ``numpy.random.Generator`` and ../shared/data/ml-1m/users.dat and movies.dat (the real
``ratings.dat`` is not available offline). Out: a ratings frame (user_id, item_id, rating,
timestamp) shaped like ML-1M: every user has >= 20 ratings, activity is long-tailed (lognormal),
item popularity is Zipf-like over a random ordering of the movies, and the rating values and time
span follow ML-1M's. Reuse it from another benchmark with::

    from bench.synthetic_ml1m import ml1m_ratings
    ratings = ml1m_ratings(np.random.default_rng(0))

Run it directly to print the set's shape statistics: ``.venv/bin/python bench/synthetic_ml1m.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recflow.constants import ITEM_COL, RATING_COL, TIMESTAMP_COL, USER_COL  # noqa: E402
from recflow.datasets import DATASETS, parse_items, parse_users  # noqa: E402

ML1M = ROOT.parent / "shared" / "data" / "ml-1m"
ML1M_RATINGS = 1_000_209  # lines in the real ratings.dat
MIN_PER_USER = 20  # GroupLens kept only users with at least 20 ratings
RATING_SHARES = (0.056, 0.108, 0.261, 0.349, 0.226)  # ML-1M's share of 1..5 stars
TIME_SPAN = (956_703_932, 1_046_454_590)  # ML-1M's first and last timestamps


def ml1m_ids(folder: Path = ML1M) -> tuple[np.ndarray, np.ndarray]:
    """The real ML-1M user and movie ids; exits with a clear message when the files are absent."""
    missing = [n for n in ("users.dat", "movies.dat") if not (folder / n).is_file()]
    if missing:
        raise SystemExit(
            f"needs the real ML-1M metadata ({', '.join(missing)}) in {folder}; "
            "see ../shared/data/README.md"
        )
    spec = DATASETS["ml-1m"]
    users = parse_users(spec, folder)
    items = parse_items(spec, folder)
    return users[USER_COL].to_numpy(), items[ITEM_COL].to_numpy()


def _user_sizes(rng: np.random.Generator, n_users: int, n_ratings: int, cap: int) -> np.ndarray:
    # MIN_PER_USER each, the rest spread by lognormal activity; overflow above the cap is
    # re-spread over the other users so the total stays exactly n_ratings.
    weights = rng.lognormal(0.0, 1.1, n_users)
    sizes = MIN_PER_USER + rng.multinomial(
        n_ratings - MIN_PER_USER * n_users, weights / weights.sum()
    )
    while (over := sizes > cap).any():
        extra = int((sizes[over] - cap).sum())
        sizes[over] = cap
        w = np.where(sizes < cap, weights, 0.0)
        sizes += rng.multinomial(extra, w / w.sum())
    return sizes


def ml1m_ratings(
    rng: np.random.Generator,
    n_ratings: int = ML1M_RATINGS,
    folder: Path = ML1M,
    zipf_exponent: float = 0.9,
    zipf_offset: float = 30.0,
) -> pd.DataFrame:
    """``n_ratings`` ratings, at most one per (user, movie), over the real ML-1M ids.

    Movie popularity is Zipf-Mandelbrot, p(rank) ~ 1 / (rank + zipf_offset) ** zipf_exponent (the
    offset flattens the head, so the top movie is rated by about half the users, as in ML-1M).
    Each user's movies are a weighted sample without replacement (exponential keys, i.e.
    Efraimidis-Spirakis), drawn in vectorised blocks of users.
    """
    user_ids, item_ids = ml1m_ids(folder)
    n_users, n_items = len(user_ids), len(item_ids)
    if n_ratings < MIN_PER_USER * n_users:
        raise ValueError(f"n_ratings must be at least {MIN_PER_USER * n_users}")
    cap = int(0.6 * n_items)  # the most active ML-1M user rated ~60% of the movies
    if n_ratings > cap * n_users:
        raise ValueError(f"n_ratings must be at most {cap * n_users}")
    sizes = _user_sizes(rng, n_users, n_ratings, cap)

    ranks = np.arange(1, n_items + 1)
    popularity = 1.0 / (ranks + zipf_offset) ** zipf_exponent
    popularity = popularity[rng.permutation(n_items)]  # popular movies are not the low ids
    log_p = np.log(popularity / popularity.sum())

    items = np.empty(n_ratings, dtype=np.int64)
    pos, block = 0, 256
    for start in range(0, n_users, block):
        s = sizes[start : start + block]
        # argsort of exponential(1) / p == argsort of log E - log p: a weighted sample w/o replacement.
        keys = np.log(rng.exponential(size=(len(s), n_items))) - log_p
        order = np.argsort(keys, axis=1)
        take = np.arange(n_items) < s[:, None]
        chosen = order[take]  # row-major: each user's movies, in sample order
        items[pos : pos + len(chosen)] = item_ids[chosen]
        pos += len(chosen)

    users = np.repeat(user_ids, sizes)
    ratings = rng.choice(np.arange(1, 6), size=n_ratings, p=RATING_SHARES).astype(np.float32)
    # Each user rates over a window of the 34-month span, most of it in the first weeks.
    first = rng.integers(TIME_SPAN[0], TIME_SPAN[1], n_users)
    stretch = np.repeat(TIME_SPAN[1] - first, sizes)
    offsets = (stretch * rng.beta(0.3, 3.0, n_ratings)).astype(np.int64)
    timestamps = np.repeat(first, sizes) + offsets
    return pd.DataFrame(
        {USER_COL: users, ITEM_COL: items, RATING_COL: ratings, TIMESTAMP_COL: timestamps}
    )


def write_ratings_dat(ratings: pd.DataFrame, path: Path) -> Path:
    """Write ``ratings`` in ML-1M's ``UserID::MovieID::Rating::Timestamp`` format."""
    lines = (
        ratings[USER_COL].astype(str) + "::" + ratings[ITEM_COL].astype(str) + "::"
        + ratings[RATING_COL].astype(int).astype(str) + "::" + ratings[TIMESTAMP_COL].astype(str)
    )  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="iso-8859-1")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-ratings", type=int, default=ML1M_RATINGS)
    parser.add_argument("--write", type=Path, help="also write the set as a ratings.dat here")
    args = parser.parse_args()
    df = ml1m_ratings(np.random.default_rng(args.seed), args.n_ratings)
    per_user = df[USER_COL].value_counts()
    per_item = df[ITEM_COL].value_counts()
    print(f"{len(df):,} ratings, {per_user.size:,} users, {per_item.size:,} movies rated")
    print(
        f"per user: min {per_user.min()}, median {per_user.median():.0f}, "
        f"mean {per_user.mean():.0f}, max {per_user.max()}"
    )
    print(
        f"per movie: median {per_item.median():.0f}, max {per_item.max()}, "
        f"top 10% of movies hold {per_item.iloc[: per_item.size // 10].sum() / len(df):.0%}"
    )
    print(f"duplicates (user, movie): {df.duplicated([USER_COL, ITEM_COL]).sum()}")
    if args.write:
        print(f"wrote {write_ratings_dat(df, args.write)}")


if __name__ == "__main__":
    main()
