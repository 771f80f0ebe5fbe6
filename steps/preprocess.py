"""Step 2: turn a download run's ratings into train / valid / test splits and side features."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import mlflow
import numpy as np

from recflow import constants as C
from recflow import datasets, preprocess
from recflow.tracking import download, get_step_run, setup_logging, step_run


@click.command(
    help="Filter ratings into implicit positives, split them and build side features.\n\n"
    f"Reads: the {C.RAW_DIR}/ artifacts of a download run (--raw_run_id).\n"
    f"Writes: artifacts {C.DATA_DIR}/{{{C.TRAIN_FILE}, {C.VALID_FILE}, {C.TEST_FILE}, "
    f"{C.USER_FEATURES_FILE}, {C.ITEM_FEATURES_FILE}, {C.ITEMS_FILE}}}; counts as metrics."
)
@click.option("--raw_run_id", required=True, help="Run ID of a finished download run.")
@click.option(
    "--min_rating", default=0.0, show_default=True, help="Keep ratings >= this (0 keeps all)."
)
@click.option("--min_user_interactions", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--min_item_interactions", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--split", default="random", show_default=True, type=click.Choice(preprocess.SPLITS))
@click.option("--test_size", default=0.2, show_default=True)
@click.option("--valid_size", default=0.1, show_default=True)
@click.option("--seed", default=C.DEFAULT_SEED, show_default=True)
def main(
    raw_run_id: str, min_rating: float, min_user_interactions: int, min_item_interactions: int,
    split: str, test_size: float, valid_size: float, seed: int,
) -> None:  # fmt: skip
    setup_logging()
    params = {k: v for k, v in locals().items()}
    with step_run("preprocess", params), tempfile.TemporaryDirectory() as tmp:
        raw = get_step_run(raw_run_id, "download", "raw_run_id")
        spec = datasets.get_spec(raw.data.params["dataset"])
        folder = download(raw_run_id, C.RAW_DIR, Path(tmp) / "in")
        ratings = datasets.parse_ratings(spec, folder)
        items = datasets.parse_items(spec, folder)
        users = datasets.parse_users(spec, folder)

        positives = preprocess.to_implicit(ratings, min_rating)
        dense = preprocess.k_core(positives, min_user_interactions, min_item_interactions)
        parts = preprocess.split(dense, split, test_size, valid_size, np.random.default_rng(seed))
        user_ids = parts.train[C.USER_COL].unique()
        item_ids = parts.train[C.ITEM_COL].unique()

        out = Path(tmp) / "out"
        out.mkdir()
        parts.train.to_parquet(out / C.TRAIN_FILE, index=False)
        parts.valid.to_parquet(out / C.VALID_FILE, index=False)
        parts.test.to_parquet(out / C.TEST_FILE, index=False)
        preprocess.user_features(users, user_ids).to_parquet(
            out / C.USER_FEATURES_FILE, index=False
        )
        preprocess.item_features(items, item_ids).to_parquet(
            out / C.ITEM_FEATURES_FILE, index=False
        )
        preprocess.item_metadata(items, item_ids).to_parquet(out / C.ITEMS_FILE, index=False)
        mlflow.log_artifacts(str(out), C.DATA_DIR)
        counts = {
            "n_ratings": len(ratings), "n_positives": len(positives), "n_after_filter": len(dense),
            "n_users": len(user_ids), "n_items": len(item_ids), "n_train": len(parts.train),
            "n_valid": len(parts.valid), "n_test": len(parts.test),
        }  # fmt: skip
        mlflow.log_metrics(counts)
        mlflow.set_tags({"recflow.raw_run_id": raw_run_id, C.TAG_DATASET: spec.name})
        click.echo(", ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
