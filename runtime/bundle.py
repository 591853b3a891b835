"""Deployment bundles: a folder (and a .tar.gz of it) that is copied to a board.

    manifest.json   schema, backend, precision, target, model file, sha256 of every file,
                    input/output shape, dtype and quantization, band order, normalization,
                    tile size, SNRs measured at conversion, tool versions
    <model file>    model.tflite | model.onnx | ...
"""

from __future__ import annotations

import atexit
import json
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from qmtgan.runtime.atomic import atomic_dir, atomic_file
from qmtgan.runtime.backends import Backend, load_backend
from qmtgan.runtime.digest import load_record, sha256_file, verify_files
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.scratch import discard, scratch_path
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.scene import BAND_ORDER

SCHEMA = "qmtgan.bundle/1"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """What the device side reads from a bundle's manifest.json, checked once when the bundle
    is opened; `record` keeps the whole JSON (measured SNRs, reports) for reports."""
    name: str
    backend: str
    precision: str
    target: str
    model_file: str
    files: dict                      # file name -> sha256
    tile_size: int
    normalization: Normalization
    generator: dict
    smoke: dict | None = None        # the SNR a board must reproduce on smoke.npz
    elf_machine: str | None = None   # TVM modules: the architecture they were built for
    record: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_record(cls, d: dict, where: str) -> "Manifest":
        def get(key: str, kind: type | tuple, required: bool = True):
            value = d.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
                raise QmtganError(f"{where}: manifest key '{key}' is missing or not "
                                  f"{getattr(kind, '__name__', kind)} (found {value!r})")
            return value

        files = get("files", dict)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise QmtganError(f"{where}: manifest 'files' must map file names to sha256 strings")
        for name in files:  # plain names inside the bundle folder: nothing elsewhere is read
            if (
                name in ("", ".", "..", "manifest.json")
                or Path(name).name != name
                or "\\" in name
                or "\x00" in name
            ):
                raise QmtganError(
                    f"{where}: manifest lists file {name!r}, not a plain file name in the bundle"
                )
        tile = get("tile_size", int)
        if not 1 <= tile <= 8192:
            raise QmtganError(f"{where}: manifest tile_size {tile} is not in 1..8192")
        if d.get("bands") != list(BAND_ORDER):
            raise QmtganError(f"{where}: band order {d.get('bands')} differs from {list(BAND_ORDER)}")
        manifest = cls(
            get("name", str),
            get("backend", str),
            str(d.get("precision", "")),
            str(d.get("target", "")),
            get("model_file", str),
            files,
            tile,
            Normalization.from_dict(get("normalization", dict)),
            get("generator", dict),
            get("smoke", dict, False),
            get("elf_machine", str, False),
            d,
        )
        if manifest.model_file not in files:
            raise QmtganError(f"{where}: the manifest's model file is not among its checked files")
        return manifest


@dataclass
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def tile(self) -> int:
        return self.manifest.tile_size

    @property
    def normalization(self) -> Normalization:
        return self.manifest.normalization

    def backend(self, threads: int | None = None, xnnpack: bool = True) -> Backend:
        return load_backend(self.manifest.backend, self.path / self.manifest.model_file, threads, xnnpack)


def write_bundle(dest: str | os.PathLike, manifest: dict, files: dict[str, bytes]) -> Path:
    """Write the bundle folder atomically, then dest.tar.gz next to it."""
    dest = Path(dest)
    manifest = {"schema": SCHEMA, **manifest, "bands": list(BAND_ORDER)}
    with atomic_dir(dest) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        manifest["files"] = {name: sha256_file(tmp / name) for name in files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    with atomic_file(dest.with_name(dest.name + ".tar.gz")) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(dest, arcname=dest.name)
    return dest


# Far above any real bundle (a TVM module and its smoke tile are megabytes): an archive that
# declares more is refused before anything is written.
MAX_ARCHIVE_BYTES = 1 << 30
MAX_ARCHIVE_MEMBERS = 1000


def _check_members(archive: Path, members: list, into: Path) -> None:
    """Refuse absolute paths, '..', links, devices, duplicates and oversized archives."""
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise QmtganError(
            f"{archive}: {len(members)} members, more than a bundle has ({MAX_ARCHIVE_MEMBERS})"
        )
    seen = set()
    for m in members:
        parts = Path(m.name).parts
        target = (into / m.name).resolve()
        if (
            not parts
            or m.name.startswith("/")
            or ".." in parts
            or not str(target).startswith(str(into.resolve()))
        ):
            raise QmtganError(f"{archive}: member '{m.name}' would escape the target folder")
        if not (m.isfile() or m.isdir()):
            raise QmtganError(f"{archive}: member '{m.name}' is a link or device; refused")
        if parts in seen:
            raise QmtganError(f"{archive}: member '{m.name}' appears twice")
        seen.add(parts)
    declared = sum(m.size for m in members if m.isfile())
    if declared > MAX_ARCHIVE_BYTES:
        raise QmtganError(f"{archive}: members declare {declared} bytes, more than a bundle may hold "
                          f"({MAX_ARCHIVE_BYTES})")


def _extract(tar: tarfile.TarFile, members: list, into: Path) -> None:
    """Extract checked members with tarfile's "data" filter, or where Python predates it
    (before 3.11.4, e.g. Debian 12's 3.11.2) with what it adds to `_check_members`: no setuid,
    setgid or sticky bits, no group or other write permission, owned by this user."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(into, members=members, filter="data")
        return
    for m in members:
        m.mode = (m.mode & 0o755) | (0o700 if m.isdir() else 0o600)
        m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
    tar.extractall(into, members=members)


def _safe_extract(archive: Path, into: Path) -> Path:
    """Extract a checked archive (`_check_members`); return its one top folder."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            _check_members(archive, members, into)
            _extract(tar, members, into)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise QmtganError(f"{archive}: not a readable bundle archive ({exc})") from exc
    tops = {Path(m.name).parts[0] for m in members}
    if len(tops) != 1:
        raise QmtganError(f"{archive}: expected one bundle folder, found {sorted(tops)}")
    top = into / tops.pop()
    if not top.is_dir():
        raise QmtganError(f"{archive}: its top member '{top.name}' is not a folder")
    return top


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Open a bundle folder or .tar.gz and verify every file's sha256."""
    path = Path(path)
    if path.is_file():
        scratch = scratch_path("qmtgan-bundle-")
        atexit.register(discard, scratch)  # the extracted copy lives as long as the process
        path = _safe_extract(path, scratch)
    manifest = Manifest.from_record(load_record(path / MANIFEST, SCHEMA, "a bundle manifest"), str(path))
    verify_files(path, manifest.files)
    return Bundle(path, manifest)
