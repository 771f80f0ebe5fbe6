"""Batch scoring: top-k recommendations for many users from a registered (or any) pyfunc model."""

from __future__ import annotations

from pathlib import Path

import click
import mlflow
import pandas as pd

from recflow import constants as C
from recflow.errors import UserError
from recflow.serving import known_users
from steps.common import step

BATCH = 2000  # users per predict call: bounds memory at BATCH x n_items scores


@click.command(
    help="Write top-k recommendations for many users with the served model's code path.\n\n"
    f"Reads: a pyfunc model (--model_uri, e.g. models:/{C.DEFAULT_MODEL_NAME}@{C.DEFAULT_ALIAS}) "
    "and --users: "
    "'all' (every user the model knows) or a CSV/Parquet file with a user_id column.\n"
    "Writes: --output (.parquet or .csv) and the same file as an artifact of this run."
)
@click.option("--model_uri", default=f"models:/{C.DEFAULT_MODEL_NAME}@{C.DEFAULT_ALIAS}",
              show_default=True)  # fmt: skip
@click.option("--users", default="all", show_default=True)
@click.option("--k", default=C.DEFAULT_K, show_default=True, type=click.IntRange(min=1))
@click.option("--output", default="recommendations.parquet", show_default=True)
def main(model_uri: str, users: str, k: int, output: str) -> None:
    with step("recommend"):
        out = Path(output)
        if out.suffix not in (".parquet", ".csv"):
            raise UserError(f"output {output!r} must end in .parquet or .csv")
        try:
            model = mlflow.pyfunc.load_model(model_uri)
        except Exception as e:  # MlflowException, missing files, bad URIs: all mean the same here
            raise UserError(f"cannot load model {model_uri!r}: {str(e).splitlines()[0]}") from e
        ids = _read_users(users, model)
        parts = [
            model.predict(pd.DataFrame({C.USER_COL: ids[i : i + BATCH]}), params={"k": k})
            for i in range(0, len(ids), BATCH)
        ]
        recs = pd.concat(parts, ignore_index=True)
        # Write beside the target, then rename: a failure never leaves a half-written output.
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = out.with_name(f".{out.name}.part")
        if out.suffix == ".parquet":
            recs.to_parquet(staged, index=False)
        else:
            recs.to_csv(staged, index=False)
        staged.replace(out)
        mlflow.log_artifact(str(out))
        mlflow.log_metrics({"n_users": len(ids), "n_rows": len(recs)})
        click.echo(f"wrote {len(recs)} recommendations for {len(ids)} users to {out}")


def _read_users(users: str, model: mlflow.pyfunc.PyFuncModel) -> list[int]:
    if users == "all":
        return known_users(model).tolist()
    path = Path(users)
    if not path.is_file():
        raise UserError(f"users {users!r} is neither 'all' nor an existing file")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if C.USER_COL not in frame.columns:
        raise UserError(f"{users} has no '{C.USER_COL}' column (columns: {list(frame.columns)})")
    ids = pd.to_numeric(frame[C.USER_COL], errors="coerce")
    if ids.isna().any() or (ids % 1 != 0).any():
        raise UserError(f"{users}: '{C.USER_COL}' must hold integers only")
    return ids.astype("int64").drop_duplicates().tolist()


if __name__ == "__main__":
    main()
