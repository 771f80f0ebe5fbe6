"""A user's own data: an interactions file (and optionally item metadata) as a dataset.

In: a CSV, TSV or Parquet file, optionally gzipped or alone in a zip, and the names of its
columns (``Columns``). Out: interactions with the project's column names (user_id, item_id,
rating, and timestamp when the file has one) and a catalogue of every interacted item (item_id,
title, genres and the metadata's other columns); ``write_raw`` / ``read_raw`` hand both from the
download step to preprocess. Pure functions of the files: no MLflow.

The rules (docs/own-data.md): IDs keep their type, integers stay integers and anything else
stays text (a CSV column is read as integers only when every value is an integer as written,
without leading zeros or a sign other than '-'); a missing rating column makes every row an
interaction of strength 1; timestamps are epoch seconds or ISO 8601, kept as epoch seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recflow.constants import GENRES_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL, TITLE_COL, USER_COL
from recflow.data.tables import Table, read_table
from recflow.errors import UserError

log = logging.getLogger(__name__)

# The files the download step logs under raw/ for preprocess.
INTERACTIONS_FILE = "interactions.parquet"
CATALOGUE_FILE = "items.parquet"

# An integer as written: what a CSV ID column must hold throughout to be read as integers (at
# most 18 digits, so int64 holds it; "007" or "+7" are text, or "007" and "7" would merge).
_INTEGER = r"^-?(0|[1-9][0-9]{0,17})$"


@dataclass(frozen=True, kw_only=True)
class Columns:
    """Which of the file's columns hold what (the download step's ``*_col`` options)."""

    user: str = USER_COL
    item: str = ITEM_COL
    rating: str = RATING_COL  # optional: absent, every row is an interaction of strength 1
    time: str = TIMESTAMP_COL  # optional: needed only by the time split
    title: str = TITLE_COL  # of the item metadata; optional: absent, the item ID as text


def read_all(
    paths: list[Path], cols: Columns, names: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The interactions in ``paths[0]`` and the catalogue of their items, with the metadata in
    ``paths[1]`` when given (``names``: how to call each file in messages)."""
    ratings = read_interactions(paths[0], cols, names[0])
    items = read_items(paths[1], cols, names[1]) if len(paths) > 1 else None
    return ratings, catalogue(ratings, items, names[1] if len(names) > 1 else "")


def read_interactions(path: Path, cols: Columns, name: str) -> pd.DataFrame:
    """The interactions in ``path`` (``name``: how to call it in messages) as user_id, item_id,
    rating (float32) and, when the file has the time column, timestamp (int64 epoch seconds)."""
    named: dict[str, str] = {}  # column -> the parameter that named it
    for param, col in (("user_col", cols.user), ("item_col", cols.item),
                       ("rating_col", cols.rating), ("time_col", cols.time)):  # fmt: skip
        if col in named:
            raise UserError(
                f"{named[col]} and {param} both name column {col!r}; each needs its own"
            )
        named[col] = param
    wanted = {cols.user: pa.string(), cols.item: pa.string(), cols.rating: None, cols.time: None}
    table = read_table(path, name, wanted, required=[cols.user, cols.item])
    out = {
        USER_COL: _ids(table, cols.user, name, table.typed),
        ITEM_COL: _ids(table, cols.item, name, table.typed),
    }
    n = table.data.num_rows
    if cols.rating in table.data.column_names:
        out[RATING_COL] = _ratings(table.data[cols.rating], cols.rating, name)
    else:
        log.info(
            "%s has no %r column: every row is an interaction of strength 1", name, cols.rating
        )
        out[RATING_COL] = np.ones(n, dtype=np.float32)
    if cols.time in table.data.column_names:
        out[TIMESTAMP_COL] = _times(table.data[cols.time], cols.time, name)
    return pd.DataFrame(out)


def read_items(path: Path, cols: Columns, name: str) -> pd.DataFrame:
    """Item metadata in ``path``: item_id, title when the file has one, and its other columns
    (features, e.g. ``category`` or ``genres`` with '|' between values), as the file has them."""
    table = read_table(
        path, name, {cols.item: pa.string(), cols.title: pa.string()}, [cols.item], True
    )
    frame = table.data.drop_columns([cols.item]).to_pandas()
    frame = frame.drop(
        columns=[c for c in (ITEM_COL, TITLE_COL) if c != cols.title], errors="ignore"
    )
    frame.insert(0, ITEM_COL, _ids(table, cols.item, name, table.typed))
    return frame.rename(columns={cols.title: TITLE_COL})


def catalogue(ratings: pd.DataFrame, items: pd.DataFrame | None, name: str = "") -> pd.DataFrame:
    """Every item of ``ratings`` with a title (the item ID as text when it has none), genres ('' when
    none) and the metadata's other columns; ``items`` is ``read_items``' frame (``name`` its
    source), joined on item_id, refused when it matches no item at all."""
    ids = pd.Series(np.sort(ratings[ITEM_COL].unique()), name=ITEM_COL)
    base = ids.to_frame()
    if items is not None:
        theirs = _like(items[ITEM_COL], ids)
        matched = theirs.isin(ids).fillna(False).astype(bool)
        if not matched.any():
            raise UserError(
                f"items_url {name}: none of its {len(items)} item IDs (e.g. "
                f"{_examples(items[ITEM_COL])}) is an item of data_url (e.g. {_examples(ids)}); "
                "check item_col and that both files use the same IDs"
            )
        meta = items[matched].assign(**{ITEM_COL: theirs[matched].astype(ids.dtype)})
        meta = meta.drop_duplicates(ITEM_COL)
        log.info("%s: metadata for %d of %d items", name, len(meta), len(ids))
        base = base.merge(meta, on=ITEM_COL, how="left")
    id_text = ids.astype("str")
    if TITLE_COL in base:
        titles = base[TITLE_COL].astype("str")
        base[TITLE_COL] = titles.where(titles.notna() & (titles.str.strip() != ""), id_text)
    else:
        base[TITLE_COL] = id_text
    genres = base[GENRES_COL] if GENRES_COL in base else pd.Series("", index=base.index)
    base[GENRES_COL] = genres.fillna("").astype("str")
    first = [ITEM_COL, TITLE_COL, GENRES_COL]
    return base[first + [c for c in base.columns if c not in first]]


