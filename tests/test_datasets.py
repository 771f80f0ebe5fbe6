"""The dataset registry and the parsing of every format (archives: see test_archives.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recflow.data import datasets as D
from recflow.data import download as A
from recflow.data import extract as X
from recflow.errors import UserError
from recflow.testing.archives import write_zip
from tests.helpers import SHARED_DATA, sha256

ML100K = D.get_spec("ml-100k")
ML1M = D.get_spec("ml-1m")
LATEST = D.get_spec("ml-latest-small")


def unpack(spec: D.DatasetSpec, files: dict[str, str | bytes], tmp_path: Path) -> Path:
    """Zip ``files`` in ``spec``'s layout, extract them and return the extracted folder."""
    archive = write_zip(tmp_path / f"{spec.name}.zip", files, folder=spec.folder)
    out = tmp_path / "extracted"
    X.extract(spec, archive, out)
    return out


# --- parsing ---------------------------------------------------------------------------------


def test_parse_100k(tmp_path: Path) -> None:
    flags = ["0"] * len(D.ML100K_GENRES)
    anim_comedy = list(flags)
    anim_comedy[D.ML100K_GENRES.index("Animation")] = "1"
    anim_comedy[D.ML100K_GENRES.index("Comedy")] = "1"
    unknown = list(flags)
    unknown[0] = "1"  # ML-100K's "unknown" genre is a flag, not a genre worth keeping
    folder = unpack(
        ML100K,
        {
            "u.data": "1\t10\t4\t881250949\n2\t20\t1\t891717742\n",
            "u.item": (
                "10|Café Toons (1995)|01-Jan-1995||http://x/10|" + "|".join(anim_comedy) + "\n"
                "20|unknown||||" + "|".join(unknown) + "\n"
            ),
            "u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n",
        },
        tmp_path,
    )
    expected_ratings = pd.DataFrame(
        {
            "user_id": [1, 2],
            "item_id": [10, 20],
            "rating": [4.0, 1.0],
            "timestamp": [881250949, 891717742],
        }
    ).astype({"rating": "float32"})
    pd.testing.assert_frame_equal(D.parse_ratings(ML100K, folder), expected_ratings)
    items = D.parse_items(ML100K, folder)
    assert items.to_dict("list") == {
        "item_id": [10, 20],
        "title": ["Café Toons (1995)", "unknown"],
        "genres": ["Animation|Comedy", ""],
    }
    assert items["item_id"].dtype == "int64"
    users = D.parse_users(ML100K, folder)
    assert users.to_dict("list") == {
        "user_id": [1, 2], "gender": ["M", "F"], "age": [24, 53],
        "occupation": ["technician", "other"],
    }  # fmt: skip
    assert users["user_id"].dtype == "int64" and users["age"].dtype == "int64"


def test_parse_dat_with_latin1_titles(tmp_path: Path) -> None:
    folder = unpack(
        ML1M,
        {
            "ratings.dat": "1::1193::5::978300760\n6040::582::3::956703932\n",
            "movies.dat": (
                "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                "582::Metisse (Café au Lait) (1993)::Comedy\n"
                # A lone double quote and a single colon must not confuse the "::" parser.
                '73::"Misérables, Les" (1995): Part 1::Drama|Musical\n'
            ),
            "users.dat": "1::F::1::10::48067\n6040::M::25::6::11106\n",
        },
        tmp_path,
    )
    assert (folder / "movies.dat").read_bytes().count(b"Caf\xe9") == 1  # really ISO-8859-1
    ratings = D.parse_ratings(ML1M, folder)
    assert ratings.to_dict("list") == {
        "user_id": [1, 6040], "item_id": [1193, 582], "rating": [5.0, 3.0],
        "timestamp": [978300760, 956703932],
    }  # fmt: skip
    assert ratings.dtypes.astype(str).tolist() == ["int64", "int64", "float32", "int64"]
    items = D.parse_items(ML1M, folder)
    assert items.to_dict("list") == {
        "item_id": [1193, 582, 73],
        "title": [
            "One Flew Over the Cuckoo's Nest (1975)",
            "Metisse (Café au Lait) (1993)",
            '"Misérables, Les" (1995): Part 1',
        ],
        "genres": ["Drama", "Comedy", "Drama|Musical"],
    }
    users = D.parse_users(ML1M, folder)
    assert users.to_dict("list") == {
        "user_id": [1, 6040], "gender": ["F", "M"], "age": [1, 25], "occupation": ["10", "6"],
    }  # fmt: skip


