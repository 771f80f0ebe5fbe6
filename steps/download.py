"""Step 1: download a MovieLens archive, verify it and log its files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click
import mlflow

from recflow import archives, datasets
from recflow.constants import RAW_DIR, TAG_CHECKSUM, TAG_DATASET, TAG_SOURCE_URL
from recflow.tracking import setup_logging, step_run


@click.command(
    help="Download a MovieLens archive (or use DATA_URL), verify its checksum and log its files.\n\n"
    f"Reads: GroupLens or --data_url; caches archives under $RECFLOW_DATA_DIR (default data/).\n"
    f"Writes: artifacts {RAW_DIR}/ (the dataset's ratings, items and users files); tags "
    f"{TAG_DATASET}, {TAG_SOURCE_URL}, {TAG_CHECKSUM}."
)
@click.option("--dataset", default="ml-1m", show_default=True, help=", ".join(datasets.DATASETS))
@click.option(
    "--data_url",
    default="",
    help="http(s)/file URL or local path of a zip in the dataset's layout.",
)
@click.option(
    "--checksum", default="", help="'sha256:<hex>' or 'md5:<hex>'; verified whenever known."
)
def main(dataset: str, data_url: str, checksum: str) -> None:
    setup_logging()
    params = {"dataset": dataset, "data_url": data_url, "checksum": checksum}
    with step_run("download", params):
        spec = datasets.get_spec(dataset)
        cache = Path(os.environ.get("RECFLOW_DATA_DIR", "data"))
        fetched = archives.fetch_archive(spec, cache, data_url, checksum)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            archives.extract(spec, fetched.path, folder)
            # Parse now so a wrong format fails here, not one step later.
            ratings = datasets.parse_ratings(spec, folder)
            datasets.parse_items(spec, folder)
            datasets.parse_users(spec, folder)
            mlflow.log_artifacts(tmp, RAW_DIR)
        mlflow.set_tags(
            {
                TAG_DATASET: dataset,
                TAG_SOURCE_URL: fetched.source,
                TAG_CHECKSUM: fetched.checksum,
                "recflow.checksum_verified": str(fetched.verified).lower(),
            }
        )
        mlflow.log_metric("n_ratings", len(ratings))
        click.echo(f"{dataset}: {len(ratings)} ratings from {fetched.source} ({fetched.checksum})")


if __name__ == "__main__":
    main()
