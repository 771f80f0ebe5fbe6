"""Step 1: download a MovieLens archive or an interactions file, verify it and log its files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import mlflow

from recflow import constants as C
from recflow.data import datasets, download, extract, interactions
from recflow.data.datasets import INTERACTIONS
from recflow.errors import UserError
from recflow.tracking import space
from steps.common import Step, data_dir, options, step

option = options("download")


@click.command(
    help="Download a MovieLens archive (or use DATA_URL), or read an interactions file of your "
    "own, verify its checksum and log its files.\n\n"
    "Reads: GroupLens or --data_url (with --dataset interactions: a CSV, TSV or Parquet file, "
    "optionally .gz or .zip, and --items_url); caches downloads under $RECFLOW_DATA_DIR "
    "(default data/).\n"
    f"Writes: artifacts {C.RAW_DIR}/ (the dataset's ratings, items and users files; for "
    f"interactions {interactions.INTERACTIONS_FILE} and {interactions.CATALOGUE_FILE} with our "
    f"column names); tags {C.TAG_DATASET}, {C.TAG_SOURCE_URL}, {C.TAG_CHECKSUM}."
)
@option("dataset", help=", ".join([*datasets.DATASETS, INTERACTIONS]))
@option("data_url", help="http(s)/file URL or local path of a zip in the dataset's layout, or of the interactions file.")  # fmt: skip
@option("checksum", help="'sha256:<hex>' or 'md5:<hex>'; verified whenever known.")  # fmt: skip
@option("items_url", help="interactions: item metadata (same formats), joined on item_col.")  # fmt: skip
@option("items_checksum", help="interactions: items_url's checksum, verified when given.")  # fmt: skip
@option("user_col", help="interactions: the column of user IDs.")
@option("item_col", help="interactions: the column of item IDs (in both files).")
@option("rating_col", help="interactions: the strength; absent, every row counts 1.")
@option("time_col", help="interactions: epoch seconds or ISO 8601; only split=time needs it.")
@option("title_col", help="interactions: the items' title; absent, the item ID.")
def main(
    dataset: str, data_url: str, checksum: str, items_url: str, items_checksum: str,
    user_col: str, item_col: str, rating_col: str, time_col: str, title_col: str,
) -> None:  # fmt: skip
    with step("download") as s, tempfile.TemporaryDirectory() as tmp:
        if dataset != INTERACTIONS:
            return movielens(s, datasets.get_spec(dataset), data_url, checksum, Path(tmp))
        if not data_url:
            raise UserError("dataset interactions reads data_url: give the file's path or URL")
        s.label(dataset, Path(data_url.rstrip("/")).name)
        cols = interactions.Columns(
            user=user_col, item=item_col, rating=rating_col, time=time_col, title=title_col
        )
        fetched = [download.fetch_file(data_url, data_dir() / INTERACTIONS, checksum)]
        if items_url:
            fetched.append(
                download.fetch_file(
                    items_url, data_dir() / INTERACTIONS, items_checksum, param="items_url"
                )
            )
        try:
            ratings, items = interactions.read_all(
                [f.path for f in fetched], cols, [data_url, items_url]
            )
            interactions.write_raw(Path(tmp), ratings, items)
        except Exception:
            for f in fetched:  # a file that cannot be read must not stay in the cache
                f.discard()
            raise
        space.require_for_artifacts("the interactions", Path(tmp))
        mlflow.log_artifacts(tmp, C.RAW_DIR)
        log_source(dataset, *fetched)
        mlflow.log_metrics({"n_ratings": len(ratings), "n_items": len(items)})
        click.echo(
            f"{dataset}: {len(ratings)} interactions of {ratings[C.USER_COL].nunique()} users "
            f"and {len(items)} items from {fetched[0].source} ({fetched[0].checksum})"
        )


def movielens(
    s: Step, spec: datasets.DatasetSpec, data_url: str, checksum: str, folder: Path
) -> None:
    """Fetch a MovieLens archive, check that its files parse and log them."""
    s.label(spec.name)
    fetched = download.fetch_archive(spec, data_dir(), data_url, checksum)
    try:
        extract.extract(spec, fetched.path, folder)
        # Parse now so a wrong format fails here, not one step later.
        ratings = datasets.parse_ratings(spec, folder)
        datasets.parse_items(spec, folder)
        datasets.parse_users(spec, folder)
    except Exception:
        # A checksum proves only that the file is the one asked for, not that it is
        # usable: a rejected archive must not stay in the cache to be reused.
        fetched.discard()
        raise
    space.require_for_artifacts("the raw files", folder)
    mlflow.log_artifacts(str(folder), C.RAW_DIR)
    log_source(spec.name, fetched)
    mlflow.log_metric("n_ratings", len(ratings))
    click.echo(f"{spec.name}: {len(ratings)} ratings from {fetched.source} ({fetched.checksum})")


def log_source(
    dataset: str, fetched: download.Fetched, items: download.Fetched | None = None
) -> None:
    """Tag the run with where its data came from and the checksums of what was read."""
    mlflow.set_tags({
        C.TAG_DATASET: dataset, C.TAG_SOURCE_URL: fetched.source,
        C.TAG_CHECKSUM: fetched.checksum, C.TAG_CHECKSUM_VERIFIED: str(fetched.verified).lower(),
    })  # fmt: skip
    if items is not None:
        mlflow.set_tags({C.TAG_ITEMS_URL: items.source, C.TAG_ITEMS_CHECKSUM: items.checksum})


if __name__ == "__main__":
    main()
