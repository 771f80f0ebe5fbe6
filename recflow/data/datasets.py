"""MovieLens datasets: the registry of official archives and the parsers of their files.

In: a dataset name, and a folder holding that dataset's extracted files. Out: its ``DatasetSpec``
(where the archive lives, its checksum and layout) and tidy frames of ratings, items and users.
Downloading and extracting the archives is the job of ``download`` and ``extract``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recflow.constants import GENRES_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL, TITLE_COL, USER_COL
from recflow.errors import UserError

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
# The dataset name of a file of one's own (``recflow.data.interactions``), beside MovieLens's.
INTERACTIONS = "interactions"

# ML-100K stores genres as 19 flag columns in this fixed order (documented in its u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip


@dataclass(frozen=True)
class DatasetSpec:
    """Where an official archive lives and how its files are laid out."""

    name: str
    url: str
    checksum: str | None  # "sha256:<hex>" or "md5:<hex>"; None where GroupLens publishes none
    folder: str  # top-level folder inside the zip
    fmt: str  # "100k" (u.data/u.item), "dat" ("::"-separated) or "csv" (with header)
    ratings: str
    items: str
    users: str | None
    encoding: str
    max_unpacked_mb: int  # the files we extract never legitimately exceed this

    @property
    def members(self) -> list[str]:
        """Zip member names this dataset needs."""
        names = [self.ratings, self.items] + ([self.users] if self.users else [])
        return [f"{self.folder}/{n}" for n in names]


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec(
            "ml-100k", GROUPLENS + "ml-100k.zip",
            "sha256:50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            "ml-100k", "100k", "u.data", "u.item", "u.user", "iso-8859-1", 20,
        ),
        DatasetSpec(
            "ml-1m", GROUPLENS + "ml-1m.zip",
            "sha256:a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            "ml-1m", "dat", "ratings.dat", "movies.dat", "users.dat", "iso-8859-1", 100,
        ),
        DatasetSpec(
            "ml-10m", GROUPLENS + "ml-10m.zip", "md5:ce571fd55effeba0271552578f2648bd",
            "ml-10M100K", "dat", "ratings.dat", "movies.dat", None, "utf-8", 1024,
        ),
        DatasetSpec(
            "ml-20m", GROUPLENS + "ml-20m.zip", "md5:cd245b17a1ae2cc31bb14903e1204af3",
            "ml-20m", "csv", "ratings.csv", "movies.csv", None, "utf-8", 2048,
        ),
        DatasetSpec(
            "ml-25m", GROUPLENS + "ml-25m.zip", "md5:6b51fb2759a8657d3bfcbfc42b592ada",
            "ml-25m", "csv", "ratings.csv", "movies.csv", None, "utf-8", 2048,
        ),
        DatasetSpec(
            "ml-32m", GROUPLENS + "ml-32m.zip", None,
            "ml-32m", "csv", "ratings.csv", "movies.csv", None, "utf-8", 3072,
        ),
        DatasetSpec(
            "ml-latest-small", GROUPLENS + "ml-latest-small.zip",
            "sha256:696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            "ml-latest-small", "csv", "ratings.csv", "movies.csv", None, "utf-8", 50,
        ),
    ]
}  # fmt: skip


def get_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name, with a helpful error for unknown names."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join([*DATASETS, INTERACTIONS])
        raise UserError(f"unknown dataset {name!r}; choose one of: {known}") from None


def _read_sep(path: Path, sep: str, names: list[str], encoding: str) -> pd.DataFrame:
    # "::" needs the python engine; it is also the engine that tolerates stray quotes in titles.
    return pd.read_csv(
        path, sep=sep, names=names, header=None, engine="python" if len(sep) > 1 else "c",
        encoding=encoding, quoting=3, dtype=str,
    )  # fmt: skip


def _split_title_genres(items: pd.DataFrame) -> pd.DataFrame:
    out = items.copy()
    out[GENRES_COL] = out[GENRES_COL].fillna("").replace("(no genres listed)", "")
    return out


def parse_ratings(spec: DatasetSpec, folder: Path) -> pd.DataFrame:
    """Ratings as user_id, item_id (int64), rating (float32), timestamp (int64)."""
    path = folder / spec.ratings
    cols = [USER_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL]
    try:
        if spec.fmt == "100k":
            df = pd.read_csv(path, sep="\t", names=cols, header=None)
        elif spec.fmt == "dat":
            # "::" would need pandas' python engine (64 s for ML-10M's 10M rows); numeric fields
            # hold no ":", so the C engine splits on ":" and skips the empty fields between.
            df = pd.read_csv(path, sep=":", header=None, usecols=[0, 2, 4, 6], names=range(7))
            df.columns = cols
        else:
            df = pd.read_csv(path)
            df.columns = cols + list(df.columns[4:])
            df = df[cols]
        df = df.astype(
            {USER_COL: "int64", ITEM_COL: "int64", RATING_COL: "float32", TIMESTAMP_COL: "int64"}
        )
    except (ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{path.name} is not in {spec.name}'s ratings format: {e}") from e
    if df.empty:
        raise UserError(f"{path.name} holds no ratings")
    return df


def parse_items(spec: DatasetSpec, folder: Path) -> pd.DataFrame:
    """Item metadata as item_id, title, genres ('|'-separated, '' when none)."""
    path = folder / spec.items
    try:
        if spec.fmt == "100k":
            names = [ITEM_COL, TITLE_COL, "release", "video_release", "url", *ML100K_GENRES]
            raw = _read_sep(path, "|", names, spec.encoding)
            flags = raw[list(ML100K_GENRES)].astype(int).to_numpy().astype(bool)
            genres = [
                "|".join(
                    g for g, on in zip(ML100K_GENRES, row, strict=True) if on and g != "unknown"
                )
                for row in flags
            ]
            df = pd.DataFrame(
                {ITEM_COL: raw[ITEM_COL], TITLE_COL: raw[TITLE_COL], GENRES_COL: genres}
            )
        elif spec.fmt == "dat":
            df = _read_sep(path, "::", [ITEM_COL, TITLE_COL, GENRES_COL], spec.encoding)
        else:
            df = pd.read_csv(path, encoding=spec.encoding, dtype=str)
            df.columns = [ITEM_COL, TITLE_COL, GENRES_COL]
        df = df.astype({ITEM_COL: "int64"})
    except (ValueError, KeyError, pd.errors.ParserError) as e:
        raise UserError(f"{path.name} is not in {spec.name}'s item format: {e}") from e
    return _split_title_genres(df).reset_index(drop=True)


def parse_users(spec: DatasetSpec, folder: Path) -> pd.DataFrame | None:
    """User demographics as user_id, gender, age, occupation (strings but user_id), or None."""
    if spec.users is None:
        return None
    path = folder / spec.users
    try:
        if spec.fmt == "100k":
            df = _read_sep(
                path, "|", [USER_COL, "age", "gender", "occupation", "zip"], spec.encoding
            )
        else:
            df = _read_sep(
                path, "::", [USER_COL, "gender", "age", "occupation", "zip"], spec.encoding
            )
        df = df.astype({USER_COL: "int64", "age": "int64"})
    except (ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{path.name} is not in {spec.name}'s user format: {e}") from e
    return df[[USER_COL, "gender", "age", "occupation"]].reset_index(drop=True)
