"""Write-then-rename helpers so a failed or killed run never leaves partial output behind.

A write goes to `.<name>.tmp-<pid>` next to its destination and is renamed onto it only when
complete. A process killed mid-write (kill -9 skips every cleanup) leaves that temporary behind
under a name no reader takes for the real file; the next write of the same destination removes
temporaries whose process is gone. Fault-injection tests set QMTGAN_KILL_BEFORE_RENAME to a
glob of destination names: the process then kills itself with SIGKILL just before the rename,
with everything written, which is the last moment a kill can land."""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import shutil
import signal
from pathlib import Path
from typing import Iterator


def _temp_sibling(dest: Path) -> Path:
    _remove_stale(dest)
    return dest.with_name(f".{dest.name}.tmp-{os.getpid()}")


def _remove_stale(dest: Path) -> None:
    """Temporaries of `dest` left by processes that no longer exist (killed mid-write)."""
    for tmp in dest.parent.glob(f".{glob.escape(dest.name)}.*-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _failpoint(dest: Path) -> None:
    pattern = os.environ.get("QMTGAN_KILL_BEFORE_RENAME")
    if pattern and fnmatch.fnmatch(dest.name, pattern):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(dest)
    try:
        yield tmp
        _failpoint(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory; it replaces ``dest`` as a whole only on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _failpoint(dest)
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(dest: str | os.PathLike, text: str) -> None:
    with atomic_file(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
