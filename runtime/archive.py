"""Unpacking a bundle archive (.tar, .tar.gz, .tar.bz2, .tar.xz) that came from elsewhere.

The archive is read as a stream, member by member, and each header is checked the moment it
is read, before its data: a plain relative name under one top folder, a regular file or a
folder, no duplicate, and the declared sizes within MAX_BYTES. The decompressed stream itself
is bounded as it is produced (MAX_BYTES in all, at most MAX_RATIO times the compressed bytes
read so far once past RATIO_FLOOR), so a bomb stops within a few MiB of crossing a limit,
whatever its headers claim. Files are written by this module, never by tarfile's extraction:
no link, device, permission bit or owner from the archive reaches the disk.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from qmtgan.runtime.errors import QmtganError

# Far above any real bundle (a TVM module and its smoke tiles are megabytes).
MAX_BYTES = 1 << 30
MAX_MEMBERS = 1000
# A model compresses a few times at most; zeros compress a thousand times (gzip) or a million
# (bzip2). Below the floor any ratio passes, so small, very regular bundles still load.
MAX_RATIO = 100
RATIO_FLOOR = 16 << 20
CHUNK = 1 << 20

_OPENERS = ((b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")),
            (b"BZh", lambda raw: bz2.BZ2File(raw, "rb")),
            (b"\xfd7zXZ\x00", lambda raw: lzma.LZMAFile(raw, "rb")))
_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


class _BoundedStream(io.RawIOBase):
    """The decompressed archive, refused as soon as it outgrows MAX_BYTES or MAX_RATIO."""

    def __init__(self, archive: Path, raw, stream):
        self.archive, self.raw, self.stream, self.produced = archive, raw, stream, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else n
        out = bytearray()
        while len(out) < n:  # in chunks: a huge request is checked as it grows, not after
            part = self.stream.read(min(n - len(out), CHUNK))
            if not part:
                break
            out += part
            self.produced += len(part)
            self._check()
        return bytes(out)

    def _check(self) -> None:
        if self.produced > MAX_BYTES + CHUNK:  # headers and padding ride on top of the data
            raise QmtganError(f"{self.archive}: decompresses to more than {MAX_BYTES} bytes, more than a "
                              "bundle may hold; refused")
        consumed = max(self.raw.tell(), 1)
        if self.produced > RATIO_FLOOR and self.produced > MAX_RATIO * consumed:
            raise QmtganError(f"{self.archive}: {self.produced} bytes from {consumed} compressed, a ratio "
                              f"above {MAX_RATIO}: a compression bomb, not a bundle; refused")


def _decompressed(archive: Path, raw) -> io.RawIOBase:
    head = raw.read(6)
    raw.seek(0)
    for magic, opener in _OPENERS:
        if head.startswith(magic):
            return _BoundedStream(archive, raw, opener(raw))
    return _BoundedStream(archive, raw, raw)


def _member_parts(archive: Path, member: tarfile.TarInfo) -> tuple[str, ...]:
    name = member.name
    parts = PurePosixPath(name).parts
    if (not parts or name.startswith("/") or ".." in parts or "\\" in name or "\x00" in name
            or len(parts) > 2):
        raise QmtganError(f"{archive}: member '{name}' would escape the target folder or is not a "
                          "file of the bundle folder")
    if not (member.isfile() or member.isdir()):
        raise QmtganError(f"{archive}: member '{name}' is a link or device; refused")
    return parts


def safe_extract(archive: Path, into: Path) -> Path:
    """Unpack a checked bundle archive into `into`; return its one top folder."""
    archive, into = Path(archive), Path(into)
    seen: set[tuple[str, ...]] = set()
    top: str | None = None
    declared = 0
    try:
        with open(archive, "rb") as raw, tarfile.open(fileobj=_decompressed(archive, raw), mode="r|") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise QmtganError(f"{archive}: more than {MAX_MEMBERS} members, more than a bundle has")
                parts = _member_parts(archive, member)
                if parts in seen:
                    raise QmtganError(f"{archive}: member '{member.name}' appears twice")
                seen.add(parts)
                if top is None:
                    top = parts[0]
                elif parts[0] != top:
                    raise QmtganError(
                        f"{archive}: expected one bundle folder, found {top!r} and {parts[0]!r}")
                declared += member.size if member.isfile() else 0
                if declared > MAX_BYTES:
                    raise QmtganError(f"{archive}: members declare {declared} bytes, more than a bundle may "
                                      f"hold ({MAX_BYTES})")
                _write_member(archive, tar, member, into.joinpath(*parts))
    except QmtganError:
        raise
    except _ERRORS as exc:
        raise QmtganError(f"{archive}: not a readable bundle archive ({exc})") from exc
    if top is None:
        raise QmtganError(f"{archive}: an empty archive, not a bundle")
    folder = into / top
    if not folder.is_dir():
        raise QmtganError(f"{archive}: its top member '{top}' is not a folder")
    return folder


def _write_member(archive: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    if member.isdir():
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        return
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    source = tar.extractfile(member)
    written = 0
    with os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        while block := source.read(CHUNK):
            out.write(block)
            written += len(block)
    if written != member.size:
        raise QmtganError(
            f"{archive}: member '{member.name}' is cut short ({written} of {member.size} bytes)")
