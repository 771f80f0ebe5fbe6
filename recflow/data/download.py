"""Downloads: checksums, HTTP with retries, and the local cache with its partial files.

In: a ``DatasetSpec`` (and optionally a URL or path and a checksum overriding its own), or any
file's path or URL. Out: a verified file in the local cache, or the user's own file in place
(``Fetched``); ``extract`` unpacks a MovieLens zip, ``interactions`` reads a file of one's own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from recflow import disk
from recflow.data.datasets import DatasetSpec
from recflow.errors import UserError, relative_to
from recflow.failpoints import failpoint
from recflow.processes import pid_alive

log = logging.getLogger(__name__)

MB = 1024 * 1024


def parse_checksum(checksum: str) -> tuple[str, str]:
    """Split ``"sha256:<hex>"`` / ``"md5:<hex>"`` into (algorithm, lower-case hex digest)."""
    algo, sep, digest = checksum.strip().partition(":")
    algo, digest = algo.lower(), digest.lower()
    lengths = {"sha256": 64, "md5": 32}
    valid_hex = all(c in "0123456789abcdef" for c in digest)
    if not sep or algo not in lengths or len(digest) != lengths[algo] or not valid_hex:
        raise UserError(
            f"checksum {checksum!r} is not of the form 'sha256:<64 hex>' or 'md5:<32 hex>'"
        )
    return algo, digest


def file_digest(path: Path, algo: str) -> str:
    """Hex digest of a file, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()


def _retry_budget(retries: int) -> Retry:
    """A download's one retry budget: ``retries`` retries in all, whatever fails."""
    # urllib3 retries connection errors and 5xx/429 with exponential backoff; 4xx are final.
    # raise_on_status=False hands the last 5xx back once the budget is spent, so we can name it.
    return Retry(
        total=retries, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET",), raise_on_status=False,
    )  # fmt: skip


def _session(retry: Retry) -> requests.Session:
    # A fresh adapter starts from ``retry`` as it is, history included: a retried download carries
    # on with what is left of the budget, and the backoff keeps growing, instead of starting over.
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def _save(resp: requests.Response, dest: Path, algo: str) -> str:
    """Write the body of ``resp`` to ``dest`` with a progress bar; return its digest."""
    h = hashlib.new(algo)
    total = int(resp.headers.get("content-length") or 0) or None
    name = dest.name.split(".part")[0]
    if total:
        disk.require(dest.parent, total, f"the archive {name}")
    with open(dest, "wb") as f, tqdm(
        total=total, unit="B", unit_scale=True, desc=name, disable=None,
    ) as bar:  # fmt: skip
        for chunk in resp.iter_content(chunk_size=1 << 20):
            f.write(chunk)
            failpoint("download:mid-archive")
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _stream_to(url: str, dest: Path, algo: str, retries: int) -> str:
    """Download ``url`` into ``dest``; return its digest.

    ``retries`` is one budget for the whole download: urllib3 spends it on connection errors and
    5xx, and a body cut mid-stream (which urllib3 cannot see) is charged to what is left of it.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        src = Path(urllib.request.url2pathname(parsed.path))
        if not src.is_file():
            raise UserError(f"no such file: {src}; check the URL")
        disk.require(dest.parent, src.stat().st_size, f"the archive {src.name}")
        shutil.copyfile(src, dest)
        return file_digest(dest, algo)
    retry = _retry_budget(retries)
    while True:
        try:
            with (
                _session(retry) as session,
                session.get(url, stream=True, timeout=(10, 60)) as resp,
            ):
                if resp.status_code != 200:
                    raise UserError(
                        f"downloading {url} failed with HTTP {resp.status_code}; "
                        "check data_url or your network"
                    )
                # The response carries what urllib3's own retries left of the budget.
                retry = resp.raw.retries or retry
                return _save(resp, dest, algo)
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ReadTimeout) as e:
            try:
                retry = retry.increment(method="GET", url=url, error=e)
            except MaxRetryError:
                raise UserError(f"downloading {url} kept failing ({e}); try again later") from e
            log.warning("download of %s interrupted (%s); retrying", url, e)
            retry.sleep()
        except requests.exceptions.RequestException as e:
            raise UserError(
                f"cannot reach {url}: {type(e).__name__}; check data_url or your network"
            ) from e


@dataclass(frozen=True)
class Fetched:
    """A verified archive on disk and where it came from."""

    path: Path
    source: str
    checksum: str  # "<algo>:<hex>" actually computed
    verified: bool  # True when it matched a known checksum
    cached: bool  # reused from the cache rather than fetched now
    owned: bool = True  # lives in our cache (False: the user's own file, used in place)

    def discard(self) -> None:
        """Remove a rejected archive from the cache, so no later run reuses it; a user's own
        file is never touched."""
        if self.owned:
            self.path.unlink(missing_ok=True)


def fetch_archive(
    spec: DatasetSpec, cache_dir: Path, data_url: str = "", checksum: str = "", retries: int = 3
) -> Fetched:
    """Return a verified local copy of the dataset's zip, downloading it only when needed."""
    expected = checksum or ("" if data_url else spec.checksum or "")
    return fetch_file(
        data_url or spec.url, cache_dir / spec.name, expected, retries,
        default_name=f"{spec.name}.zip", custom=bool(data_url),
    )  # fmt: skip


