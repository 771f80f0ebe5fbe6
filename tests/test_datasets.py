"""Dataset registry, checksums, verified downloads, safe extraction and parsing of every format."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import struct
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pytest

from recflow import archives as A
from recflow import datasets as D
from recflow.errors import UserError
from tests.helpers import SHARED_DATA, free_port, sha256
from tests.synthetic import ml100k_files, write_zip

ML100K = D.get_spec("ml-100k")
ML1M = D.get_spec("ml-1m")
LATEST = D.get_spec("ml-latest-small")


def files_in(folder: Path) -> list[Path]:
    """Every file below ``folder`` (none if it does not exist)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def unpack(spec: D.DatasetSpec, files: dict[str, str | bytes], tmp_path: Path) -> Path:
    """Zip ``files`` in ``spec``'s layout, extract them and return the extracted folder."""
    archive = write_zip(tmp_path / f"{spec.name}.zip", files, folder=spec.folder)
    out = tmp_path / "extracted"
    A.extract(spec, archive, out)
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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sha256:" + "ab" * 32, ("sha256", "ab" * 32)),
        ("md5:" + "0f" * 16, ("md5", "0f" * 16)),
        (" SHA256:" + "AB" * 32 + "\n", ("sha256", "ab" * 32)),
    ],
)
def test_parse_checksum_accepts(text: str, expected: tuple[str, str]) -> None:
    assert A.parse_checksum(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", "garbage", "ab" * 32, "sha256:", "sha256:" + "ab" * 31, "sha256:" + "ab" * 33,
        "sha256:" + "zz" * 32, "md5:" + "ab" * 32, "sha1:" + "ab" * 20, "sha256 " + "ab" * 32,
    ],
)  # fmt: skip
def test_parse_checksum_rejects(text: str) -> None:
    with pytest.raises(UserError, match="is not of the form"):
        A.parse_checksum(text)


# --- fetch_archive ---------------------------------------------------------------------------


@pytest.fixture
def served(http_dir: tuple[Path, str], tiny_zip: Path) -> tuple[Path, str, str]:
    """The tiny archive served over HTTP: (served file, its URL, its checksum)."""
    root, base = http_dir
    path = root / "ml-100k.zip"
    path.write_bytes(tiny_zip.read_bytes())
    return path, f"{base}/ml-100k.zip", sha256(tiny_zip)


