"""An interactions file of one's own as a dataset: formats, ID types, times, repeated rows, item
metadata, string IDs through preprocessing and its artifacts, the step cache keyed on the file's
content, and one clear error for each kind of bad file."""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import uuid
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from recflow import constants as C
from recflow.data import interactions as I
from recflow.data import preprocess as P
from recflow.errors import UserError
from recflow.tracking import cache, pipeline
from recflow.tracking.contracts import load_prepared, log_prepared
from tests.helpers import COMMANDS, invoke, ok, planned_steps, runs_of, sha256

OWN = ["--dataset", "interactions"]


def events(n_users: int = 40, n_items: int = 30, per_user: int = 12, seed: int = 0) -> pd.DataFrame:
    """Interactions with string IDs (``cust-<uuid>``, ``SKU-00042``) in two taste groups, star
    ratings and ISO 8601 times, with a few rows repeated later in the file."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_users):
        user = f"cust-{uuid.UUID(int=int(rng.integers(2**62)))}"
        half = np.arange(n_items // 2) + (k % 2) * (n_items // 2)
        for day, i in enumerate(rng.choice(half, size=per_user, replace=False)):
            rows.append((user, f"SKU-{i:05d}", int(rng.integers(1, 6)), f"2024-03-{day + 1:02d}"))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return pd.concat([df, df.head(3)], ignore_index=True)  # three (user, item) pairs repeated


def catalogue_rows(n_items: int = 30) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": [f"SKU-{i:05d}" for i in range(n_items)],
        "title": [f"Thing {i}" if i % 10 else "" for i in range(n_items)],  # a few untitled
        "category": ["shoes", "hats", "bags"] * (n_items // 3),
        "genres": ["a|b", "b", ""] * (n_items // 3),
    })  # fmt: skip


def write(df: pd.DataFrame, path: Path) -> Path:
    """``df`` as the file ``path`` names: .csv, .tsv or .parquet, then optionally .gz or .zip."""
    inner = path.name.removesuffix(".gz").removesuffix(".zip")
    if inner.endswith(".parquet"):
        data = df.to_parquet(index=False)
    else:
        data = df.to_csv(index=False, sep="\t" if inner.endswith(".tsv") else ",").encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(inner, data)
    else:
        path.write_bytes(data)
    return path


def read(path: Path, **cols: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return I.read_all([path], I.Columns(**cols), [path.name])


# --- reading files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["e.csv", "e.tsv", "e.parquet", "e.csv.gz", "e.tsv.zip", "e.parquet.gz", "e.csv.zip"]
)
def test_every_format_reads_the_same_interactions(tmp_path: Path, name: str) -> None:
    df = events()
    ratings, items = read(write(df, tmp_path / name))
    assert ratings[C.USER_COL].dtype == "str" and ratings[C.ITEM_COL].dtype == "str"
    assert ratings[C.USER_COL].tolist() == df["user_id"].tolist()
    assert ratings[C.ITEM_COL].tolist() == df["item_id"].tolist()
    assert ratings[C.RATING_COL].dtype == np.float32
    assert ratings[C.RATING_COL].tolist() == df["rating"].astype(float).tolist()
    expected = (pd.to_datetime(df["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")).dt
    assert ratings[C.TIMESTAMP_COL].tolist() == expected.total_seconds().astype(int).tolist()
    # Without metadata, every item is in the catalogue, titled by its ID.
    assert items[C.ITEM_COL].tolist() == sorted(df["item_id"].unique())
    assert (items[C.TITLE_COL] == items[C.ITEM_COL]).all() and (items[C.GENRES_COL] == "").all()


def test_unsigned_ids_past_int64_are_text(tmp_path: Path) -> None:
    """Regression: 64-bit hashes as uint64 Parquet IDs above 2**63 - 1 raised ArrowInvalid."""
    big = [2**64 - 1, 2**63, 5]
    df = pd.DataFrame(
        {"user_id": np.array(big, np.uint64), "item_id": np.array([1, 2, 3], np.uint64)}
    )
    ratings, _ = read(write(df, tmp_path / "hashes.parquet"))
    assert ratings[C.USER_COL].tolist() == [str(i) for i in big]
    assert ratings[C.ITEM_COL].dtype == np.int64


def test_ids_keep_the_type_the_data_gives_them(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "user_id": [1, 2, -3, 40], "item_id": ["00042", "42", "7", "SKU-1"],
        "code": ["7", "8", "9", "10"],
    })  # fmt: skip
    ratings, _ = read(write(df, tmp_path / "ids.csv"))
    assert ratings[C.USER_COL].dtype == np.int64 and ratings[C.USER_COL].tolist() == [1, 2, -3, 40]
    # "00042" and "42" are two items: text stays text, never cast to a number.
    assert ratings[C.ITEM_COL].tolist() == ["00042", "42", "7", "SKU-1"]
    # A CSV column of integers as written is integers; Parquet keeps its own types.
    as_ints, _ = read(write(df, tmp_path / "codes.csv"), item="code")
    assert as_ints[C.ITEM_COL].dtype == np.int64
    blank = pd.DataFrame({"user_id": ["a", "  "], "item_id": ["x", "y"]})
    with pytest.raises(UserError, match="column 'user_id' has no ID .* on data row 2"):
        read(write(blank, tmp_path / "blank.csv"))
    typed, _ = read(write(df, tmp_path / "codes.parquet"), item="code")
    assert typed[C.ITEM_COL].dtype == "str" and typed[C.ITEM_COL].tolist() == ["7", "8", "9", "10"]


def test_a_column_whose_type_changes_past_the_first_block_is_read(tmp_path: Path) -> None:
    """pyarrow reads a CSV in 1 MiB blocks: a column of integers there and a "4.5" or "five"
    far below must still come out as what the whole column holds, not an unreadable file."""
    n = 150_000  # ~1.5 MiB
    df = pd.DataFrame({"user_id": np.arange(n) % 500, "item_id": np.arange(n) % 300, "rating": 4})
    df["rating"] = df["rating"].astype(object)
    df.loc[n - 1, "rating"] = "4.5"
    ratings, _ = read(write(df, tmp_path / "late.csv"))
    assert ratings[C.RATING_COL].iloc[-1] == 4.5 and ratings[C.RATING_COL].iloc[0] == 4.0
    df.loc[n - 1, "rating"] = "five"
    with pytest.raises(UserError, match=f"data row {n} holds 'five'"):
        read(write(df, tmp_path / "late.csv"))


def test_times_from_epoch_seconds_and_iso_8601_agree(tmp_path: Path) -> None:
    iso = ["2024-01-02T03:04:05Z", "2024-01-02T04:04:05+01:00", "2024-01-02 03:04:05", "2024-01-02"]
    epoch = [1704164645, 1704164645, 1704164645, 1704153600]
    for times in (iso, epoch, [float(t) + 0.5 for t in epoch]):
        df = pd.DataFrame({"user_id": [1, 2, 3, 4], "item_id": [1, 1, 2, 2], "at": times})
        ratings, _ = read(write(df, tmp_path / "t.csv"), time="at")
        assert ratings[C.TIMESTAMP_COL].tolist() == epoch, times
    df["at"] = pd.to_datetime(iso[:2] * 2, utc=True)  # a Parquet timestamp column
    ratings, _ = read(write(df, tmp_path / "t.parquet"), time="at")
    assert ratings[C.TIMESTAMP_COL].tolist() == [1704164645] * 4


def test_a_file_of_pairs_only_is_implicit_feedback(tmp_path: Path) -> None:
    df = pd.DataFrame({"u": ["a", "a", "b", "b", "a"], "i": ["x", "y", "x", "y", "x"]})
    ratings, _ = read(write(df, tmp_path / "pairs.csv"), user="u", item="i")
    assert list(ratings.columns) == [C.USER_COL, C.ITEM_COL, C.RATING_COL]
    assert (ratings[C.RATING_COL] == 1.0).all()
    latest = P.dedupe(ratings)  # a repeated pair is one interaction
    assert list(zip(latest[C.USER_COL], latest[C.ITEM_COL], strict=True)) == [
        ("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"),
    ]  # fmt: skip
    with pytest.raises(UserError, match="'time' split needs a time for each interaction"):
        P.split(latest, "time", 0.2, 0.1, np.random.default_rng(0))


def test_repeated_rows_keep_the_latest_and_are_counted() -> None:
    df = pd.DataFrame(
        [("u1", "i1", 5.0, 300), ("u1", "i1", 1.0, 100), ("u1", "i1", 2.0, 300),
         ("u2", "i1", 3.0, 50), ("u1", "i2", 4.0, 1), ("u2", "i2", 4.0, 7)],
        columns=[C.USER_COL, C.ITEM_COL, C.RATING_COL, C.TIMESTAMP_COL],
    )  # fmt: skip
    # The latest time wins; of equal times, the later row in the file.
    assert P.dedupe(df).to_dict("list") == {
        C.USER_COL: ["u1", "u1", "u2", "u2"], C.ITEM_COL: ["i2", "i1", "i2", "i1"],
        C.RATING_COL: [4.0, 2.0, 4.0, 3.0], C.TIMESTAMP_COL: [1, 300, 7, 50],
    }  # fmt: skip
    # Without times, the last row of a pair in the file.
    untimed = P.dedupe(df.drop(columns=C.TIMESTAMP_COL))
    assert untimed[C.RATING_COL].tolist() == [2.0, 4.0, 3.0, 4.0]


def test_item_metadata_gives_titles_and_features(tmp_path: Path) -> None:
    df = events()
    meta = catalogue_rows()
    meta = pd.concat([meta, meta.tail(1)], ignore_index=True).rename(columns={"title": "name"})
    meta.loc[len(meta)] = ["SKU-99999", "Never bought", "hats", "c"]  # an item nobody had
    ratings, items = I.read_all(
        [write(df, tmp_path / "e.csv"), write(meta, tmp_path / "items.tsv")],
        I.Columns(title="name"), ["e.csv", "items.tsv"],
    )  # fmt: skip
    assert items[C.ITEM_COL].tolist() == sorted(df["item_id"].unique())
    titles = dict(zip(items[C.ITEM_COL], items[C.TITLE_COL], strict=True))
    assert titles["SKU-00001"] == "Thing 1" and titles["SKU-00010"] == "SKU-00010"  # untitled
    feats = P.item_features(items, ratings[C.ITEM_COL].unique())
    assert list(feats.columns) == [
        C.ITEM_COL, "genre_a", "genre_b", "category_bags", "category_hats", "category_shoes",
    ]  # fmt: skip
    row = feats.set_index(C.ITEM_COL).loc["SKU-00000"]
    assert row.to_dict() == {
        "category_bags": 0.0, "category_hats": 0.0, "category_shoes": 1.0,
        "genre_a": 1.0, "genre_b": 1.0,
    }  # fmt: skip


def test_string_ids_split_exactly_as_their_integer_ranks_would() -> None:
    """Text IDs are worked on as integer codes in their sorted order: relabelling them by rank
    must give the very same splits, features and counts, only with the text back."""
    df = events(n_users=60, per_user=10).rename(columns={"timestamp": "day"})
    df[C.TIMESTAMP_COL] = pd.to_datetime(df.pop("day")).astype("int64") // 10**9
    df[C.RATING_COL] = df[C.RATING_COL].astype(np.float32)
    ranked = df.assign(
        **{c: df[c].rank(method="dense").astype(np.int64) for c in ("user_id", "item_id")}
    )
    items = I.catalogue(df, None)
    int_items = I.catalogue(ranked, None)
    for how in P.SPLITS:
        settings = P.Settings(split=how, min_user_interactions=3)
        text, counts = P.prepare(df, items, None, settings, np.random.default_rng(5))
        nums, int_counts = P.prepare(ranked, int_items, None, settings, np.random.default_rng(5))
        assert counts == int_counts and counts["n_repeats_dropped"] == 3
        for name in ("train", "valid", "test"):
            got, want = getattr(text, name), getattr(nums, name)
            assert got[C.USER_COL].dtype == "str" and got[C.ITEM_COL].dtype == "str"
            back = {c: dict(zip(ranked[c], df[c], strict=True)) for c in (C.USER_COL, C.ITEM_COL)}
            pd.testing.assert_frame_equal(
                got, want.assign(**{c: want[c].map(m).astype("str") for c, m in back.items()})
            )
        assert text.item_features[C.ITEM_COL].is_monotonic_increasing
        # Categoricals (as interactions.read_raw gives text IDs), categories in any order.
        shuffled = {
            c: pd.Categorical(df[c], categories=df[c].drop_duplicates().sample(frac=1, random_state=3))
            for c in (C.USER_COL, C.ITEM_COL)
        }  # fmt: skip
        coded, _ = P.prepare(df.assign(**shuffled), items, None, settings, np.random.default_rng(5))
        for name in ("train", "valid", "test"):
            pd.testing.assert_frame_equal(getattr(coded, name), getattr(text, name))


def test_the_prepared_bundle_round_trips_string_ids(tracking: str, tmp_path: Path) -> None:
    df = events()
    data, _ = P.prepare(df, I.catalogue(df, None), None, P.Settings(), np.random.default_rng(1))
    with mlflow.start_run() as run:
        log_prepared(data)
    back = load_prepared(run.info.run_id, tmp_path / "back")
    for name in ("train", "valid", "test", "user_features", "item_features", "items"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(data, name))
    assert back.train[C.USER_COL].iloc[0].startswith("cust-")


# --- the steps -------------------------------------------------------------------------------


def test_download_and_preprocess_a_file_with_string_ids(tracking: str, tmp_path: Path) -> None:
    data = write(
        events().rename(columns={"user_id": "customer", "item_id": "sku"}), tmp_path / "e.csv"
    )
    meta = write(catalogue_rows().rename(columns={"item_id": "sku"}), tmp_path / "items.parquet")
    raw = ok("download", [*OWN, "--data_url", str(data), "--items_url", str(meta),
                          "--user_col", "customer", "--item_col", "sku"])  # fmt: skip
    run = mlflow.get_run(raw)
    assert run.info.run_name == "download · interactions · e.csv"
    assert run.data.tags[C.TAG_CHECKSUM] == sha256(data)
    assert run.data.tags[C.TAG_ITEMS_CHECKSUM] == sha256(meta)
    assert run.data.metrics == {"n_ratings": 483.0, "n_items": 30.0}
    names = {a.path for a in MlflowClient().list_artifacts(raw, C.RAW_DIR)}
    assert names == {f"{C.RAW_DIR}/{I.INTERACTIONS_FILE}", f"{C.RAW_DIR}/{I.CATALOGUE_FILE}"}

    prep = ok("preprocess", ["--raw_run_id", raw, "--split", "time"])
    run = mlflow.get_run(prep)
    assert run.info.run_name == "preprocess · interactions · time split 70%/10%/20%"
    assert run.data.metrics["n_repeats_dropped"] == 3
    assert run.data.metrics["n_users"] == 40 and run.data.metrics["n_items"] == 30
    prepared = load_prepared(prep, tmp_path / "prepared")
    assert prepared.train[C.USER_COL].str.startswith("cust-").all()
    assert prepared.items.set_index(C.ITEM_COL).loc["SKU-00001", C.TITLE_COL] == "Thing 1"
    assert "category_hats" in prepared.item_features.columns


def test_download_over_http_verifies_and_caches(tracking: str, http_dir, tmp_path: Path) -> None:
    root, base = http_dir
    served = write(events(), root / "events.csv.gz")
    args = [*OWN, "--data_url", f"{base}/events.csv.gz", "--checksum", sha256(served)]
    ok("download", args)
    cached = list((tmp_path / "data" / "interactions").iterdir())
    assert [p.read_bytes() for p in cached] == [served.read_bytes()]
    served.unlink()  # the second download must come from the cache
    ok("download", args)


def test_main_keys_the_download_on_the_file_content(tracking: str, tmp_path: Path) -> None:
    """Regression guard: the step cache compares parameters, and a file rewritten at the same
    path keeps its path: main must key the download on the file's sha256, or it reuses a
    download of the old content."""
    path = write(events(), tmp_path / "e.csv")
    plan = pipeline.Plan.with_defaults(dataset="interactions", data_url=str(path))
    keyed = plan.keyed_on_content(tmp_path / "data")
    assert keyed.checksum == sha256(path) and keyed.items_checksum == ""
    meta = write(catalogue_rows(), tmp_path / "items.csv")
    with_items = dataclasses.replace(plan, items_url=meta.as_uri())  # a file:// URL: fetched
    assert with_items.keyed_on_content(tmp_path / "data").items_checksum == sha256(meta)
    params = cache.entry_point_defaults()["download"] | {
        "dataset": "interactions", "data_url": str(path), "checksum": keyed.checksum,
    }  # fmt: skip
    raw = ok("download", [a for k, v in params.items() for a in (f"--{k}", v)])
    version = mlflow.get_run(raw).data.tags[C.TAG_CODE_VERSION]
    experiment = mlflow.get_run(raw).info.experiment_id
    assert cache.find_reusable_run(experiment, "download", params, version).info.run_id == raw

    write(events(seed=1), path)  # the same path, new content
    rekeyed = plan.keyed_on_content(tmp_path / "data")
    assert rekeyed.checksum == sha256(path) != keyed.checksum
    assert (
        cache.find_reusable_run(
            experiment, "download", params | {"checksum": rekeyed.checksum}, version
        )
        is None
    )
    # A checksum the user gave is theirs to keep (download verifies it).
    given = pipeline.Plan.with_defaults(
        dataset="interactions", data_url=str(path), checksum="md5:" + "0" * 32
    )
    assert given.keyed_on_content(tmp_path / "data") == given
    official = pipeline.Plan.with_defaults(dataset="ml-100k")  # its known checksum
    assert official.keyed_on_content(tmp_path / "data") == official


def test_main_passes_the_file_parameters_to_download(
    tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = {"dataset": "interactions", "data_url": "e.csv", "items_url": "i.csv",
             "user_col": "customer", "item_col": "sku", "rating_col": "stars", "time_col": "at",
             "title_col": "name", "checksum": "sha256:" + "a" * 64,
             "items_checksum": "sha256:" + "b" * 64}  # fmt: skip
    plan = pipeline.Plan.with_defaults(**given)
    calls = planned_steps(plan, monkeypatch)
    assert {k: calls["download"][k] for k in given} == given


# --- bad files: one clear line, a FAILED run, nothing logged or cached -----------------------


def _csv(text: str):
    return lambda path: path.write_text(text)


BAD = {
    "missing column": (
        _csv("customer,sku\na,b\n"), [],
        "e.csv has no column 'user_id' (its columns: 'customer', 'sku')",
    ),
    "empty file": (_csv(""), [], "e.csv is empty"),
    "header only": (_csv("user_id,item_id\n"), [], "e.csv holds a header but no rows"),
    "empty ID": (
        _csv("user_id,item_id\na,SKU-1\n,SKU-2\n"), [],
        "e.csv: column 'user_id' has no ID (empty or null) on data row 2 (1 such rows in all)",
    ),
    "null ID": (
        lambda p: pd.DataFrame({"user_id": ["a", None], "item_id": ["x", "y"]}).to_parquet(p),
        [], "e.csv: column 'user_id' has no ID (empty or null) on data row 2",
    ),
    "non-numeric rating": (
        _csv("user_id,item_id,rating\na,x,4\nb,y,five\n"), [],
        "e.csv: column 'rating' must hold a number on every row; data row 2 holds 'five'",
    ),
    "unparseable time": (
        _csv("user_id,item_id,timestamp\na,x,2024-01-02\nb,y,last tuesday\n"), [],
        "column 'timestamp' must hold a time on every row, as epoch seconds or ISO 8601; "
        "data row 2 holds 'last tuesday'",
    ),
    "not a table": (
        lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), [],
        "e.csv is neither a CSV/TSV file (a header line, then one row per line) nor Parquet",
    ),
    "time past int64": (
        _csv("user_id,item_id,timestamp\na,x,1700000000\nb,y,1e30\n"), [],
        "column 'timestamp' must hold a time on every row, as epoch seconds or ISO 8601; "
        "data row 2 holds",
    ),
    "not UTF-8": (
        lambda p: p.write_bytes("user_id,item_id\na,café\n".encode("latin-1")), [],
        "e.csv is not UTF-8 text (line 2 holds the byte b'\\xe9'); save it as UTF-8",
    ),
    "not UTF-8 after a BOM": (
        lambda p: p.write_bytes(codecs.BOM_UTF8 + "user_id,item_id\na,café\n".encode("latin-1")),
        [], "e.csv is not UTF-8 text (line 2 holds the byte b'\\xe9')",
    ),
    "user and item the same column": (
        _csv("user_id,item_id\na,x\n"), ["--item_col", "user_id"],
        "user_col and item_col both name column 'user_id'; each needs its own",
    ),
    "items match nothing": (
        _csv("user_id,item_id\na,SKU-1\nb,SKU-2\n"), ["--items_url", "ITEMS"],
        "none of its 2 item IDs (e.g. 'sku-1', 'sku-2') is an item of data_url",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_a_bad_file_is_one_clear_line(tracking: str, http_dir, tmp_path: Path, case: str) -> None:
    make, extra, message = BAD[case]
    root, base = http_dir
    make(root / "e.csv")
    (root / "items.csv").write_text("item_id,title\nsku-1,lower case\nsku-2,other\n")
    extra = [a.replace("ITEMS", f"{base}/items.csv") for a in extra]
    result = invoke(COMMANDS["download"], [*OWN, "--data_url", f"{base}/e.csv", *extra])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
    (run,) = runs_of("download")
    assert run.info.status == "FAILED"
    assert MlflowClient().list_artifacts(run.info.run_id) == [] and run.data.metrics == {}
    assert C.TAG_CHECKSUM not in run.data.tags
    assert list((tmp_path / "data" / "interactions").iterdir()) == []  # nothing cached


def test_fewer_than_two_users_after_filtering_is_refused(tracking: str, tmp_path: Path) -> None:
    df = events()
    first = df["user_id"] == df["user_id"].iloc[0]
    df["rating"] = np.where(first, 5, 1)  # one user's ratings pass min_rating
    raw = ok("download", [*OWN, "--data_url", str(write(df, tmp_path / "e.csv"))])
    result = invoke(COMMANDS["preprocess"], ["--raw_run_id", raw, "--min_rating", "2"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert errors == [
        "Error: after filtering, 12 interactions remain (users: 1, items: 12); a recommender "
        "needs at least two users and two items (lower min_rating or min_*_interactions, or use "
        "more data)"
    ], result.output
    (run,) = runs_of("preprocess")
    assert run.info.status == "FAILED"
    assert MlflowClient().list_artifacts(run.info.run_id) == [] and run.data.metrics == {}
