"""Tiny MovieLens-shaped archives built in the tests (the real files may not be redistributed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recflow.data.datasets import ML100K_GENRES, get_spec
from recflow.data.extract import pack


def ml100k_files(
    n_users: int = 40, n_items: int = 30, per_user: int = 12, seed: int = 0
) -> dict[str, str]:
    """u.data / u.item / u.user contents with two taste groups, so a model can learn something."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        # Users in group 0 like the first half of the items, group 1 the second half.
        half = np.arange(1, n_items // 2 + 1) + (u % 2) * (n_items // 2)
        liked = rng.choice(half, size=min(per_user, half.size), replace=False)
        for t, i in enumerate(liked):
            rows.append(f"{u}\t{i}\t{rng.integers(1, 6)}\t{880000000 + 1000 * u + t}")
    items = []
    for i in range(1, n_items + 1):
        flags = ["0"] * len(ML100K_GENRES)
        flags[1 + i % 5] = "1"
        items.append(
            f"{i}|Movie {i} (1995)|01-Jan-1995||http://example.invalid/{i}|" + "|".join(flags)
        )
    occupations = ["student", "engineer", "writer"]
    users = [
        f"{u}|{18 + u % 40}|{'MF'[u % 2]}|{occupations[u % 3]}|0000{u}"
        for u in range(1, n_users + 1)
    ]
    return {
        "u.data": "\n".join(rows) + "\n",
        "u.item": "\n".join(items) + "\n",
        "u.user": "\n".join(users) + "\n",
    }


def write_zip(path: Path, files: dict[str, str | bytes], folder: str = "ml-100k") -> Path:
    """Write ``files`` into a zip under ``folder/`` (ISO-8859-1 text, like GroupLens).

    The same files give the same bytes (``pack`` fixes the timestamps), so the checksum of an
    archive written by one fixture matches that of an archive written by another.
    """
    return pack(get_spec("ml-100k"), files, path, folder)