def fetch_file(
    source: str, folder: Path, checksum: str = "", retries: int = 3, *,
    default_name: str = "data", custom: bool = True, param: str = "data_url",
) -> Fetched:  # fmt: skip
    """Return a verified local copy of ``source`` (a path, ``file://`` or ``http(s)://`` URL):
    a local path is used in place, a URL is downloaded into ``folder``.

    The download is written to a temporary file beside its final name and renamed into place
    only once its checksum matches, so the cache never holds a partial or corrupt file. Without
    ``checksum`` the file is fetched again (nothing proves a cached copy is still the source's);
    its sha256 is computed either way. ``custom`` sources get a name of their own in ``folder``,
    apart from an official file of the same name; ``param`` names the source in messages.
    """
    expected = parse_checksum(checksum) if checksum else None
    algo = expected[0] if expected else "sha256"

    def check(digest: str, what: str) -> None:
        if expected and digest != expected[1]:
            raise UserError(
                f"checksum mismatch for {what}: expected {algo}:{expected[1]}, got {algo}:{digest}; "
                "the file is corrupt or not the one you meant (pass the right checksum)"
            )

    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("", "file") and not source.startswith("file:"):
        # A local path is used in place, never copied into the cache.
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise UserError(
                f"{param} {source!r} is not an existing file or an http(s)/file URL{relative_to(source)}"
            )
        digest = file_digest(path, algo)
        check(digest, str(path))
        return Fetched(
            path, str(path), f"{algo}:{digest}", expected is not None, cached=False, owned=False
        )
    if parsed.scheme not in ("http", "https", "file"):
        raise UserError(f"unsupported URL scheme in {source!r}; use http(s)://, file:// or a path")

    name = PurePosixPath(parsed.path).name or default_name
    if custom:  # keep custom sources apart from the official archive of the same name
        name = f"{hashlib.sha1(source.encode()).hexdigest()[:10]}-{name}"
    target = folder / name
    # Reuse the cache only when we can prove it is the right file.
    if expected and target.is_file() and file_digest(target, algo) == expected[1]:
        log.info("using cached %s", target)
        return Fetched(target, source, f"{algo}:{expected[1]}", True, cached=True)

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_parts(target)
    # Named by host and process, so that a later run can tell a dead download's leftover from
    # one in progress (a killed process runs no ``finally``).
    fd, tmp_name = tempfile.mkstemp(prefix=f"{target.name}.part-{_me()}-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        digest = _stream_to(source, tmp, algo, retries)
        check(digest, source)
        os.replace(tmp, target)
    except OSError as e:
        if e.errno not in disk.NO_SPACE:
            raise
        # Known sizes were checked before the first byte; this one was not announced.
        raise UserError(
            f"no space left in {target.parent} for the archive {name} "
            f"({disk.size(tmp.stat().st_size)} written, then the disk was full)"
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    return Fetched(target, source, f"{algo}:{digest}", expected is not None, cached=False)


def _me() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _remove_dead_parts(target: Path) -> None:
    """Delete partial downloads of ``target`` left by processes of this host that are gone."""
    host = socket.gethostname()
    for part in target.parent.glob(f"{target.name}.part-*"):
        # <host>-<pid>-<random>: the host may hold dashes, mkstemp's random part never does.
        owner_pid = part.name.removeprefix(f"{target.name}.part-").rpartition("-")[0]
        owner, _, pid = owner_pid.rpartition("-")
        if owner == host and pid.isdigit() and not pid_alive(int(pid)):
            log.info("removing %s, left by a download that was killed", part)
            part.unlink(missing_ok=True)
