"""Deployment bundles: a folder (and a .tar.gz of it) that is copied to a board.

    manifest.json   schema, backend, precision, target, model file, sha256 of every file,
                    input/output shape, dtype and quantization, band order, normalization,
                    tile size, SNRs measured at conversion, tool versions
    <model file>    model.tflite | model.onnx | ...
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qmtgan.runtime.archive import safe_extract
from qmtgan.runtime.atomic import atomic_dir, atomic_file
from qmtgan.runtime.backends import BACKENDS, Backend, elf_machine, load_backend
from qmtgan.runtime.digest import load_record, sha256_file, verify_files
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.names import plain_name
from qmtgan.runtime.scratch import discard, scratch_path
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.scene import BAND_ORDER
from qmtgan.runtime.tiling import MAX_TILE

SCHEMA = "qmtgan.bundle/2"
OLD_SCHEMAS = ("qmtgan.bundle/1",)
MANIFEST = "manifest.json"
# The manifest's own SHA-256, over its canonical bytes without this key: a manifest edited by
# hand (or damaged) is refused, as a changed model file is by the sha256 list it carries.
DIGEST_KEY = "manifest_sha256"
MAX_MANIFEST_BYTES = 1 << 20


def canonical_bytes(record: dict) -> bytes:
    """The manifest without its digest, as sorted, compact JSON: what the digest covers."""
    body = {k: v for k, v in record.items() if k != DIGEST_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signed(record: dict) -> dict:
    """The manifest with its digest."""
    return {**record, DIGEST_KEY: hashlib.sha256(canonical_bytes(record)).hexdigest()}


def write_manifest(folder: Path, record: dict) -> None:
    """manifest.json of a bundle folder, with its digest."""
    (Path(folder) / MANIFEST).write_text(json.dumps(signed(record), indent=2))


def read_manifest(folder: Path) -> dict:
    """A bundle folder's manifest record, its schema and digest checked."""
    path = Path(folder) / MANIFEST
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise QmtganError(f"{folder}: not a bundle (no readable {MANIFEST}: {exc})") from exc
    if size > MAX_MANIFEST_BYTES:
        raise QmtganError(f"{path}: {size} bytes, larger than any manifest ({MAX_MANIFEST_BYTES}); refused")
    try:
        record = load_record(path, SCHEMA, "a bundle manifest")
    except QmtganError:
        old = _schema_of(path)
        if old in OLD_SCHEMAS:
            raise QmtganError(f"{path}: a bundle of schema {old}, made by an older qmtgan (its manifest "
                              "carries no digest); convert it again") from None
        raise
    digest = record.get(DIGEST_KEY)
    if not isinstance(digest, str) or hashlib.sha256(canonical_bytes(record)).hexdigest() != digest:
        raise QmtganError(f"{path}: the manifest fails its own sha256 check ({DIGEST_KEY}): altered or "
                          "corrupted; refused")
    return record


def _schema_of(path: Path):
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return record.get("schema") if isinstance(record, dict) else None


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
            plain_name(name, f"{where}: manifest lists file")
            if name == MANIFEST:
                raise QmtganError(f"{where}: manifest lists itself among its files")
        plain_name(get("name", str), f"{where}: manifest name")
        if get("backend", str) not in BACKENDS:
            raise QmtganError(f"{where}: unknown backend '{d['backend']}' (available: {', '.join(BACKENDS)})")
        tile = get("tile_size", int)
        if not 1 <= tile <= MAX_TILE:
            raise QmtganError(f"{where}: manifest tile_size {tile} is not in 1..{MAX_TILE}")
        if d.get("bands") != list(BAND_ORDER):
            raise QmtganError(f"{where}: band order {d.get('bands')} differs from {list(BAND_ORDER)}")
        _check_io_record(d, tile, where)
        smoke = get("smoke", dict, False)
        if smoke is not None and (not isinstance(smoke.get("file"), str) or smoke["file"] not in files
                                  or type(smoke.get("snr_db")) not in (int, float)):
            raise QmtganError(f"{where}: manifest smoke test names no checked file or no SNR ({smoke!r})")
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
            smoke,
            get("elf_machine", str, False),
            d,
        )
        if manifest.model_file not in files:
            raise QmtganError(f"{where}: the manifest's model file is not among its checked files")
        if smoke is not None and smoke["file"] == manifest.model_file:
            raise QmtganError(f"{where}: the manifest names one file as both model and smoke tiles")
        return manifest

    def to_record(self) -> dict:
        """The manifest as written: the checked fields over the rest of the record (measured
        SNRs, tool versions), so what `from_record` reads back is this very manifest."""
        typed = {"name": self.name, "backend": self.backend, "precision": self.precision,
                 "target": self.target, "model_file": self.model_file, "files": dict(self.files),
                 "tile_size": self.tile_size, "normalization": self.normalization.to_dict(),
                 "generator": self.generator, "smoke": self.smoke, "elf_machine": self.elf_machine,
                 "bands": list(BAND_ORDER)}
        record = {k: v for k, v in self.record.items() if k != DIGEST_KEY}
        return {"schema": SCHEMA, **record, **{k: v for k, v in typed.items() if v is not None}}


