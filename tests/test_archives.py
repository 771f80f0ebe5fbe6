"""Checksums, verified and cached downloads (one retry budget), and safe zip extraction."""

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

import pytest

from recflow.data import datasets as D
from recflow.data import download as A
from recflow.data import extract as X
from recflow.errors import UserError
from recflow.testing.archives import ml100k_files, write_zip
from tests.helpers import free_port, sha256

ML100K = D.get_spec("ml-100k")


def files_in(folder: Path) -> list[Path]:
    """Every file below ``folder`` (none if it does not exist)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- checksums -------------------------------------------------------------------------------


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
    urllib3 ``Retry`` budget: retries=3 means 4 requests in all, waits that grow between them
    (the budget's exponential backoff), and no wait after the last one.
    """
    cache = tmp_path / "cache"
    payload = tiny_zip.read_bytes()
    with (
        scripted_server(["cut"], payload) as (url, answered),
        pytest.raises(UserError, match="kept failing"),
    ):
        A.fetch_archive(ML100K, cache, url, sha256(tiny_zip), retries=3)
    assert answered == ["cut"] * 4
    assert len(slept) < len(answered)  # waits only between attempts
    # backoff_factor 0.5: urllib3 retries the first failure at once, then waits 0.5 * 2 ** (n - 1)
    # seconds after the n-th failure in a row; none after the 4th, the last.
    assert slept == [1.0, 2.0]
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
    assert slept == [1.0]  # one backoff, after the second 503; none after the cut, the last
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
    out = X.extract(ML100K, tiny_zip, tmp_path / "out")
    assert out == [tmp_path / "out" / n for n in ("u.data", "u.item", "u.user")]
    with zipfile.ZipFile(tiny_zip) as zf:
        for path in out:
            assert path.read_bytes() == zf.read(f"ml-100k/{path.name}")


@pytest.mark.parametrize("folder", ["", "ml-1m", "data/ml-100k"])
def test_extract_refuses_another_layout(tmp_path: Path, folder: str) -> None:
    archive = write_zip(tmp_path / "a.zip", ml100k_files(), folder=folder)
    with pytest.raises(UserError, match="not in the ml-100k layout"):
        X.extract(ML100K, archive, tmp_path / "out")


def test_extract_refuses_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"<html>not found</html>")
    with pytest.raises(UserError, match="not a readable zip"):
        X.extract(ML100K, archive, tmp_path / "out")


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
        X.extract(ML100K, archive, dest)
    assert files_in(tmp_path / "deep") == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/recflow-evil").exists()


def test_extract_refuses_a_zip_bomb(tmp_path: Path) -> None:
    files = ml100k_files()
    files["u.data"] = bytes(30 * X.MB)  # 30 MB of zeros, ~30 KB compressed; the limit is 20 MB
    archive = write_zip(tmp_path / "bomb.zip", files)
    assert archive.stat().st_size < X.MB
    with pytest.raises(UserError, match="refusing to extract"):
        X.extract(ML100K, archive, tmp_path / "out")
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
    files["u.data"] = bytes(30 * X.MB)
    archive = write_zip(tmp_path / "liar.zip", files)
    _lie_about_size(archive, "ml-100k/u.data", 1000)
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("ml-100k/u.data").file_size == 1000  # the declared-size check passes
    with pytest.raises(UserError, match="is damaged"):
        X.extract(ML100K, archive, tmp_path / "out")
    assert not (tmp_path / "out" / "u.data").exists()