def test_http_download_is_verified_cached_and_reused(
    served: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, url, checksum = served
    cache = tmp_path / "cache"
    first = A.fetch_archive(ML100K, cache, url, checksum)
    assert first.path.parent == cache / "ml-100k"
    assert first.path.read_bytes() == path.read_bytes()
    assert (first.source, first.checksum, first.verified, first.cached) == (
        url, checksum, True, False,
    )  # fmt: skip
    assert files_in(cache) == [first.path]  # no temporary file left beside it
    path.unlink()  # a second download would now fail with HTTP 404
    second = A.fetch_archive(ML100K, cache, url, checksum)
    assert (second.path, second.cached, second.verified) == (first.path, True, True)


def test_md5_checksum_is_verified(served: tuple[Path, str, str], tmp_path: Path) -> None:
    path, url, _ = served
    md5 = "md5:" + hashlib.md5(path.read_bytes()).hexdigest()
    fetched = A.fetch_archive(ML100K, tmp_path / "cache", url, md5)
    assert fetched.checksum == md5 and fetched.verified


def test_without_checksum_the_download_is_unverified(
    served: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, url, checksum = served
    fetched = A.fetch_archive(ML100K, tmp_path / "cache", url)
    # The digest actually computed is reported, but nothing vouches for it.
    assert (fetched.checksum, fetched.verified, fetched.cached) == (checksum, False, False)
    assert fetched.path.read_bytes() == path.read_bytes()


def test_checksum_mismatch_leaves_nothing_in_the_cache(
    served: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, url, _ = served
    cache = tmp_path / "cache"
    wrong = "sha256:" + hashlib.sha256(b"another archive").hexdigest()
    with pytest.raises(UserError, match="checksum mismatch"):
        A.fetch_archive(ML100K, cache, url, wrong)
    assert files_in(cache) == []  # neither the archive nor a .part file


def test_checksum_mismatch_keeps_the_cached_good_file(
    served: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, url, checksum = served
    cache = tmp_path / "cache"
    good = A.fetch_archive(ML100K, cache, url, checksum).path
    good_bytes, good_mtime = good.read_bytes(), good.stat().st_mtime_ns
    write_zip(path, ml100k_files(seed=1))  # the server now sends something else
    wrong = "sha256:" + hashlib.sha256(b"what the user expected").hexdigest()
    with pytest.raises(UserError, match="checksum mismatch"):
        A.fetch_archive(ML100K, cache, url, wrong)
    assert files_in(cache) == [good]
    assert good.read_bytes() == good_bytes and good.stat().st_mtime_ns == good_mtime
    # With the right checksum the cached copy is still used, not the changed server file.
    again = A.fetch_archive(ML100K, cache, url, checksum)
    assert again.cached and again.path.read_bytes() == good_bytes


def test_official_source_uses_the_registry_checksum(
    served: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, url, checksum = served
    official = dataclasses.replace(ML100K, url=url, checksum=checksum)
    fetched = A.fetch_archive(official, tmp_path / "cache", retries=0)
    assert fetched.verified and fetched.path.name == "ml-100k.zip" and fetched.source == url
    tampered = dataclasses.replace(ML100K, url=url, checksum="md5:" + "0" * 32)
    with pytest.raises(UserError, match="checksum mismatch"):
        A.fetch_archive(tampered, tmp_path / "other-cache", retries=0)
    assert files_in(tmp_path / "other-cache") == []


def test_http_404_is_a_user_error(http_dir: tuple[Path, str], tmp_path: Path) -> None:
    _, base = http_dir
    with pytest.raises(UserError, match="HTTP 404"):
        A.fetch_archive(ML100K, tmp_path / "cache", f"{base}/missing.zip", retries=0)
    assert files_in(tmp_path / "cache") == []


def test_unreachable_host_fails_fast(tmp_path: Path) -> None:
    port = free_port()
    # The socket is closed: nothing listens on that port, so the connection is refused.
    start = time.monotonic()
    with pytest.raises(UserError, match="cannot reach"):
        A.fetch_archive(ML100K, tmp_path / "cache", f"http://127.0.0.1:{port}/x.zip", retries=0)
    assert time.monotonic() - start < 5
    assert files_in(tmp_path / "cache") == []


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record every backoff instead of waiting it out, so retry tests take no wall time."""
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    return waits


@contextlib.contextmanager
def scripted_server(script: Sequence[str], payload: bytes) -> Iterator[tuple[str, list[str]]]:
    """Serve ``payload`` on loopback, answering request n as ``script[n % len(script)]`` says.

    "ok" sends it whole; "cut" promises all of it (Content-Length) but sends half and hangs up;
    "503" refuses. Yields the URL and the answers given so far, one per request received.
    """
    answered: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        # HTTP/1.0 (the default): the server closes the connection after every answer.
        def do_GET(self) -> None:
            action = script[len(answered) % len(script)]
            answered.append(action)
            body = b"" if action == "503" else payload
            self.send_response(503 if action == "503" else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if action == "cut" else body)

        def log_message(self, *args: object) -> None:
            pass

    # One request at a time: the client is sequential, and the script must be read in order.
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    # A short poll keeps shutdown() quick.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ml-100k.zip", answered
    finally:
        server.shutdown()
        server.server_close()


def test_a_body_cut_every_time_spends_one_retry_budget(
    tiny_zip: Path, tmp_path: Path, slept: list[float]
) -> None:
    """Regression: a cut body was retried by a hand-written loop with its own backoff.

    That loop slept even after its last attempt, before giving up. Now the cut is charged to the
    urllib3 ``Retry`` budget: retries=2 means 3 requests in all, and no wait after the last one.
    """
    cache = tmp_path / "cache"
    payload = tiny_zip.read_bytes()
    with (
        scripted_server(["cut"], payload) as (url, answered),
        pytest.raises(UserError, match="kept failing"),
    ):
        A.fetch_archive(ML100K, cache, url, sha256(tiny_zip), retries=2)
    assert answered == ["cut"] * 3
    assert len(slept) < len(answered)  # waits only between attempts
    assert files_in(cache) == []  # no .part file left behind


def test_5xx_and_cut_bodies_share_one_retry_budget(
    tiny_zip: Path, tmp_path: Path, slept: list[float]
) -> None:
    """Regression: two stacked retry layers made up to (retries + 1) ** 2 requests.

    urllib3 retried 5xx inside each pass of a hand-written loop that retried cut bodies, so a
    server answering 503, 503, then a cut body was asked 9 times with retries=2 instead of 3.
    """
    cache = tmp_path / "cache"
    payload = tiny_zip.read_bytes()
    with (
        scripted_server(["503", "503", "cut"], payload) as (url, answered),
        pytest.raises(UserError, match="kept failing"),
    ):
        A.fetch_archive(ML100K, cache, url, sha256(tiny_zip), retries=2)
    assert answered == ["503", "503", "cut"]
    assert files_in(cache) == []


def test_a_body_cut_once_is_downloaded_again_and_verified(
    tiny_zip: Path, tmp_path: Path, slept: list[float]
) -> None:
    """Regression guard for the single retry budget: charging a cut body to it still retries."""
    cache = tmp_path / "cache"
    with scripted_server(["cut", "ok"], tiny_zip.read_bytes()) as (url, answered):
        fetched = A.fetch_archive(ML100K, cache, url, sha256(tiny_zip), retries=2)
    assert answered == ["cut", "ok"]
    assert (fetched.checksum, fetched.verified, fetched.cached) == (sha256(tiny_zip), True, False)
    assert fetched.path.read_bytes() == tiny_zip.read_bytes()
    assert files_in(cache) == [fetched.path]


def test_http_503_is_retried_within_the_budget_then_named(
    tiny_zip: Path, tmp_path: Path, slept: list[float]
) -> None:
    """Regression guard for the single retry budget: urllib3 still retries 5xx, and only it.

    With the stacked loop gone, a server that keeps answering 503 is asked retries + 1 times.
    """
    cache = tmp_path / "cache"
    payload = tiny_zip.read_bytes()
    with (
        scripted_server(["503"], payload) as (url, answered),
        pytest.raises(UserError, match="HTTP 503"),
    ):
        A.fetch_archive(ML100K, cache, url, sha256(tiny_zip), retries=2)
    assert answered == ["503"] * 3
    assert files_in(cache) == []


def test_local_path_is_used_in_place(tiny_zip: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fetched = A.fetch_archive(ML100K, cache, str(tiny_zip), sha256(tiny_zip))
    assert fetched.path == tiny_zip.resolve()
    assert (fetched.verified, fetched.cached) == (True, False)
    assert not cache.exists()
    with pytest.raises(UserError, match="checksum mismatch"):
        A.fetch_archive(ML100K, cache, str(tiny_zip), "md5:" + "0" * 32)
    with pytest.raises(UserError, match="not an existing file"):
        A.fetch_archive(ML100K, cache, str(tmp_path / "nope.zip"))


def test_file_url_is_copied_into_the_cache(tiny_zip: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    url = tiny_zip.as_uri()
    fetched = A.fetch_archive(ML100K, cache, url, sha256(tiny_zip))
    assert fetched.path.parent == cache / "ml-100k"
    assert fetched.path.read_bytes() == tiny_zip.read_bytes()
    assert fetched.verified and fetched.source == url
    with pytest.raises(UserError, match="no such file"):
        A.fetch_archive(ML100K, tmp_path / "c2", (tmp_path / "nope.zip").as_uri())
    assert files_in(tmp_path / "c2") == []


def test_unsupported_scheme_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unsupported URL scheme"):
        A.fetch_archive(ML100K, tmp_path, "ftp://example.invalid/ml-100k.zip")


# --- extract ---------------------------------------------------------------------------------


def test_extract_writes_the_dataset_files_flat(tiny_zip: Path, tmp_path: Path) -> None:
    out = A.extract(ML100K, tiny_zip, tmp_path / "out")
    assert out == [tmp_path / "out" / n for n in ("u.data", "u.item", "u.user")]
    with zipfile.ZipFile(tiny_zip) as zf:
        for path in out:
            assert path.read_bytes() == zf.read(f"ml-100k/{path.name}")


@pytest.mark.parametrize("folder", ["", "ml-1m", "data/ml-100k"])
def test_extract_refuses_another_layout(tmp_path: Path, folder: str) -> None:
    archive = write_zip(tmp_path / "a.zip", ml100k_files(), folder=folder)
    with pytest.raises(UserError, match="not in the ml-100k layout"):
        A.extract(ML100K, archive, tmp_path / "out")


def test_extract_refuses_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"<html>not found</html>")
    with pytest.raises(UserError, match="not a readable zip"):
        A.extract(ML100K, archive, tmp_path / "out")


@pytest.mark.parametrize(
    "member",
    ["../evil", "ml-100k/../../evil", "/tmp/recflow-evil", "C:/evil", "ml-100k\\..\\..\\evil"],
)
def test_extract_refuses_members_outside_the_target(tmp_path: Path, member: str) -> None:
    archive = write_zip(tmp_path / "a.zip", ml100k_files())
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(member, b"pwned")
    dest = tmp_path / "deep" / "out"
    with pytest.raises(UserError, match="outside the target folder"):
        A.extract(ML100K, archive, dest)
    assert files_in(tmp_path / "deep") == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/recflow-evil").exists()


def test_extract_refuses_a_zip_bomb(tmp_path: Path) -> None:
    files = ml100k_files()
    files["u.data"] = bytes(30 * A.MB)  # 30 MB of zeros, ~30 KB compressed; the limit is 20 MB
    archive = write_zip(tmp_path / "bomb.zip", files)
    assert archive.stat().st_size < A.MB
    with pytest.raises(UserError, match="refusing to extract"):
        A.extract(ML100K, archive, tmp_path / "out")
    assert files_in(tmp_path / "out") == []


def _lie_about_size(archive: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size of ``member`` in both its local and central headers."""
    raw = bytearray(archive.read_bytes())
    name = member.encode()
    for sig, size_at, name_len_at, name_at in (
        (b"PK\x03\x04", 22, 26, 30),
        (b"PK\x01\x02", 24, 28, 46),
    ):
        at = raw.find(sig)
        while at != -1:
            n = struct.unpack_from("<H", raw, at + name_len_at)[0]
            if raw[at + name_at : at + name_at + n] == name:
                struct.pack_into("<I", raw, at + size_at, size)
            at = raw.find(sig, at + 1)
    archive.write_bytes(raw)


def test_extract_refuses_a_zip_whose_header_lies_about_size(tmp_path: Path) -> None:
    # Regression: zipfile's "Bad CRC-32" escaped as BadZipFile, not a one-line UserError.
    files = ml100k_files()
    files["u.data"] = bytes(30 * A.MB)
    archive = write_zip(tmp_path / "liar.zip", files)
    _lie_about_size(archive, "ml-100k/u.data", 1000)
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("ml-100k/u.data").file_size == 1000  # the declared-size check passes
    with pytest.raises(UserError, match="is damaged"):
        A.extract(ML100K, archive, tmp_path / "out")
    assert not (tmp_path / "out" / "u.data").exists()


# --- the real files --------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_ml100k_in_the_official_layout(shared_ml100k: Path, tmp_path: Path) -> None:
    files = {n: (shared_ml100k / n).read_bytes() for n in ("u.data", "u.item", "u.user")}
    archive = write_zip(tmp_path / "ml-100k.zip", files, folder="ml-100k")
    fetched = A.fetch_archive(ML100K, tmp_path / "cache", str(archive), sha256(archive))
    folder = tmp_path / "raw"
    A.extract(ML100K, fetched.path, folder)
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