def _check_io_record(d: dict, tile: int, where: str) -> None:
    """The model's recorded input and output shapes, when present, must be (1, tile, tile, bands)."""
    for key in ("input", "output"):
        io_record = d.get(key)
        if io_record is None:
            continue
        shape = io_record.get("shape") if isinstance(io_record, dict) else None
        if not isinstance(shape, list) or shape != [1, tile, tile, len(BAND_ORDER)]:
            raise QmtganError(f"{where}: manifest {key} shape {shape!r} is not [1, {tile}, {tile}, "
                              f"{len(BAND_ORDER)}] (its tile_size and bands)")


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
        """The bundle's model, checked against its manifest before and after the library loads
        it; any failure of the library, loading or running, is one error naming the bundle."""
        model = self.path / self.manifest.model_file
        cls = BACKENDS[self.manifest.backend]
        with open(model, "rb") as fh:
            head = fh.read(64)
        problem = cls.file_kind(head)
        if problem is None and self.manifest.elf_machine and elf_machine(head) != self.manifest.elf_machine:
            problem = f"an ELF file for {elf_machine(head)}, the manifest says {self.manifest.elf_machine}"
        if problem:
            raise QmtganError(f"{self.path}: {self.manifest.model_file} is {problem}, not what backend "
                              f"'{cls.name}' runs")
        try:
            backend = load_backend(cls.name, model, threads, xnnpack)
        except QmtganError:
            raise
        except Exception as exc:  # the library's own parser: any error is the bundle's fault
            raise QmtganError(f"{self.path}: {cls.name} cannot load {self.manifest.model_file} "
                              f"({_first_line(exc)})") from exc
        return CheckedBackend(backend, self.path, self.tile)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


class CheckedBackend(Backend):
    """A bundle's backend whose model takes and gives (1, tile, tile, bands) tiles, as its
    manifest says; an error of the library while running becomes one error naming the bundle."""

    def __init__(self, inner: Backend, bundle_path: Path, tile: int):
        self.inner, self.bundle_path = inner, bundle_path
        self.name, self.model_path, self.threads, self.xnnpack = (
            inner.name, inner.model_path, inner.threads, inner.xnnpack)
        self.shape = (1, tile, tile, len(BAND_ORDER))
        found = inner.input_shape()
        fits = found is None or (len(found) == 4 and all(f in (None, e) for f, e in zip(found, self.shape)))
        if not fits:
            raise QmtganError(f"{bundle_path}: the model takes input {tuple(found)}, the manifest says "
                              f"{self.shape} (tile_size {tile}, {len(BAND_ORDER)} bands)")

    def __getattr__(self, key: str):
        return getattr(self.inner, key)  # the library's own objects (interpreter, session)

    def input_shape(self) -> tuple | None:
        return self.inner.input_shape()

    def run(self, tile: np.ndarray) -> np.ndarray:
        if tile.shape != self.shape:
            raise QmtganError(f"{self.bundle_path}: a tile of {tile.shape}, the model takes {self.shape}")
        try:
            out = self.inner.run(tile)
        except QmtganError:
            raise
        except Exception as exc:
            raise QmtganError(
                f"{self.bundle_path}: {self.name} failed on a tile ({_first_line(exc)})") from exc
        if out.shape != self.shape:
            raise QmtganError(
                f"{self.bundle_path}: the model gives {out.shape}, the manifest says {self.shape}")
        return out


def write_bundle(dest: str | os.PathLike, manifest: dict, files: dict[str, bytes]) -> Path:
    """Write the bundle folder atomically, then dest.tar.gz next to it."""
    dest = Path(dest)
    with atomic_dir(dest) as tmp:
        for name, data in files.items():
            (tmp / plain_name(name, "bundle file")).write_bytes(data)
        record = {"schema": SCHEMA, **manifest, "bands": list(BAND_ORDER),
                  "files": {name: sha256_file(tmp / name) for name in files}}
        # written through the reader's own type: a bundle the device would refuse is never made
        write_manifest(tmp, Manifest.from_record(record, str(dest)).to_record())
    with atomic_file(dest.with_name(dest.name + ".tar.gz")) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(dest, arcname=dest.name)
    return dest


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Open a bundle folder or archive: the manifest's own digest, its fields, and every file's
    sha256 are verified before anything else reads the bundle."""
    path = Path(path)
    if path.is_file():
        scratch = scratch_path("qmtgan-bundle-")
        atexit.register(discard, scratch)  # the extracted copy lives as long as the process
        path = safe_extract(path, scratch)
    manifest = Manifest.from_record(read_manifest(path), str(path))
    verify_files(path, manifest.files)
    return Bundle(path, manifest)
