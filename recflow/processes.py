"""Which process runs a step, and whether it is still alive.

In: nothing (this process) or a tag value written by ``process_tag``. Out: ``host:pid:start``,
where start is the process's start time in clock ticks since boot (``/proc/<pid>/stat``), so a
later process that reuses the PID is not mistaken for the original; and whether that process is
alive, when it ran on this host.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces); starttime is the 22nd field.
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


def process_tag() -> str:
    """This process as ``host:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '?'}"


def gone(tag: str) -> bool:
    """Whether the process a tag names ran on this host and no longer exists (a process on another
    host, or a malformed tag, is never called gone: we cannot know)."""
    host, _, rest = tag.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    now = _start_ticks(int(pid))
    return now is None or (start != "?" and now != start)