def write_raw(folder: Path, ratings: pd.DataFrame, items: pd.DataFrame) -> None:
    """Write what the download step logs under raw/ for preprocess."""
    ratings.to_parquet(folder / INTERACTIONS_FILE, index=False)
    items.to_parquet(folder / CATALOGUE_FILE, index=False)


def read_raw(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The interactions and catalogue :func:`write_raw` wrote in ``folder``; text IDs of the
    interactions come as categoricals (a code per row and each ID once: at 20M rows a third of
    the memory and time of a string per row), which ``preprocess.prepare`` works on as codes."""
    path = folder / INTERACTIONS_FILE
    schema = pq.read_schema(path)
    kinds = {c: schema.field(c).type for c in (USER_COL, ITEM_COL)}
    text = [c for c, t in kinds.items() if pa.types.is_string(t) or pa.types.is_large_string(t)]
    # Without the metadata pandas wrote, which would turn the categoricals back into strings.
    ratings = pq.read_table(path, read_dictionary=text).to_pandas(ignore_metadata=True)
    return ratings, pd.read_parquet(folder / CATALOGUE_FILE)


def _ids(table: Table, col: str, name: str, typed: bool) -> pd.Series:
    """An ID column as int64 or text (see the module docstring); empty or null IDs refused."""
    values = table.data[col]
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if pa.types.is_integer(values.type):
        _no_missing(values.is_null(), col, name)
        try:
            return values.cast(pa.int64()).to_pandas()
        except pa.ArrowInvalid:  # unsigned 64-bit IDs past int64 (e.g. hashes): kept as text
            return values.cast(pa.string()).to_pandas().astype("str")
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        if not pa.types.is_null(values.type):
            raise UserError(f"{name}: column {col!r} is {values.type}; IDs are integers or text")
        values = values.cast(pa.string())
    empty = pc.or_kleene(values.is_null(), pc.match_substring_regex(values, r"^\s*$"))
    _no_missing(empty.fill_null(True), col, name)
    if not typed and all(
        pc.all(pc.match_substring_regex(v, _INTEGER)).as_py() for v in (values[:1000], values)
    ):  # the sample first: text IDs usually show on the first rows
        return values.cast(pa.int64()).to_pandas()
    return values.to_pandas().astype("str")


def _no_missing(missing: pa.ChunkedArray, col: str, name: str) -> None:
    n = pc.sum(missing).as_py() or 0
    if n:
        first = pc.index(missing, True).as_py()
        raise UserError(
            f"{name}: column {col!r} has no ID (empty or null) on data row {first + 1} "
            f"({n} such rows in all)"
        )


def _ratings(values: pa.ChunkedArray, col: str, name: str) -> np.ndarray:
    """The strength of each interaction: numeric, finite and present on every row."""
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        numbers = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(numbers)  # nulls come out as NaN
    else:
        text = pd.Series(values.cast(pa.string()).to_pandas(), dtype="str")
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(numbers)
    _refuse(values, bad, f"{name}: column {col!r} must hold a number on every row")
    return numbers.astype(np.float32)


def _times(values: pa.ChunkedArray, col: str, name: str) -> np.ndarray:
    """Epoch seconds from epoch seconds (integer or not) or ISO 8601 dates and times (UTC unless
    they say otherwise)."""
    kind = values.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind):
        seconds = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(seconds)
    elif pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        stamps = values.cast(pa.timestamp("s", getattr(kind, "tz", None)), safe=False)
        seconds = stamps.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = values.is_null().to_numpy(zero_copy_only=False)
    else:  # text the CSV reader did not parse on its own, e.g. mixed time zone offsets
        text = pd.Series(values.cast(pa.string()).to_pandas(), dtype="str")
        seconds = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(seconds).all():
            parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
            since = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
            seconds = since.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(seconds)
    with np.errstate(invalid="ignore"):
        bad |= np.abs(seconds) >= 2.0**63  # past int64 epoch seconds: not a time
    _refuse(values, bad, f"{name}: column {col!r} must hold a time on every row, as epoch "
            "seconds or ISO 8601")  # fmt: skip
    return np.floor(seconds).astype(np.int64)


def _refuse(values: pa.ChunkedArray, bad: np.ndarray, what: str) -> None:
    """A one-line error naming the first of the ``bad`` rows and how many there are, if any."""
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{what}; data row {at + 1} holds {values[at].as_py()!r} "
            f"({int(bad.sum())} such rows in all)"
        )


def _like(ids: pd.Series, reference: pd.Series) -> pd.Series:
    """``ids`` in the type of ``reference``'s IDs, so the two compare: text IDs as text, and
    integer-like text as integers (other text matches no integer ID)."""
    if pd.api.types.is_integer_dtype(reference.dtype):
        if pd.api.types.is_integer_dtype(ids.dtype):
            return ids
        text = ids.astype("str")
        return text.where(text.str.fullmatch(_INTEGER), None).astype("Int64")
    return ids.astype("str")


def _examples(ids: pd.Series, n: int = 3) -> str:
    return ", ".join(repr(v) for v in ids.drop_duplicates().head(n).tolist())
