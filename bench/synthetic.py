"""Synthetic MovieLens-shaped datasets with real taste signal, packed as the official zips.

In: a shape name (ml-1m, ml-10m, ml-25m) and a seed. Out: ratings, movies (and for ml-1m users)
frames with the shape's user, item and rating counts, and a zip in that dataset's official layout
(``recflow.data.extract.pack``) that ``data_url`` takes. ml-1m reuses the real ML-1M users.dat and
movies.dat from ../shared/data/ml-1m when present (the real ratings.dat is not available offline).

The model behind the ratings: item popularity is Zipf-Mandelbrot (ml-1m) or a curve fitted to the
real release's per-movie counts (ml-10m, ml-25m: median 3 ratings per movie, top movie rated by half
the users, top 10% of movies holding ~83% of ratings), user activity is lognormal with
at least 20 ratings each, and users have latent tastes. Every item belongs to one of K latent
topics; every user has a topic mixture theta_u ~ Dirichlet(concentration). A user's ratings are a
sample without replacement from

    P_u(i) = (1 - background) * theta_u[topic(i)] * pop(i) / pop(topic(i)) + background * pop(i)

i.e. a user vector theta_u against one-hot item vectors, times popularity. This rather than
pop^a * exp(beta <u, v>) because it samples in O(draws log n_items), not O(users x items): ML-25M
takes about a minute instead of hours. Light users draw with replacement and keep their first
distinct items (sequential sampling without replacement); heavy users (more than 2% of the items)
take an exact Gumbel-top-k over their dense row. Rating values follow the dataset's star shares,
timestamps its time span; both are independent of the taste. Every item is rated at least once: an
item the draws missed takes over one rating of a well-rated item (``_cover``). Usage::

    .venv/bin/python bench/synthetic.py --shape ml-25m --out /tmp/synth   # writes ml-25m.zip

or, from another benchmark, ``generate("ml-1m", np.random.default_rng(0)).ratings``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recflow.constants import (  # noqa: E402
    GENRES_COL,
    ITEM_COL,
    RATING_COL,
    TIMESTAMP_COL,
    TITLE_COL,
    USER_COL,
)
from recflow.data.datasets import DATASETS, parse_items, parse_users  # noqa: E402
from recflow.data.extract import pack  # noqa: E402

ML1M = ROOT.parent / "shared" / "data" / "ml-1m"
MIN_PER_USER = 20  # GroupLens kept only users with at least 20 ratings
MIN_DONOR = 50  # _cover takes ratings only from items with at least this many
HEAVY_SHARE = 0.02  # users rating more than this share of the items are sampled densely
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


@dataclass(frozen=True)
class Shape:
    """The counts and ranges of one MovieLens release."""

    name: str  # its name in recflow.data.datasets.DATASETS
    n_users: int
    n_items: int  # items with at least one rating
    n_ratings: int
    max_user_id: int  # ids are drawn from 1..max without gaps beyond the real ones
    max_item_id: int
    time_span: tuple[int, int]
    half_stars: bool
    max_share: float  # the most active user rated about this share of the items
    zipf_exponent: float
    zipf_offset: float  # flattens the head: the top item is rated by about half the users
    # (rank share, weight) knots, interpolated log-log, replace the Zipf-Mandelbrot curve, which
    # cannot give ML-25M's median of 3 with its head. Fitted so the *generated* per-movie counts
    # match the real release's (sampling without replacement flattens the head, so the top
    # weights sit well above the real counts); stats() prints them.
    popularity: tuple[tuple[float, float], ...] = ()


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


@dataclass(frozen=True)
class Tastes:
    """How strong the latent tastes are; the defaults put a default rankfm model's NDCG@10 on
    the ML-1M shape near real ML-1M's, with popularity clearly below it."""

    n_topics: int = 24
    concentration: float = 0.05  # Dirichlet alpha per topic: lower = narrower tastes
    background: float = 0.15  # share of each user's draws that follow popularity alone


