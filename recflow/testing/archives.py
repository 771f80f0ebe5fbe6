"""MovieLens archives in the official layouts, as ``download`` takes them.

In: files (names and contents), a synthetic dataset, or the real ML-100K beside the checkout. Out:
a zip packed by ``recflow.data.extract.pack`` (fixed timestamps: the same files give the same
bytes, so the same checksum). ``ml100k_files`` is the tests' tiny ML-100K-shaped set with two
taste groups (the real files may not be redistributed). Writing a synthetic release's zip::

    .venv/bin/python -m recflow.testing.archives --shape ml-25m --out /tmp/synth
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recflow.constants import GENRES_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL, TITLE_COL, USER_COL
from recflow.data.datasets import DATASETS, ML100K_GENRES, get_spec
from recflow.data.extract import pack
from recflow.testing.synthetic import ML1M, ML100K, SHAPES, Synthetic, generate, stats

ML100K_FILES = ("u.data", "u.item", "u.user")
# The real ML-1M ratings of users 1-1500 (a quarter of ratings.dat by users, in its order).
ML1M_RATINGS = "ratings_users_1-1500.dat"


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


def real_ml100k_zip(folder: Path) -> Path:
    """``folder/ml-100k.zip`` in the official layout, packed from the real files in
    ../shared/data (exits when they are missing)."""
    missing = [n for n in ML100K_FILES if not (ML100K / n).is_file()]
    if missing:
        raise SystemExit(
            f"needs the real ML-100K ({', '.join(missing)}) in {ML100K}; "
            "see ../shared/data/README.md"
        )
    return write_zip(folder / "ml-100k.zip", {n: (ML100K / n).read_bytes() for n in ML100K_FILES})


def real_ml1m_zip(folder: Path) -> Path:
    """``folder/ml-1m.zip`` in the official layout from ../shared/data's real ML-1M files: the
    real ratings of users 1-1500 as ``ratings.dat``, with the complete ``movies.dat`` and
    ``users.dat`` (exits when they are missing)."""
    files = {"ratings.dat": ML1M_RATINGS, "movies.dat": "movies.dat", "users.dat": "users.dat"}
    missing = [n for n in files.values() if not (ML1M / n).is_file()]
    if missing:
        raise SystemExit(
            f"needs the real ML-1M files ({', '.join(missing)}) in {ML1M}; "
            "see ../shared/data/README.md"
        )
    contents = {name: (ML1M / n).read_bytes() for name, n in files.items()}
    return pack(get_spec("ml-1m"), contents, folder / "ml-1m.zip", "ml-1m")


def sha256(path: Path) -> str:
    """The checksum of ``path`` as ``data_url``'s ``checksum`` takes it: ``sha256:<hex>``."""
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


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


def official_files(data: Synthetic, ml1m: Path = ML1M) -> dict[str, str | bytes]:
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


def synthetic_zip(data: Synthetic, out_dir: Path) -> Path:
    """Pack the dataset as ``out_dir/<shape>.zip`` in its official layout."""
    spec = DATASETS[data.shape.name]
    # Level 1 deflates the large shapes several times faster; ml-1m keeps the default level
    # and so its published checksum.
    level = None if spec.name == "ml-1m" else 1
    return pack(spec, official_files(data), out_dir / f"{spec.name}.zip", compresslevel=level)


def dataset_zip(name: str, folder: Path, seed: int = 0) -> Path:
    """``folder/<name>.zip``, built once: the real ML-100K, or a synthetic release seeded ``seed``."""
    path = folder / f"{name}.zip"
    if path.is_file():
        return path
    if name == "ml-100k":
        return real_ml100k_zip(folder)
    return synthetic_zip(generate(name, np.random.default_rng(seed)), folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="ml-1m")
    parser.add_argument("--out", type=Path, required=True, help="folder for <shape>.zip")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    data = generate(args.shape, np.random.default_rng(args.seed))
    t1 = time.perf_counter()
    path = synthetic_zip(data, args.out)
    t2 = time.perf_counter()
    print(f"{path}  {sha256(path)}")
    print(
        f"generated in {t1 - t0:.1f} s, packed in {t2 - t1:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)"
    )
    for line in stats(data.ratings):
        print(line)


if __name__ == "__main__":
    main()
