"""The one exception type users see: the CLI prints its message and exits non-zero."""


class QmtganError(Exception):
    """A user-facing problem (bad input, missing file, mismatch). The message names it."""
