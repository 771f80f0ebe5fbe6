"""Running out of disk space: a one-line error naming the place and the space needed.

In: a folder about to be written and the bytes it will take. Out: ``UserError``s (which a step
turns into one line and a FAILED run). Writes whose size is known are checked before they
start, so nothing partial is written; ``recflow.tracking.space`` does the same for a run's
artifacts and names a write that ran out of space mid-way.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from recflow.errors import UserError

# Full device, exhausted quota, or a file-size limit (ulimit -f).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def size(n: int) -> str:
    """Bytes for people: 512 B, 40.0 KiB, 3.2 MiB, 1.5 GiB."""
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or would, once created)."""
    for folder in (path, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return 0


def tree_bytes(path: Path) -> int:
    """Bytes of a file or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def require(folder: Path, needed: int, what: str) -> None:
    """Refuse to start writing ``needed`` bytes of ``what`` into ``folder`` if they cannot fit."""
    free = free_bytes(folder)
    if needed > free:
        raise UserError(
            f"not enough disk space for {what} in {folder}: needs {size(needed)}, {size(free)} free"
        )
