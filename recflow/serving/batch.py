"""Batch scoring: top-k recommendations for many users from a loaded pyfunc model, to a file.

In: a user list ('all' or a CSV/Parquet file with a user_id column and, optionally, a history
column: a list of item IDs per user, oldest first, as JSON text in a CSV), a pyfunc recommender
and k. IDs are read in the model's kind: a string model's users as text (a CSV's ``00042`` stays
``"00042"``, a Parquet integer 42 is ``"42"``), an integer model's as integers.
Out: a .parquet or .csv file of recommendation rows, streamed batch by batch (memory does not grow
with the number of users) into a file beside its final name and renamed into place, so a failure
never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recflow.constants import USER_COL
from recflow.errors import UserError, first_line, relative_to
from recflow.serving.parsing import HISTORY_COL, OUTPUT_COLS, BadRequest, check_history, to_ids
from recflow.serving.pyfunc import known_users, string_ids

# Users per predict call. predict scores them a 16 MB block at a time (serving.BLOCK_BYTES), so
# a call holds that block and its output rows (100,000 at k=10, ~30 MB): larger calls only
# amortise the per-call costs (pyfunc input checks, a parquet row group).
BATCH = 10_000
FORMATS = (".parquet", ".csv")


def users_frame(users: str, model: mlflow.pyfunc.PyFuncModel) -> pd.DataFrame:
    """'all' (every user the model knows) or the distinct users of a CSV/Parquet file, with
    their histories if the file has a history column."""
    if users == "all":
        return pd.DataFrame({USER_COL: known_users(model)})
    path = Path(users)
    if not path.is_file():
        raise UserError(
            f"users {users!r} is neither 'all' nor an existing file{relative_to(users)}"
        )
    string_users, string_items = string_ids(model)
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:  # a string model's IDs as written: 00042 is not 42
            frame = pd.read_csv(path, dtype={USER_COL: str} if string_users else None)
    except (ValueError, OSError, pa.ArrowException) as e:  # empty, not CSV/Parquet, unreadable
        kind = "Parquet" if path.suffix == ".parquet" else "CSV"
        raise UserError(f"users {users!r} cannot be read as {kind}: {first_line(e)}") from e
    if USER_COL not in frame.columns:
        raise UserError(f"{users} has no '{USER_COL}' column (columns: {list(frame.columns)})")
    if string_users:
        ids = to_ids(frame[USER_COL], strings=True)
        if ids is None:
            raise UserError(f"{users}: '{USER_COL}' must hold IDs (strings or integers) only")
    else:
        ids = pd.to_numeric(frame[USER_COL], errors="coerce")
        # Past int64 an ID would wrap round to another user's (or merge with one).
        if ids.isna().any() or (ids % 1 != 0).any() or (ids.abs() >= 2.0**63).any():
            raise UserError(f"{users}: '{USER_COL}' must hold integers (of 64 bits) only")
    out = pd.DataFrame({USER_COL: ids if string_users else ids.astype("int64")})
    if HISTORY_COL in frame.columns:
        twice = out[USER_COL][out[USER_COL].duplicated()]
        if len(twice):
            raise UserError(
                f"{users}: user {twice.iloc[0]} is in more than one row; give each user one "
                f"'{HISTORY_COL}'"
            )
        out[HISTORY_COL] = [
            _history(users, row, h, string_items) for row, h in enumerate(frame[HISTORY_COL])
        ]
    return out.drop_duplicates(USER_COL).reset_index(drop=True)


def _history(users: str, row: int, value: object, strings: bool) -> list[int] | list[str]:
    # A history cell: a list (Parquet) or its JSON text (CSV); empty or missing: no history.
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError:
            raise UserError(
                f"{users}: '{HISTORY_COL}' of row {row} is not a JSON list of item IDs "
                f"(like [1, 50, 181]): {value[:50]!r}"
            ) from None
    try:
        return check_history(value, row, longest=None, strings=strings).tolist()
    except BadRequest as e:
        raise UserError(f"{users}: {e.message}") from None


def recommend(
    model: mlflow.pyfunc.PyFuncModel, users: pd.DataFrame, k: int, batch_size: int = BATCH
) -> Iterator[pd.DataFrame]:
    """The model's top-k rows for the ``users`` frame (``users_frame``), one frame per
    ``batch_size`` users, produced lazily so the caller can write each one before the next."""
    # The per-request limit protects a server's other clients; a batch job has none.
    model.unwrap_python_model().max_users = None
    for i in range(0, len(users), batch_size):
        yield model.predict(users.iloc[i : i + batch_size], params={"k": k})


def check_output(out: Path) -> None:
    """Refuse an output whose format we cannot write, or a folder, before any work is done."""
    if out.suffix not in FORMATS:
        raise UserError(f"output {str(out)!r} must end in .parquet or .csv")
    if out.is_dir():
        raise UserError(f"output {str(out)!r} is a folder; give a file name")


def write(parts: Iterable[pd.DataFrame], out: Path) -> int:
    """Write the frames to a file beside ``out`` as they come, then rename it into place; return
    the number of rows. On any failure the staged file is removed and ``out`` is left untouched."""
    staged = out.with_name(f".{out.name}.part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        n = _write_parquet(parts, staged) if out.suffix == ".parquet" else _write_csv(parts, staged)
        staged.replace(out)
    except OSError as e:  # no such folder, no permission, disk full: the output is untouched
        raise UserError(f"cannot write output {str(out)!r}: {first_line(e)}") from e
    finally:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)
    return n


def _write_parquet(parts: Iterable[pd.DataFrame], path: Path) -> int:
    writer, n = None, 0
    try:
        for part in parts:
            if writer is None:
                table = pa.Table.from_pandas(part, preserve_index=False)
                writer = pq.ParquetWriter(path, table.schema)
            else:  # later batches take the first one's schema (e.g. an all-empty title column)
                table = pa.Table.from_pandas(part, schema=writer.schema, preserve_index=False)
            writer.write_table(table)
            n += len(part)
        if writer is None:  # no users: an empty file with the served columns
            pd.DataFrame(columns=OUTPUT_COLS).to_parquet(path, index=False)
    finally:
        if writer is not None:
            writer.close()
    return n


def _write_csv(parts: Iterable[pd.DataFrame], path: Path) -> int:
    n, header = 0, True
    with open(path, "w", newline="") as f:
        for part in parts:
            part.to_csv(f, header=header, index=False)
            n, header = n + len(part), False
        if header:  # no users: the served columns only
            pd.DataFrame(columns=OUTPUT_COLS).to_csv(f, index=False)
    return n
