"""The one exception type the steps turn into a one-line error message and a non-zero exit, and
the one line of another exception such a message quotes."""


class UserError(Exception):
    """A problem the user can fix: bad input, unreachable source, wrong run ID."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (drivers append pages of context), or its
    type's name when it has none."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
