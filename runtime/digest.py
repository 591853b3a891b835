"""SHA-256 of files, the identity of data and artifacts across stages."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from qmtgan.runtime.errors import QmtganError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_record(path: Path, schema: str, what: str) -> dict:
    """A JSON record that must carry ``schema`` (pair.json, model.json, manifest.json)."""
    try:
        record = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise QmtganError(f"{path}: not {what} ({exc})") from exc
    if not isinstance(record, dict) or record.get("schema") != schema:
        found = record.get("schema") if isinstance(record, dict) else None
        raise QmtganError(f"{path}: schema {found!r}, expected {schema}")
    return record


def verify_files(folder: Path, digests: dict[str, str]) -> None:
    """Every listed file exists in ``folder`` and has its recorded sha256."""
    for name, digest in digests.items():
        f = Path(folder) / name
        if not f.is_file():
            raise QmtganError(f"{folder}: file {name} is missing")
        if sha256_file(f) != digest:
            raise QmtganError(f"{folder}: file {name} fails its sha256 check (altered or corrupted)")
