"""Dataset registry, verified downloads over loopback HTTP, safe extraction, every file format."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from recflow import datasets
from recflow.errors import UserError
from tests.synthetic import ml100k_files, write_zip


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_registry_covers_official_archives() -> None:
    assert set(datasets.DATASETS) == {
        "ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m", "ml-latest-small",
    }  # fmt: skip
    for spec in datasets.DATASETS.values():
        assert spec.url.endswith(f"{spec.name}.zip") and spec.fmt in ("100k", "dat", "csv")
        if spec.checksum:
            datasets.parse_checksum(spec.checksum)
    with pytest.raises(UserError, match="choose one of: ml-100k"):
        datasets.get_spec("ml-7")


@pytest.mark.parametrize("bad", ["sha1:abc", "sha256:xyz", "md5:" + "0" * 31, "nocolon"])
def test_parse_checksum_rejects(bad: str) -> None:
    with pytest.raises(UserError, match="not of the form"):
        datasets.parse_checksum(bad)


def extract_and_parse(tmp_path: Path, name: str, files: dict[str, str | bytes]):
    spec = datasets.get_spec(name)
    archive = write_zip(tmp_path / "a.zip", files, folder=spec.folder)
    out = tmp_path / "out"
    datasets.extract(spec, archive, out)
    return (
        datasets.parse_ratings(spec, out),
        datasets.parse_items(spec, out),
        datasets.parse_users(spec, out),
    )


def test_parses_ml100k_layout(tmp_path: Path) -> None:
    ratings, items, users = extract_and_parse(tmp_path, "ml-100k", ml100k_files())
    assert list(ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert len(ratings) == 480 and ratings.user_id.nunique() == 40
    assert items.loc[items.item_id == 1, "genres"].item() == "Adventure"
    assert set(users.columns) == {"user_id", "gender", "age", "occupation"}


def test_parses_dat_layout_with_latin1(tmp_path: Path) -> None:
    files = {
        "ratings.dat": "1::10::5::978300760\n2::10::3::978300761\n2::11::4::978300762\n",
        "movies.dat": "10::Café au lait (1993)::Comedy|Romance\n11::Heat (1995)::Action\n",
        "users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n",
    }
    ratings, items, users = extract_and_parse(tmp_path, "ml-1m", files)
    assert ratings.rating.tolist() == [5.0, 3.0, 4.0]
    assert items.title.tolist() == ["Café au lait (1993)", "Heat (1995)"]
    assert items.genres.tolist() == ["Comedy|Romance", "Action"]
    assert users.age.tolist() == [1, 56]


def test_parses_csv_layout(tmp_path: Path) -> None:
    files = {
        "ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n",
        "movies.csv": 'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama\n'
        "3,Some Film (2015),(no genres listed)\n",
    }
    ratings, items, users = extract_and_parse(tmp_path, "ml-latest-small", files)
    assert ratings.rating.tolist() == [4.0, 4.5] and users is None
    assert items.title.tolist()[0] == "American President, The (1995)"
    assert items.genres.tolist() == ["Comedy|Drama", ""]


def test_fetch_over_http_verifies_and_caches(http_dir, tiny_zip: Path, tmp_path: Path) -> None:
    root, base = http_dir
    (root / "x.zip").write_bytes(tiny_zip.read_bytes())
    spec, cache = datasets.get_spec("ml-100k"), tmp_path / "cache"
    got = datasets.fetch_archive(spec, cache, f"{base}/x.zip", sha256(tiny_zip))
    assert got.verified and not got.cached and got.path.read_bytes() == tiny_zip.read_bytes()
    (root / "x.zip").unlink()
    again = datasets.fetch_archive(spec, cache, f"{base}/x.zip", sha256(tiny_zip))
    assert again.cached and again.path == got.path


def test_fetch_failures_leave_no_partial_files(http_dir, tiny_zip: Path, tmp_path: Path) -> None:
    root, base = http_dir
    (root / "x.zip").write_bytes(tiny_zip.read_bytes())
    spec, cache = datasets.get_spec("ml-100k"), tmp_path / "cache"
    with pytest.raises(UserError, match="checksum mismatch"):
        datasets.fetch_archive(spec, cache, f"{base}/x.zip", "md5:" + "0" * 32)
    with pytest.raises(UserError, match="HTTP 404"):
        datasets.fetch_archive(spec, cache, f"{base}/missing.zip", retries=0)
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_file_url_and_local_path(tiny_zip: Path, tmp_path: Path) -> None:
    spec = datasets.get_spec("ml-100k")
    local = datasets.fetch_archive(spec, tmp_path / "c", str(tiny_zip))
    assert local.path == tiny_zip.resolve() and not local.verified
    via_url = datasets.fetch_archive(spec, tmp_path / "c", tiny_zip.resolve().as_uri())
    assert via_url.path.read_bytes() == tiny_zip.read_bytes()


def test_extract_refuses_escaping_members(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, content in ml100k_files().items():
            zf.writestr(f"ml-100k/{name}", content)
        zf.writestr("../evil.txt", "x")
    with pytest.raises(UserError, match="outside the target folder"):
        datasets.extract(datasets.get_spec("ml-100k"), archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_extract_refuses_zip_bombs(tmp_path: Path) -> None:
    files = ml100k_files()
    files["u.data"] = b"0" * (30 * 1024 * 1024)  # 30 MB of zeros, compresses to ~30 KB
    archive = write_zip(tmp_path / "bomb.zip", files)
    assert archive.stat().st_size < 1024 * 1024
    with pytest.raises(UserError, match="far beyond"):
        datasets.extract(datasets.get_spec("ml-100k"), archive, tmp_path / "out")


def test_extract_refuses_non_zip(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_text("not a zip")
    with pytest.raises(UserError, match="not a readable zip"):
        datasets.extract(datasets.get_spec("ml-100k"), junk, tmp_path / "out")


@pytest.mark.realdata
def test_real_ml100k(shared_ml100k: Path, tmp_path: Path) -> None:
    files = {n: (shared_ml100k / n).read_bytes() for n in ("u.data", "u.item", "u.user")}
    ratings, items, users = extract_and_parse(tmp_path, "ml-100k", files)
    assert len(ratings) == 100_000 and ratings.user_id.nunique() == 943
    assert len(items) == 1682 and len(users) == 943
    toy = items.loc[items.item_id == 1].iloc[0]
    assert toy.title == "Toy Story (1995)" and "Animation" in toy.genres
