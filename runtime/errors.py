"""The one exception type users see: the CLI prints its message and exits non-zero."""


class QmtganError(Exception):
    """A user-facing problem (bad input, missing file, mismatch). The message names it;
    `detail` keeps what is too long for a message (a failed command's whole stderr) for the
    records that want it."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail
