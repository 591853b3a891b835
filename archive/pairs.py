"""The pairs of a batch: read from a CSV, a STAC ItemCollection or an OSCD-layout folder, each
with its dates and the SHA-256 of its inputs (what makes a finished pair recognisable)."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from qmtgan.runtime.digest import sha256_file
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.names import plain_name

CSV_COLUMNS = ("id", "reference", "target", "target_datetime")
# STAC asset keys of a pair item in an input ItemCollection.
REFERENCE_ASSET, TARGET_ASSET = "reference", "target"
MAX_PAIRS = 100_000
MAX_LIST_BYTES = 64 * 2**20  # a list (CSV or JSON) is read whole


@dataclass(frozen=True)
class PairJob:
    id: str
    reference: Path  # a GeoTIFF, or a folder of band files (train/ingest.py)
    target: Path
    target_datetime: str  # ISO 8601 (the STAC item's datetime)
    reference_datetime: str = ""

    def to_dict(self) -> dict:
        return {k: str(v) for k, v in asdict(self).items()}


def _iso(text: str, where: str) -> str:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise QmtganError(f"{where}: '{text}' is not an ISO 8601 date or datetime") from exc
    return value.isoformat()


def _job(
    where: str, base: Path, pair_id: str, reference: str, target: str, target_dt: str, reference_dt: str = ""
) -> PairJob:
    plain_name(pair_id, f"{where}: pair id")  # it becomes a folder and a STAC id
    paths = []
    for what, text in (("reference", reference), ("target", target)):
        path = (Path(text) if Path(text).is_absolute() else base / text).resolve()  # workers have another cwd
        if not path.exists():
            raise QmtganError(f"{where}: {pair_id}'s {what} {path} does not exist")
        paths.append(path)
    return PairJob(
        pair_id,
        paths[0],
        paths[1],
        _iso(target_dt, f"{where}: {pair_id}"),
        _iso(reference_dt, f"{where}: {pair_id}") if reference_dt else "",
    )


def from_csv(path: Path) -> list[PairJob]:
    """Columns id, reference, target, target_datetime (and optionally reference_datetime);
    relative paths are relative to the CSV's folder."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in CSV_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise QmtganError(
            f"{path}: a pair list needs a header with {', '.join(CSV_COLUMNS)} and one row "
            f"per pair{' (missing: ' + ', '.join(missing) + ')' if missing else ''}"
        )
    return [
        _job(
            f"{path}:{i + 2}",
            path.parent,
            r["id"],
            r["reference"],
            r["target"],
            r["target_datetime"],
            r.get("reference_datetime") or "",
        )
        for i, r in enumerate(rows)
    ]


def from_item_collection(path: Path) -> list[PairJob]:
    """A STAC ItemCollection: each item has a 'reference' and a 'target' asset and the target's
    datetime (its reference date, when known, in the property qmtgan:reference_datetime)."""
    import pystac

    try:
        collection = pystac.ItemCollection.from_file(str(path))
    except Exception as exc:  # pystac raises several kinds for a file that is not an ItemCollection
        raise QmtganError(f"{path}: not a STAC ItemCollection ({exc})") from exc
    jobs = []
    for item in collection:
        where = f"{path}: item {item.id}"
        assets = {k: item.assets.get(k) for k in (REFERENCE_ASSET, TARGET_ASSET)}
        if None in assets.values() or item.datetime is None:
            raise QmtganError(f"{where} needs '{REFERENCE_ASSET}' and '{TARGET_ASSET}' assets and a datetime")
        jobs.append(
            _job(
                where,
                path.parent,
                item.id,
                assets[REFERENCE_ASSET].href,
                assets[TARGET_ASSET].href,
                item.datetime.isoformat(),
                item.properties.get("qmtgan:reference_datetime", ""),
            )
        )
    return jobs


def from_oscd(root: Path) -> list[PairJob]:
    """Every CITY/imgs_1 (reference), CITY/imgs_2 (target) with dates in CITY/dates.txt."""
    from qmtgan.demo.real_pairs import discover

    jobs = []
    for p in discover(root):
        if p.target_date == "unknown":
            raise QmtganError(f"{root / p.city}/dates.txt: no date_2 (the target's date)")
        jobs.append(
            _job(
                str(root / p.city),
                root,
                p.city,
                str(p.reference.resolve()),
                str(p.target.resolve()),
                p.target_date,
                "" if p.reference_date == "unknown" else p.reference_date,
            )
        )
    return jobs


def read_pair_list(path: Path) -> list[PairJob]:
    """The batch's pairs from a .csv, a STAC ItemCollection (.json / .geojson) or an OSCD
    folder; ids must be unique."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > MAX_LIST_BYTES:
        raise QmtganError(f"{path}: {path.stat().st_size:,} bytes, more than a pair list may hold "
                          f"({MAX_LIST_BYTES:,}); split the batch")
    if path.is_dir():
        jobs = from_oscd(path)
    elif path.suffix.lower() == ".csv":
        jobs = from_csv(path)
    elif path.suffix.lower() in (".json", ".geojson"):
        jobs = from_item_collection(path)
    else:
        raise QmtganError(f"{path}: a pair list is a .csv, a STAC ItemCollection (.json) or an OSCD folder")
    if not jobs:
        raise QmtganError(f"{path}: no pairs")
    if len(jobs) > MAX_PAIRS:
        raise QmtganError(f"{path}: {len(jobs)} pairs, more than {MAX_PAIRS} in one batch")
    seen: set[str] = set()
    for j in jobs:
        if j.id in seen:
            raise QmtganError(f"{path}: pair id '{j.id}' appears twice")
        seen.add(j.id)
    return jobs


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def input_bytes(job: PairJob) -> int:
    """The size of the pair's inputs: what its encoding time grows with, to start the longest first."""
    return sum(f.stat().st_size for path in (job.reference, job.target) for f in _files(path))


def inputs_sha256(job: PairJob) -> str:
    """One digest over the pair's input files (a folder: every file under it, by relative name)."""
    h = hashlib.sha256()
    for what, path in (("reference", job.reference), ("target", job.target)):
        for f in _files(path):
            name = f.relative_to(path).as_posix() if path.is_dir() else f.name
            h.update(json.dumps([what, name, sha256_file(f)]).encode())
    return h.hexdigest()
