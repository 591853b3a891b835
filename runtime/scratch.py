"""Scratch folders: deleted when done, unless QMTGAN_KEEP_TMP is set (to anything but empty
or 0), for a post-mortem look at what a failed step left (its path is printed on stderr)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator


def keep_scratch() -> bool:
    return os.environ.get("QMTGAN_KEEP_TMP", "") not in ("", "0")


def scratch_path(prefix: str = "qmtgan-") -> Path:
    """A scratch folder the caller removes (with `discard`)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def discard(path: str | os.PathLike) -> None:
    if keep_scratch():
        print(f"qmtgan: kept scratch folder {path} (QMTGAN_KEEP_TMP)", file=sys.stderr)
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(prefix: str = "qmtgan-") -> Iterator[str]:
    path = scratch_path(prefix)
    try:
        yield str(path)
    finally:
        discard(path)