@dataclass(frozen=True)
class Synthetic:
    """A generated dataset: frames in recflow.data.datasets' tidy form."""

    shape: Shape
    ratings: pd.DataFrame  # user_id, item_id, rating, timestamp
    items: pd.DataFrame  # item_id, title, genres
    users: pd.DataFrame | None  # ml-1m only: user_id, gender, age, occupation


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


def _popularity(shape: Shape) -> np.ndarray:
    """Unnormalised popularity by rank, most popular first."""
    ranks = np.arange(1, shape.n_items + 1)
    if not shape.popularity:
        return 1.0 / (ranks + shape.zipf_offset) ** shape.zipf_exponent
    share, count = np.array(shape.popularity).T
    knots = np.log(np.maximum(share * shape.n_items, 1.0))
    return np.exp(np.interp(np.log(ranks), knots, np.log(count)))


def _cover(
    rng: np.random.Generator, pos: np.ndarray, sizes: np.ndarray, theta: np.ndarray,
    topic: np.ndarray, n_items: int, candidates: int = 8, min_donor: int = MIN_DONOR,
) -> np.ndarray:  # fmt: skip
    """Give every unrated item one rating, taken from a rating of a well-rated item.

    Each unrated item replaces one of ``candidates`` random ratings of items with at least
    ``min_donor`` ratings: the one whose user likes the item's topic most. Users keep their
    counts, no user gets an item twice (nobody had rated it) and the head barely moves. Consumes
    no randomness when every item is rated already.
    """
    pos = pos.copy()
    ends = np.cumsum(sizes)
    while (missing := np.flatnonzero(np.bincount(pos, minlength=n_items) == 0)).size:
        counts = np.bincount(pos, minlength=n_items)
        donors = np.flatnonzero(counts[pos] >= min_donor)
        pick = donors[rng.choice(donors.size, (missing.size, candidates), replace=False)]
        users = np.searchsorted(ends, pick, side="right")
        liking = theta[users, topic[missing][:, None]]
        rows = pick[np.arange(missing.size), np.argmax(liking, axis=1)]
        pos[rows] = missing
    return pos


