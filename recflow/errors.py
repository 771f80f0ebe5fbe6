"""The one exception type the steps turn into a one-line error message and a non-zero exit."""


class UserError(Exception):
    """A problem the user can fix: bad input, unreachable source, wrong run ID."""
