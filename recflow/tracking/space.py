"""Disk space for a run's artifacts: checked before logging, and named when a write runs out.

In: files about to be logged, or an ``OSError`` raised while writing. Out: ``UserError``s.
"""

from __future__ import annotations

import errno
import os
import urllib.parse
from pathlib import Path

import mlflow

from recflow import disk
from recflow.errors import UserError


def artifact_folder() -> Path | None:
    """The active run's artifact folder when it is on a local filesystem (else None: a tracking
    server stores the artifacts and reports its own errors)."""
    parsed = urllib.parse.urlparse(mlflow.get_artifact_uri())
    return Path(parsed.path) if parsed.scheme in ("", "file") else None


def require_for_artifacts(what: str, *local: Path) -> None:
    """Check that ``local`` (files or folders about to be logged) fit in the artifact folder."""
    folder = artifact_folder()
    if folder is not None:
        disk.require(folder, sum(disk.tree_bytes(p) for p in local), what)


def no_space(e: OSError) -> UserError:
    """The one-line error for a write that ran out of space after it started (inside a run, a
    write that names no file is taken to be the run's artifacts)."""
    where = Path(e.filename) if e.filename else None
    if where is None and mlflow.active_run() is not None:
        where = artifact_folder()
    place = f" writing {where} ({disk.size(disk.free_bytes(where))} free there)" if where else ""
    return UserError(f"{os.strerror(e.errno or errno.ENOSPC).lower()}{place}; free some space")
