"""recflow.testing, the support package of the tests and benchmarks: a scaled-down ML-25M shape
keeps the counts, the 20-per-user floor and every item rated, without duplicates, reproducibly;
its archive reads back through the pipeline's own extraction and parsers; the tiny archives are
byte-for-byte reproducible; a random model of a given shape serves; a service that dies or never
answers fails its start within the deadline."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recflow.constants import ITEM_COL, USER_COL
from recflow.data.datasets import get_spec, parse_items, parse_ratings
from recflow.data.extract import extract
from recflow.testing.archives import ml100k_files, sha256, synthetic_zip, write_zip
from recflow.testing.models import random_model, save_served
from recflow.testing.sampling import MIN_PER_USER, cover
from recflow.testing.services import GitDaemon, await_ready, listens
from recflow.testing.synthetic import SHAPES, generate

# ML-25M's long tail on 400 items: half of them expect a rating or two, so some go unrated
# by the sampler and must be covered.
SMALL = dataclasses.replace(
    SHAPES["ml-25m"], n_users=300, n_items=400, n_ratings=15_000, max_user_id=400,
    max_item_id=900,
)  # fmt: skip


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return generate(SMALL, np.random.default_rng(3)).ratings


def test_counts_floor_and_no_duplicates(small: pd.DataFrame) -> None:
    assert len(small) == SMALL.n_ratings
    per_user = small[USER_COL].value_counts()
    assert per_user.size == SMALL.n_users
    assert per_user.min() >= MIN_PER_USER
    assert not small.duplicated([USER_COL, ITEM_COL]).any()


def test_every_item_rated_and_tail_long(small: pd.DataFrame) -> None:
    per_item = small[ITEM_COL].value_counts()
    assert per_item.size == SMALL.n_items
    assert per_item.median() < per_item.mean() / 2  # a long tail, not a flat one


def test_seeded_reproducibility(small: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(generate(SMALL, np.random.default_rng(3)).ratings, small)
    assert not generate(SMALL, np.random.default_rng(4)).ratings.equals(small)


def test_cover_fills_unrated_items_from_the_head() -> None:
    # 60 users rating items 0-3 each; items 4 and 5 are unrated.
    rng = np.random.default_rng(0)
    pos = np.tile(np.arange(4), 60)
    sizes = np.full(60, 4)
    theta = rng.dirichlet(np.ones(2), 60)
    out = cover(rng, pos, sizes, theta, np.array([0, 1, 0, 1, 0, 1]), 6, min_donor=2)
    assert np.bincount(out, minlength=6).min() >= 1
    assert (out != pos).sum() == 2
    for row in out.reshape(60, 4):  # still no duplicates per user
        assert np.unique(row).size == 4
    unchanged = np.random.default_rng(0)
    again = cover(unchanged, out, sizes, theta, np.array([0, 1, 0, 1, 0, 1]), 6)
    np.testing.assert_array_equal(again, out)
    assert unchanged.random() == np.random.default_rng(0).random()  # no randomness consumed


def test_synthetic_archive_reads_back_through_the_pipeline(tmp_path: Path) -> None:
    """The zip in the official ml-25m layout gives back the generated ratings and movies."""
    data = generate(SMALL, np.random.default_rng(3))
    archive = synthetic_zip(data, tmp_path)
    assert archive.name == "ml-25m.zip"
    spec = get_spec("ml-25m")
    extract(spec, archive, tmp_path / "x")
    ratings = parse_ratings(spec, tmp_path / "x")
    pd.testing.assert_frame_equal(ratings, data.ratings, check_dtype=False)
    items = parse_items(spec, tmp_path / "x")
    assert items[ITEM_COL].tolist() == data.items[ITEM_COL].tolist()


def test_tiny_archives_are_reproducible_and_parse(tmp_path: Path) -> None:
    a = write_zip(tmp_path / "a.zip", ml100k_files())
    b = write_zip(tmp_path / "b.zip", ml100k_files())
    assert sha256(a) == sha256(b)
    assert sha256(a) != sha256(write_zip(tmp_path / "c.zip", ml100k_files(seed=1)))
    spec = get_spec("ml-100k")
    extract(spec, a, tmp_path / "x")
    ratings = parse_ratings(spec, tmp_path / "x")
    assert ratings[USER_COL].nunique() == 40 and len(ratings) == 40 * 12


def test_random_model_of_a_shape_serves(tmp_path: Path) -> None:
    import mlflow.pyfunc

    shape = dataclasses.replace(SHAPES["ml-25m"], n_users=50, n_items=80, max_item_id=200)
    model, seen = random_model(np.random.default_rng(0), factors=4, shape=shape, n_seen=300)
    assert (len(model.user_ids), len(model.item_ids), model.item_emb.shape[1]) == (50, 80, 8)
    assert 0 < len(seen) <= 300 and not seen.duplicated().any()
    assert seen[USER_COL].isin(model.user_ids).all() and seen[ITEM_COL].isin(model.item_ids).all()
    loaded = mlflow.pyfunc.load_model(str(save_served(model, seen, tmp_path)))
    out = loaded.predict(pd.DataFrame({USER_COL: [1, 2]}), params={"k": 5})
    assert len(out) == 10
    for user, items in out.groupby(USER_COL)[ITEM_COL]:  # seen items are filtered out
        assert not set(items) & set(seen.loc[seen[USER_COL] == user, ITEM_COL])


def test_a_service_that_exits_or_never_answers_fails_its_start(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("it said something\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    with pytest.raises(RuntimeError, match="exited:\nit said something"):
        await_ready(dead, lambda: False, log, timeout=30)
    mute = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)  # fmt: skip
    with pytest.raises(RuntimeError, match="not ready in 0.5 s"):
        await_ready(mute, lambda: False, log, timeout=0.5)
    assert mute.poll() is not None  # stopped, not left behind


def test_git_daemon_listens_once_started_and_stops(tmp_path: Path) -> None:
    """Regression: stop returned when `git` (the group's leader) had exited, and its child
    git-daemon still accepted a connection (seen once in CI)."""
    (tmp_path / "served").mkdir()
    daemon = GitDaemon(tmp_path / "served").start()
    try:
        assert listens(daemon.port)
    finally:
        daemon.stop()
    assert not listens(daemon.port)
