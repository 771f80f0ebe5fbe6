"""Batch scoring: top-k recommendations for many users from a loaded pyfunc model, to a file.

In: a user list ('all' or a CSV/Parquet file with a user_id column), a pyfunc recommender and k.
Out: a .parquet or .csv file of recommendation rows, written beside its final name and renamed
into place, so a failure never leaves a half-written output.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from recflow.constants import USER_COL
from recflow.errors import UserError
from recflow.serving import known_users

BATCH = 2000  # users per predict call: bounds memory at BATCH x n_items scores
FORMATS = (".parquet", ".csv")


def user_ids(users: str, model: mlflow.pyfunc.PyFuncModel) -> list[int]:
    """'all' (every user the model knows) or the distinct user IDs of a CSV/Parquet file."""
    if users == "all":
        return known_users(model).tolist()
    path = Path(users)
    if not path.is_file():
        raise UserError(f"users {users!r} is neither 'all' nor an existing file")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if USER_COL not in frame.columns:
        raise UserError(f"{users} has no '{USER_COL}' column (columns: {list(frame.columns)})")
    ids = pd.to_numeric(frame[USER_COL], errors="coerce")
    if ids.isna().any() or (ids % 1 != 0).any():
        raise UserError(f"{users}: '{USER_COL}' must hold integers only")
    return ids.astype("int64").drop_duplicates().tolist()


def recommend(model: mlflow.pyfunc.PyFuncModel, ids: list[int], k: int) -> pd.DataFrame:
    """The model's top-k rows for every user in ``ids``, BATCH users per call."""
    parts = [
        model.predict(pd.DataFrame({USER_COL: ids[i : i + BATCH]}), params={"k": k})
        for i in range(0, len(ids), BATCH)
    ]
    return pd.concat(parts, ignore_index=True)


def check_output(out: Path) -> None:
    """Refuse an output whose format we cannot write, before any work is done."""
    if out.suffix not in FORMATS:
        raise UserError(f"output {str(out)!r} must end in .parquet or .csv")


def write(recs: pd.DataFrame, out: Path) -> None:
    """Write ``recs`` beside ``out``, then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.part")
    if out.suffix == ".parquet":
        recs.to_parquet(staged, index=False)
    else:
        recs.to_csv(staged, index=False)
    staged.replace(out)