def test_parse_csv_with_header_quotes_and_no_genres(tmp_path: Path) -> None:
    folder = unpack(
        LATEST,
        {
            "ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n2,11,0.5,835355493\n",
            "movies.csv": (
                "movieId,title,genres\n"
                "1,Toy Story (1995),Adventure|Animation\n"
                '11,"American President, The (1995)",Comedy|Drama|Romance\n'
                "4973,Amélie (2001),Comedy|Romance\n"
                "114335,La cravate (1957),(no genres listed)\n"
            ).encode(),  # the CSV releases are UTF-8, not ISO-8859-1
        },
        tmp_path,
    )
    ratings = D.parse_ratings(LATEST, folder)
    assert ratings.to_dict("list") == {
        "user_id": [1, 2], "item_id": [1, 11], "rating": [4.0, 0.5],
        "timestamp": [964982703, 835355493],
    }  # fmt: skip
    assert ratings.dtypes.astype(str).tolist() == ["int64", "int64", "float32", "int64"]
    items = D.parse_items(LATEST, folder)
    assert items.to_dict("list") == {
        "item_id": [1, 11, 4973, 114335],
        "title": [
            "Toy Story (1995)", "American President, The (1995)", "Amélie (2001)",
            "La cravate (1957)",
        ],
        "genres": ["Adventure|Animation", "Comedy|Drama|Romance", "Comedy|Romance", ""],
    }  # fmt: skip
    assert D.parse_users(LATEST, folder) is None


@pytest.mark.parametrize(
    ("spec", "files"),
    [
        (ML100K, {"u.data": "1\tten\t4\t881250949\n"}),
        (ML100K, {"u.data": ""}),
        (ML1M, {"ratings.dat": "1,1193,5,978300760\n"}),
        (LATEST, {"ratings.csv": "userId,movieId,rating,timestamp\n"}),
    ],
    ids=["non-numeric", "empty-file", "wrong-separator", "header-only"],
)
def test_bad_ratings_file_is_a_user_error(
    tmp_path: Path, spec: D.DatasetSpec, files: dict[str, str]
) -> None:
    (tmp_path / spec.ratings).write_text(next(iter(files.values())))
    with pytest.raises(UserError, match=spec.ratings):
        D.parse_ratings(spec, tmp_path)


# --- registry and checksums ------------------------------------------------------------------

OFFICIAL = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m", "ml-latest-small")


@pytest.mark.parametrize("name", OFFICIAL)
def test_every_official_dataset_is_registered(name: str) -> None:
    spec = D.get_spec(name)
    assert spec.name == name
    assert spec.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
    assert spec.folder and "/" not in spec.folder
    assert spec.fmt in ("100k", "dat", "csv")
    assert spec.checksum is None or A.parse_checksum(spec.checksum)
    assert all(m.startswith(spec.folder + "/") for m in spec.members)
    assert spec.max_unpacked_mb > 0


def test_registry_facts_that_are_easy_to_get_wrong() -> None:
    # ML-10M unpacks into an oddly named folder and has no users file.
    assert D.get_spec("ml-10m").folder == "ml-10M100K"
    assert D.get_spec("ml-10m").users is None
    assert {n: D.get_spec(n).fmt for n in OFFICIAL} == {
        "ml-100k": "100k", "ml-1m": "dat", "ml-10m": "dat", "ml-20m": "csv", "ml-25m": "csv",
        "ml-32m": "csv", "ml-latest-small": "csv",
    }  # fmt: skip
    # The published digests (../shared/data/README.md).
    assert ML100K.checksum == (
        "sha256:50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"
    )
    assert (
        ML1M.checksum == "sha256:a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"
    )


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(UserError) as e:
        D.get_spec("ml-7")
    assert "'ml-7'" in str(e.value)
    for name in OFFICIAL:
        assert name in str(e.value)


# --- the real files --------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_ml100k_in_the_official_layout(shared_ml100k: Path, tmp_path: Path) -> None:
    files = {n: (shared_ml100k / n).read_bytes() for n in ("u.data", "u.item", "u.user")}
    archive = write_zip(tmp_path / "ml-100k.zip", files, folder="ml-100k")
    fetched = A.fetch_archive(ML100K, tmp_path / "cache", str(archive), sha256(archive))
    folder = tmp_path / "raw"
    X.extract(ML100K, fetched.path, folder)
    ratings = D.parse_ratings(ML100K, folder)
    items = D.parse_items(ML100K, folder)
    users = D.parse_users(ML100K, folder)
    assert len(ratings) == 100_000
    assert ratings["user_id"].nunique() == len(users) == 943
    assert ratings["item_id"].nunique() == len(items) == 1682
    assert set(ratings["rating"]) == {1.0, 2.0, 3.0, 4.0, 5.0}
    toy = items.set_index("item_id").loc[1]
    assert toy["title"] == "Toy Story (1995)"
    assert toy["genres"].split("|") == ["Animation", "Children's", "Comedy"]
    assert "unknown" not in "|".join(items["genres"]).split("|")


@pytest.mark.realdata
def test_real_ml1m_metadata() -> None:
    folder = SHARED_DATA / "ml-1m"
    if not (folder / "movies.dat").is_file():
        pytest.skip("real MovieLens data not available in ../shared/data")
    items = D.parse_items(ML1M, folder)
    users = D.parse_users(ML1M, folder)
    assert len(items) == items["item_id"].nunique() == 3883
    assert len(users) == users["user_id"].nunique() == 6040
    assert "Metisse (Café au Lait) (1993)" in set(items["title"])
    assert set(users["age"]) == {1, 18, 25, 35, 45, 50, 56}
    assert set(users["gender"]) == {"F", "M"}