class _Sampler:
    """Draws item positions for users from the topic model above."""

    def __init__(self, rng: np.random.Generator, shape: Shape, tastes: Tastes) -> None:
        n, k = shape.n_items, tastes.n_topics
        self.rng, self.tastes, self.n_items = rng, tastes, n
        pop = _popularity(shape)
        self.pop = pop[rng.permutation(n)] / pop.sum()  # popular items are not the low ids
        self.topic = rng.permutation(np.arange(n) % k)  # every topic gets items
        # Items grouped by topic; each topic's CDF is shifted by its index, so one searchsorted
        # over the flat array draws an item of topic t for the key t + U(0, 1).
        self.by_topic = np.argsort(self.topic, kind="stable")
        p = self.pop[self.by_topic]
        t = self.topic[self.by_topic]
        mass = np.bincount(t, weights=p, minlength=k)
        self.topic_cdf = np.empty(n)
        for j in range(k):
            sel = t == j
            self.topic_cdf[sel] = j + np.cumsum(p[sel]) / mass[j]
        self.pop_cdf = np.cumsum(self.pop) / self.pop.sum()
        # Dense item weights per topic, for the heavy users' exact path.
        self.phi = np.zeros((k, n))
        self.phi[self.topic, np.arange(n)] = self.pop / mass[self.topic]

    def draws(self, theta: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``counts[u]`` draws with replacement for each user row of ``theta``: (rows, items)."""
        rng, k = self.rng, self.tastes.n_topics
        rows = np.repeat(np.arange(len(counts)), counts)
        cum = np.cumsum(theta, axis=1)
        cum[:, -1] = 1.0
        flat = (cum + np.arange(len(counts))[:, None]).ravel()
        topic = np.searchsorted(flat, rows + rng.random(rows.size), side="right") - rows * k
        topic = np.minimum(topic, k - 1)
        j = np.searchsorted(self.topic_cdf, topic + rng.random(rows.size), side="right")
        items = self.by_topic[np.minimum(j, self.n_items - 1)]
        bg = rng.random(rows.size) < self.tastes.background
        items[bg] = np.minimum(
            np.searchsorted(self.pop_cdf, rng.random(int(bg.sum())), side="right"),
            self.n_items - 1,
        )
        return rows, items

    def light(self, theta: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
        """Each user's first ``sizes[u]`` distinct draws: sampling without replacement."""
        out: list[np.ndarray] = [np.empty(0, np.int64)] * len(sizes)
        pending, factor = np.arange(len(sizes)), 1.3
        while pending.size:
            s = sizes[pending]
            rows, items = self.draws(theta[pending], np.ceil(s * factor).astype(int) + 8)
            _, first = np.unique(rows * self.n_items + items, return_index=True)
            first.sort()  # draw order; draws are grouped by row, so rows stay grouped
            r, it = rows[first], items[first]
            start = np.searchsorted(r, np.arange(len(pending)))
            rank = np.arange(r.size) - start[r]
            keep = rank < s[r]
            got = np.bincount(r[keep], minlength=len(pending))
            done = got == s
            bounds = np.r_[0, np.cumsum(got)]
            kept = it[keep]
            for row in np.flatnonzero(done):
                out[pending[row]] = kept[bounds[row] : bounds[row + 1]]
            pending, factor = pending[~done], factor * 2
        return out

    def heavy(self, theta: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
        """Exact sampling without replacement over the dense rows: Gumbel-top-k."""
        b = self.tastes.background
        out = []
        for start in range(0, len(sizes), 256):
            w = (1 - b) * (theta[start : start + 256] @ self.phi) + b * self.pop
            keys = np.log(w) + self.rng.gumbel(size=w.shape)
            for row, s in enumerate(sizes[start : start + 256]):
                out.append(np.argpartition(-keys[row], s - 1)[:s])
        return out


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
    shape: str | Shape, rng: np.random.Generator, tastes: Tastes = Tastes(), ml1m: Path = ML1M
) -> Synthetic:
    """A seeded synthetic dataset of ``shape``, a name in ``SHAPES`` or a ``Shape`` of one's own
    (e.g. scaled down for a test); see the module docstring for the model."""
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
    sampler = _Sampler(rng, sh, tastes)
    sizes = _user_sizes(rng, sh.n_users, sh.n_ratings, int(sh.max_share * sh.n_items))
    theta = rng.dirichlet(np.full(tastes.n_topics, tastes.concentration), sh.n_users)

    chosen: list[np.ndarray] = [np.empty(0, np.int64)] * sh.n_users
    heavy = np.flatnonzero(sizes > HEAVY_SHARE * sh.n_items)
    for u, got in zip(heavy, sampler.heavy(theta[heavy], sizes[heavy]), strict=True):
        chosen[u] = got
    light = np.flatnonzero(sizes <= HEAVY_SHARE * sh.n_items)
    for start in range(0, light.size, 20_000):  # bounds the draw arrays at a few million rows
        part = light[start : start + 20_000]
        for u, got in zip(part, sampler.light(theta[part], sizes[part]), strict=True):
            chosen[u] = got
    pos = _cover(rng, np.concatenate(chosen), sizes, theta, sampler.topic, sh.n_items)
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
    movies = meta[1] if meta is not None else _movies(rng, item_ids, sampler.topic)
    return Synthetic(sh, frame, movies, users)


def _csv_bytes(table: pa.Table, sep: str, header: str | None) -> bytes:
    # Arrow writes numbers fast; it takes one-character delimiters only, so "::" is a replace.
    buf = io.BytesIO()
    delim = "\t" if sep == "::" else sep
    pacsv.write_csv(
        table, buf, pacsv.WriteOptions(include_header=False, delimiter=delim, quoting_style="none")
    )
    data = buf.getvalue()
    if sep == "::":
        data = data.replace(b"\t", b"::")
    return (header.encode() + b"\n" if header else b"") + data


def _rating_strings(values: np.ndarray, csv: bool) -> pa.Array:
    # "5" and "3.5" in the .dat files, "5.0" and "3.5" in the .csv ones.
    stars = np.arange(1, 11) / 2
    text = [f"{s:.1f}" if csv or s % 1 else f"{s:.0f}" for s in stars]
    codes = np.searchsorted(stars, values).astype(np.int8)
    return pa.DictionaryArray.from_arrays(codes, text).cast(pa.string())


def files(data: Synthetic, ml1m: Path = ML1M) -> dict[str, str | bytes]:
    """The dataset's files in its official layout (names and contents, encoded)."""
    spec = DATASETS[data.shape.name]
    r = data.ratings
    csv = spec.fmt == "csv"
    table = pa.table(
        {
            "u": r[USER_COL].to_numpy(),
            "i": r[ITEM_COL].to_numpy(),
            "r": _rating_strings(r[RATING_COL].to_numpy(), csv),
            "t": r[TIMESTAMP_COL].to_numpy(),
        }
    )
    sep = "," if csv else "::"
    out: dict[str, str | bytes] = {
        spec.ratings: _csv_bytes(table, sep, "userId,movieId,rating,timestamp" if csv else None)
    }
    real = spec.name == "ml-1m" and (ml1m / "movies.dat").is_file()
    if real:  # the real metadata, byte for byte
        out[spec.items] = (ml1m / "movies.dat").read_bytes()
        out[spec.users] = (ml1m / "users.dat").read_bytes()
        return out
    m = data.items
    if csv:
        out[spec.items] = "movieId,title,genres\n" + "".join(
            f"{i},{t},{g}\n"
            for i, t, g in zip(m[ITEM_COL], m[TITLE_COL], m[GENRES_COL], strict=True)
        )
    else:
        out[spec.items] = "".join(
            f"{i}::{t}::{g}\n"
            for i, t, g in zip(m[ITEM_COL], m[TITLE_COL], m[GENRES_COL], strict=True)
        )
    if spec.users and data.users is not None:
        u = data.users
        out[spec.users] = "".join(
            f"{a}::{g}::{b}::{o}::00000\n"
            for a, g, b, o in zip(u[USER_COL], u["gender"], u["age"], u["occupation"], strict=True)
        )
    return out


def write_zip(data: Synthetic, out_dir: Path) -> Path:
    """Pack the dataset as ``out_dir/<shape>.zip`` in its official layout."""
    spec = DATASETS[data.shape.name]
    # Level 1 deflates the large shapes several times faster; ml-1m keeps the default level
    # and so its published checksum.
    level = None if spec.name == "ml-1m" else 1
    return pack(spec, files(data), out_dir / f"{spec.name}.zip", compresslevel=level)


def training_split(
    shape: str, features: str = "none"
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """``shape``'s synthetic positives split per user (seeded; 20% test, 5% validation left
    out), as the training benches use them: train, test and item features (``features="item"``)
    or None."""
    from recflow.data import preprocess

    data = generate(shape, np.random.default_rng(0))
    ratings = preprocess.to_implicit(data.ratings, 0)
    splits = preprocess.split(ratings, "user", 0.2, 0.05, np.random.default_rng(1492))
    items = None
    if features == "item":
        items = preprocess.item_features(data.items, np.sort(splits.train[ITEM_COL].unique()))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="ml-1m")
    parser.add_argument("--out", type=Path, required=True, help="folder for <shape>.zip")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    data = generate(args.shape, np.random.default_rng(args.seed))
    t1 = time.perf_counter()
    path = write_zip(data, args.out)
    t2 = time.perf_counter()
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    print(f"{path}  sha256:{digest}")
    print(
        f"generated in {t1 - t0:.1f} s, packed in {t2 - t1:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)"
    )
    for line in stats(data.ratings):
        print(line)


if __name__ == "__main__":
    main()
