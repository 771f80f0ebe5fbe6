"""MovieLens sources: the archive registry, verified downloads, safe extraction and parsing.

In: a dataset name (and optionally a URL/path and checksum). Out: a verified zip in the local
cache, the dataset's files extracted from it, and tidy frames of ratings, items and users.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.util.retry import Retry

from recflow.constants import GENRES_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL, TITLE_COL, USER_COL
from recflow.errors import UserError

log = logging.getLogger(__name__)

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
MB = 1024 * 1024

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
        known = ", ".join(DATASETS)
        raise UserError(f"unknown dataset {name!r}; choose one of: {known}") from None


def parse_checksum(checksum: str) -> tuple[str, str]:
    """Split ``"sha256:<hex>"`` / ``"md5:<hex>"`` into (algorithm, lower-case hex digest)."""
    algo, sep, digest = checksum.strip().partition(":")
    algo, digest = algo.lower(), digest.lower()
    lengths = {"sha256": 64, "md5": 32}
    valid_hex = all(c in "0123456789abcdef" for c in digest)
    if not sep or algo not in lengths or len(digest) != lengths[algo] or not valid_hex:
        raise UserError(
            f"checksum {checksum!r} is not of the form 'sha256:<64 hex>' or 'md5:<32 hex>'"
        )
    return algo, digest


def file_digest(path: Path, algo: str) -> str:
    """Hex digest of a file, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()


def _session(retries: int) -> requests.Session:
    # Retry connection errors and 5xx/429 with exponential backoff; 4xx are final.
    retry = Retry(
        total=retries, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET",), raise_on_status=False,
    )  # fmt: skip
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def _stream_to(url: str, dest: Path, algo: str, retries: int) -> str:
    """Download ``url`` into ``dest`` with a progress bar; return its digest."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        src = Path(urllib.request.url2pathname(parsed.path))
        if not src.is_file():
            raise UserError(f"no such file: {src}; check data_url")
        shutil.copyfile(src, dest)
        return file_digest(dest, algo)
    session = _session(retries)
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        # Connection-level retries happen inside urllib3; this loop covers a body cut mid-stream.
        try:
            with session.get(url, stream=True, timeout=(10, 60)) as resp:
                if resp.status_code != 200:
                    raise UserError(
                        f"downloading {url} failed with HTTP {resp.status_code}; "
                        "check data_url or your network"
                    )
                h = hashlib.new(algo)
                total = int(resp.headers.get("content-length") or 0) or None
                with open(dest, "wb") as f, tqdm(
                    total=total, unit="B", unit_scale=True, desc=dest.name.split(".part")[0],
                    disable=None,
                ) as bar:  # fmt: skip
                    for chunk in resp.iter_content(chunk_size=1 << 20):
                        f.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
                return h.hexdigest()
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ReadTimeout) as e:
            last_error = e
            log.warning("download of %s interrupted (%s); retrying", url, e)
            time.sleep(0.5 * 2**attempt)
        except requests.exceptions.RequestException as e:
            raise UserError(
                f"cannot reach {url}: {type(e).__name__}; check data_url or your network"
            ) from e
    raise UserError(f"downloading {url} kept failing ({last_error}); try again later")


@dataclass(frozen=True)
class Fetched:
    """A verified archive on disk and where it came from."""

    path: Path
    source: str
    checksum: str  # "<algo>:<hex>" actually computed
    verified: bool  # True when it matched a known checksum
    cached: bool


def fetch_archive(
    spec: DatasetSpec, cache_dir: Path, data_url: str = "", checksum: str = "", retries: int = 3
) -> Fetched:
    """Return a verified local copy of the dataset's zip, downloading it only when needed.

    The archive is written to a temporary file beside its final name and renamed into place only
    once its checksum matches, so the cache never holds a partial or corrupt file.
    """
    expected = parse_checksum(checksum) if checksum else None
    if not data_url and expected is None and spec.checksum:
        expected = parse_checksum(spec.checksum)
    source = data_url or spec.url
    algo = expected[0] if expected else "sha256"

    def check(digest: str, what: str) -> None:
        if expected and digest != expected[1]:
            raise UserError(
                f"checksum mismatch for {what}: expected {algo}:{expected[1]}, got {algo}:{digest}; "
                "the file is corrupt or not the one you meant (pass the right checksum)"
            )

    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("", "file") and not source.startswith("file:"):
        # A local path is used in place, never copied into the cache.
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"data_url {source!r} is not an existing file or an http(s)/file URL")
        digest = file_digest(path, algo)
        check(digest, str(path))
        return Fetched(path, str(path), f"{algo}:{digest}", expected is not None, cached=False)
    if parsed.scheme not in ("http", "https", "file"):
        raise UserError(f"unsupported URL scheme in {source!r}; use http(s)://, file:// or a path")

    name = PurePosixPath(parsed.path).name or f"{spec.name}.zip"
    if data_url:  # keep custom sources apart from the official archive of the same name
        name = f"{hashlib.sha1(data_url.encode()).hexdigest()[:10]}-{name}"
    target = cache_dir / spec.name / name
    # Reuse the cache only when we can prove it is the right file.
    if expected and target.is_file() and file_digest(target, algo) == expected[1]:
        log.info("using cached %s", target)
        return Fetched(target, source, f"{algo}:{expected[1]}", True, cached=True)

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        digest = _stream_to(source, tmp, algo, retries)
        check(digest, source)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return Fetched(target, source, f"{algo}:{digest}", expected is not None, cached=False)


def extract(spec: DatasetSpec, archive: Path, dest: Path) -> list[Path]:
    """Extract the dataset's files from ``archive`` into ``dest`` (flat), safely.

    Refuses archives that lack the expected layout, members whose paths would escape ``dest``,
    and content that expands beyond the dataset's plausible size (a zip bomb).
    """
    limit = spec.max_unpacked_mb * MB
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{archive} is not a readable zip archive ({e})") from e
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        for name in infos:
            p = PurePosixPath(name)
            if p.is_absolute() or ".." in p.parts or "\\" in name or ":" in p.parts[0]:
                raise UserError(
                    f"{archive} has a member {name!r} that would land outside the target folder"
                )
        missing = [m for m in spec.members if m not in infos]
        if missing:
            raise UserError(
                f"{archive} is not in the {spec.name} layout: missing {', '.join(missing)}; "
                f"expected the files under a top-level '{spec.folder}/' folder"
            )
        declared = sum(infos[m].file_size for m in spec.members)
        if declared > limit:
            raise UserError(
                f"{archive} would expand to {declared / MB:.0f} MB, far beyond {spec.name}'s "
                f"{spec.max_unpacked_mb} MB; refusing to extract it"
            )
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for member in spec.members:
            path = dest / PurePosixPath(member).name
            try:
                # zipfile stops at the declared size and checks the CRC, so a header that
                # lies about the size (checked above) surfaces here as BadZipFile.
                with zf.open(infos[member]) as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                path.unlink(missing_ok=True)
                raise UserError(f"{archive} is damaged ({member}: {e}); download it again") from e
            out.append(path)
    return out


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
            df = pd.read_csv(path, sep="::", names=cols, header=None, engine="python")
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
