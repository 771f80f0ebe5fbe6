"""The taste model behind the synthetic MovieLens-shaped ratings: who rates how much, and what.

In: a ``Shape`` (a release's counts), ``Tastes`` and a seeded generator. Out: ``draw``'s item
positions per user, each user's count and each item's topic. Item popularity is Zipf-Mandelbrot
(ml-1m) or a curve fitted to the real release's per-movie counts (ml-10m, ml-25m: median 3 ratings
per movie, top movie rated by half the users, top 10% of movies holding ~83% of ratings), user
activity is lognormal with at least 20 ratings each, and users have latent tastes. Every item
belongs to one of K latent topics; every user has a topic mixture theta_u ~
Dirichlet(concentration). A user's ratings are a sample without replacement from

    P_u(i) = (1 - background) * theta_u[topic(i)] * pop(i) / pop(topic(i)) + background * pop(i)

i.e. a user vector theta_u against one-hot item vectors, times popularity. This rather than
pop^a * exp(beta <u, v>) because it samples in O(draws log n_items), not O(users x items): ML-25M
takes about a minute instead of hours. Light users draw with replacement and keep their first
distinct items (sequential sampling without replacement); heavy users (more than 2% of the items)
take an exact Gumbel-top-k over their dense row. Every item is rated at least once: an item the
draws missed takes over one rating of a well-rated item (``cover``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_PER_USER = 20  # GroupLens kept only users with at least 20 ratings
MIN_DONOR = 50  # _cover takes ratings only from items with at least this many
HEAVY_SHARE = 0.02  # users rating more than this share of the items are sampled densely


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


@dataclass(frozen=True)
class Tastes:
    """How strong the latent tastes are; the defaults put a default rankfm model's NDCG@10 on
    the ML-1M shape near real ML-1M's, with popularity clearly below it."""

    n_topics: int = 24
    concentration: float = 0.05  # Dirichlet alpha per topic: lower = narrower tastes
    background: float = 0.15  # share of each user's draws that follow popularity alone


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


def cover(
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


class Sampler:
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


def draw(
    rng: np.random.Generator, sh: Shape, tastes: Tastes
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item positions (0..n_items-1) of every rating, user after user; each user's count; each
    item's topic."""
    sampler = Sampler(rng, sh, tastes)
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
    pos = cover(rng, np.concatenate(chosen), sizes, theta, sampler.topic, sh.n_items)
    return pos, sizes, sampler.topic
