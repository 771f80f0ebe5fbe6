"""Step 2: turn a download run's ratings into train / valid / test splits and side features."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import mlflow
import numpy as np

from recflow import constants as C
from recflow.data import datasets, interactions, preprocess
from recflow.tracking.contracts import PREPARED_FILES, link_upstream, log_prepared, log_splits
from recflow.tracking.runs import download
from steps.common import SEED, options, step

option = options("preprocess")


@click.command(
    help="Filter ratings into implicit positives (the latest of each user and item), split them "
    "and build side features.\n\n"
    f"Reads: the {C.RAW_DIR}/ artifacts of a download run (--raw_run_id).\n"
    f"Writes: artifacts {C.DATA_DIR}/{{{', '.join(PREPARED_FILES.values())}}}; counts as metrics "
    "(n_repeats_dropped: repeated rows of a user and item)."
)
@option("raw_run_id", help="Run ID of a finished download run (default: the latest).")  # fmt: skip
@option("min_rating", type=float, help="Keep ratings >= this (0 keeps all but negative ones; -inf keeps those too).")  # fmt: skip
@option("min_user_interactions", type=click.IntRange(min=1))
@option("min_item_interactions", type=click.IntRange(min=1))
@option("split", type=click.Choice(preprocess.SPLITS))
@option("test_size", type=float)
@option("valid_size", type=float)
@option("seed", type=SEED)
def main(
    raw_run_id: str, min_rating: float, min_user_interactions: int, min_item_interactions: int,
    split: str, test_size: float, valid_size: float, seed: int,
) -> None:  # fmt: skip
    with step("preprocess") as s, tempfile.TemporaryDirectory() as tmp:
        raw = s.upstream("raw_run_id", raw_run_id)
        dataset = raw.data.params["dataset"]
        spec = None if dataset == datasets.INTERACTIONS else datasets.get_spec(dataset)
        s.label(
            dataset,
            f"{split} split {1 - test_size - valid_size:.0%}/{valid_size:.0%}/{test_size:.0%}",
        )
        folder = download(raw.info.run_id, C.RAW_DIR, Path(tmp))
        if spec is None:
            ratings, items = interactions.read_raw(folder)
            users = None
        else:
            ratings = datasets.parse_ratings(spec, folder)
            items, users = datasets.parse_items(spec, folder), datasets.parse_users(spec, folder)
        settings = preprocess.Settings(
            min_rating=min_rating, min_user_interactions=min_user_interactions,
            min_item_interactions=min_item_interactions, split=split, test_size=test_size,
            valid_size=valid_size,
        )  # fmt: skip
        data, counts = preprocess.prepare(
            ratings, items, users, settings, np.random.default_rng(seed)
        )
        log_prepared(data)
        log_splits(data, dataset)
        mlflow.log_metrics(counts)
        link_upstream(raw_run_id=raw.info.run_id)
        mlflow.set_tag(C.TAG_DATASET, dataset)
        click.echo(", ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
