"""Silence what TensorFlow prints from C++ (its converters, its import) straight to file
descriptors 1 and 2, past Python's sys.stdout, and its Python warnings, while keeping it all
for a failure."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from typing import Iterator


@contextlib.contextmanager
def native_output_captured() -> Iterator[None]:
    """Route fds 1 and 2 to a temporary file for the block; if the block raises, what it printed
    goes to stderr before the exception, so a failed conversion still explains itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("ignore")
                yield
        except BaseException:
            _restore(saved)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        else:
            _restore(saved)


def _restore(saved: tuple[int, int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in zip((1, 2), saved):
        with contextlib.suppress(OSError):
            os.dup2(copy, fd)
    for copy in saved:
        with contextlib.suppress(OSError):
            os.close(copy)
