"""Step 1: download a MovieLens archive, verify it and log its files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import mlflow

from recflow import constants as C
from recflow.data import datasets, download, extract
from recflow.tracking import space
from steps.common import data_dir, options, step

option = options("download")


@click.command(
    help="Download a MovieLens archive (or use DATA_URL), verify its checksum and log its files.\n\n"
    f"Reads: GroupLens or --data_url; caches archives under $RECFLOW_DATA_DIR (default data/).\n"
    f"Writes: artifacts {C.RAW_DIR}/ (the dataset's ratings, items and users files); tags "
    f"{C.TAG_DATASET}, {C.TAG_SOURCE_URL}, {C.TAG_CHECKSUM}."
)
@option("dataset", help=", ".join(datasets.DATASETS))  # fmt: skip
@option("data_url", help="http(s)/file URL or local path of a zip in the dataset's layout.")  # fmt: skip
@option("checksum", help="'sha256:<hex>' or 'md5:<hex>'; verified whenever known.")  # fmt: skip
def main(dataset: str, data_url: str, checksum: str) -> None:
    with step("download") as s:
        spec = datasets.get_spec(dataset)
        s.label(dataset)
        fetched = download.fetch_archive(spec, data_dir(), data_url, checksum)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
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
            mlflow.log_artifacts(tmp, C.RAW_DIR)
        mlflow.set_tags({
            C.TAG_DATASET: dataset, C.TAG_SOURCE_URL: fetched.source,
            C.TAG_CHECKSUM: fetched.checksum,
            C.TAG_CHECKSUM_VERIFIED: str(fetched.verified).lower(),
        })  # fmt: skip
        mlflow.log_metric("n_ratings", len(ratings))
        click.echo(f"{dataset}: {len(ratings)} ratings from {fetched.source} ({fetched.checksum})")


if __name__ == "__main__":
    main()
