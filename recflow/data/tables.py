"""A table from a CSV, TSV or Parquet file, optionally gzipped or alone in a zip.

In: a file (its format told from its content, not its name) and the columns wanted. Out: those
columns as a pyarrow ``Table``; a file that is empty, of another format or lacks a required
column is a ``UserError`` naming it, in one line.
"""

from __future__ import annotations

import codecs
import csv
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recflow.errors import UserError, first_line

_GZIP, _ZIP, _PARQUET = b"\x1f\x8b", b"PK\x03\x04", b"PAR1"
_HEAD = 1 << 16  # what the format and a CSV's header are told from


@dataclass(frozen=True)
class Table:
    """A file's columns, and whether the file typed them (Parquet) or they were inferred (CSV)."""

    data: pa.Table
    typed: bool


def read_table(
    path: Path, name: str, wanted: dict[str, pa.DataType | None], required: list[str],
    every_column: bool = False,
) -> Table:  # fmt: skip
    """The ``wanted`` columns (name -> type to read a CSV column as, or None to infer) that the
    file has, and all others with ``every_column``; a missing ``required`` one is an error."""
    opener, plain = _opener(path, name)
    with opener() as f:
        head = f.read(_HEAD)
    if not head:
        raise UserError(f"{name} is empty")
    if head.startswith(_PARQUET):
        return _read_parquet(
            opener if not plain else None, path, name, wanted, required, every_column
        )
    sep, header = _sniff(head, name)
    _require(header, required, name)
    present = [c for c in wanted if c in header]
    options = pacsv.ConvertOptions(
        column_types={c: t for c, t in wanted.items() if t is not None and c in header},
        include_columns=None if every_column else present,
    )  # fmt: skip
    try:
        with opener() as f:
            data = pacsv.read_csv(
                f, parse_options=pacsv.ParseOptions(delimiter=sep), convert_options=options
            )
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise UserError(f"{name} is not a readable {_KIND[sep]} file: {first_line(e)}") from e
    if data.num_rows == 0:
        raise UserError(f"{name} holds a header but no rows")
    return Table(data, typed=False)


_KIND = {",": "CSV", "\t": "TSV"}


def _read_parquet(
    compressed: Callable[[], IO[bytes]] | None, path: Path, name: str,
    wanted: dict[str, pa.DataType | None], required: list[str], every_column: bool,
) -> Table:  # fmt: skip
    try:
        source: object = path
        if compressed is not None:  # decompressed in memory: Parquet needs random access
            with compressed() as f:
                source = pa.BufferReader(f.read())
        file = pq.ParquetFile(source)
        header = file.schema_arrow.names
        _require(header, required, name)
        data = file.read(columns=None if every_column else [c for c in wanted if c in header])
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{name} is not a readable Parquet file: {first_line(e)}") from e
    if data.num_rows == 0:
        raise UserError(f"{name} holds no rows")
    return Table(data, typed=True)


def _opener(path: Path, name: str) -> tuple[Callable[[], IO[bytes]], bool]:
    """How to open the file's content afresh (itself, gunzipped, or its zip's one member), and
    whether that is the file itself."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(_GZIP):
        return lambda: pa.input_stream(str(path), compression="gzip"), False
    if magic != _ZIP:
        return lambda: pa.input_stream(str(path)), True
    try:
        with zipfile.ZipFile(path) as zf:
            members = [
                i.filename for i in zf.infolist()
                if not i.is_dir() and not i.filename.startswith("__MACOSX/")
            ]  # fmt: skip
    except zipfile.BadZipFile as e:
        raise UserError(f"{name} is not a readable zip archive ({e})") from e
    if len(members) != 1:
        raise UserError(
            f"{name} is a zip of {len(members)} files ({', '.join(members[:5]) or 'none'}); "
            "it must hold exactly one CSV, TSV or Parquet file"
        )

    def member() -> IO[bytes]:
        zf = zipfile.ZipFile(path)
        f = zf.open(members[0])
        zf.close()  # the member keeps the archive's file open until it is closed itself
        return f

    return member, False


def _sniff(head: bytes, name: str) -> tuple[str, list[str]]:
    """The delimiter and column names of a CSV or TSV file from its first bytes."""
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head)
    except UnicodeDecodeError as e:
        if b"\x00" not in head and b"\n" in head:  # lines of text, in another encoding
            at = e.start + (len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0)
            line = head[:at].count(b"\n") + 1
            raise UserError(
                f"{name} is not UTF-8 text (line {line} holds the byte {head[at : at + 1]!r}); "
                "save it as UTF-8, e.g. iconv -f latin1 -t utf-8"
            ) from None
        text = ""
    first = text.split("\n", 1)[0].rstrip("\r")
    if "\x00" in text or not first.strip() or first.lstrip()[:1] in ("<", "{", "["):
        raise UserError(
            f"{name} is neither a CSV/TSV file (a header line, then one row per line) nor "
            "Parquet, optionally gzipped or alone in a zip"
        )
    sep = "\t" if "\t" in first else ","
    return sep, next(csv.reader([first], delimiter=sep))


def _require(header: list[str], required: list[str], name: str) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(
            f"{name} has no column {missing[0]!r} (its columns: {', '.join(map(repr, header))}); "
            "name the right one with user_col / item_col"
        )
