"""Batch scoring: top-k recommendations for many users from a registered (or any) pyfunc model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import mlflow

from recflow.errors import UserError, first_line
from recflow.serving import batch
from steps.common import default, options, step

option = options("recommend")


@click.command(
    help="Write top-k recommendations for many users with the served model's code path.\n\n"
    f"Reads: a pyfunc model (--model_uri, e.g. {default('recommend', 'model_uri')}) "
    "and --users: 'all' (every user the model knows) or a CSV/Parquet file with a user_id "
    "column and optionally a history column (item IDs per user, oldest first; JSON lists in a "
    "CSV), folded in as in the served model.\nWrites: --output (.parquet or .csv) and the same file as an artifact of this run."
)
@option("model_uri")  # fmt: skip
@option("users")
@option("k", type=click.IntRange(min=1))
@option("output")
def main(model_uri: str, users: str, k: int, output: str) -> None:
    # A stored model's files in a folder that goes with the step: from a remote store MLflow
    # would download them into one that nobody removes. A model folder is read in place.
    with step("recommend"), tempfile.TemporaryDirectory() as tmp:
        out = Path(output)
        batch.check_output(out)
        try:
            dst = None if Path(model_uri).is_dir() else tmp
            model = mlflow.pyfunc.load_model(model_uri, dst_path=dst)
        except Exception as e:  # MlflowException, missing files, bad URIs: all mean the same here
            raise UserError(f"cannot load model {model_uri!r}: {first_line(e)}") from e
        wanted = batch.users_frame(users, model)
        n_rows = batch.write(batch.recommend(model, wanted, k), out)
        mlflow.log_artifact(str(out))
        mlflow.log_metrics({"n_users": len(wanted), "n_rows": n_rows})
        click.echo(f"wrote {n_rows} recommendations for {len(wanted)} users to {out.resolve()}")


if __name__ == "__main__":
    main()
