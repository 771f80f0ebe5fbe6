"""The one exception type the steps turn into a one-line error message and a non-zero exit, the
one line of another exception such a message quotes, and where a relative path was looked for."""

from pathlib import Path


class UserError(Exception):
    """A problem the user can fix: bad input, unreachable source, wrong run ID."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (drivers append pages of context), or its
    type's name when it has none."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def relative_to(path: str) -> str:
    """For a message about a path not found: where a relative one was taken from (`mlflow run`
    starts each step in the project's folder, for a git URL a temporary checkout, not where the
    command was typed); "" for an absolute one."""
    if Path(path).expanduser().is_absolute():
        return ""
    return f" (a relative path is taken from {Path.cwd()}, where the step runs: give it absolute)"
