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
from dataclasses import dataclass
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


@dataclass
class Bundle:
    path: Path
    manifest: dict

    @property
    def tile(self) -> int:
        return int(self.manifest["tile_size"])

    @property
    def normalization(self) -> Normalization:
        return Normalization.from_dict(self.manifest["normalization"])

    def backend(self, threads: int | None = None, xnnpack: bool = True) -> Backend:
        return load_backend(self.manifest["backend"], self.path / self.manifest["model_file"], threads, xnnpack)


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


def _safe_extract(archive: Path, into: Path) -> Path:
    """Extract refusing absolute paths, '..', links and devices; return the one top folder."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                target = (into / m.name).resolve()
                if m.name.startswith("/") or ".." in Path(m.name).parts or not str(target).startswith(str(into.resolve())):
                    raise QmtganError(f"{archive}: member '{m.name}' would escape the target folder")
                if not (m.isfile() or m.isdir()):
                    raise QmtganError(f"{archive}: member '{m.name}' is a link or device; refused")
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise QmtganError(f"{archive}: not a readable bundle archive ({exc})") from exc
    tops = {Path(m.name).parts[0] for m in members}
    if len(tops) != 1:
        raise QmtganError(f"{archive}: expected one bundle folder, found {sorted(tops)}")
    return into / tops.pop()


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Open a bundle folder or .tar.gz and verify every file's sha256."""
    path = Path(path)
    if path.is_file():
        scratch = scratch_path("qmtgan-bundle-")
        atexit.register(discard, scratch)  # the extracted copy lives as long as the process
        path = _safe_extract(path, scratch)
    manifest = load_record(path / MANIFEST, SCHEMA, "a bundle manifest")
    verify_files(path, manifest.get("files", {}))
    if manifest.get("model_file") not in manifest.get("files", {}):
        raise QmtganError(f"{path}: the manifest's model file is not among its checked files")
    if manifest.get("bands") != list(BAND_ORDER):
        raise QmtganError(f"{path}: band order {manifest.get('bands')} differs from {list(BAND_ORDER)}")
    return Bundle(path, manifest)
