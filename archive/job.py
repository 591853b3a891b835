"""One pair of a batch, start to finish, in whichever process runs it (a Ray worker, or this
one): prepare the pair, train its generator (resuming from the last epoch's checkpoint), quantize
it into the payload, decode the payload to measure it, write a preview COG and the chosen
bundles, then the pair's report and, last, its record (done.json), which marks it finished."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qmtgan import __version__
from qmtgan.archive.pairs import PairJob
from qmtgan.runtime.atomic import write_text_atomic
from qmtgan.runtime.digest import sha256_file
from qmtgan.runtime.errors import QmtganError

RECORD_SCHEMA = "qmtgan.archive.pair/1"
DONE, ERROR = "done.json", "error.json"
PREVIEW_BANDS = ("B04", "B03", "B02")  # true colour


@dataclass(frozen=True)
class BatchSettings:
    """What every pair of a batch is encoded with; a finished pair counts as finished only for
    the same settings."""

    epochs: int = 40
    seed: int = 0
    method: str = "symmetric"
    bits: int = 8
    ngf: int = 4
    depth: int = 5
    patch_size: int = 512
    formats: tuple[str, ...] = ()
    tile: int = 512

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def pair_folder(out: Path, pair_id: str) -> Path:
    return Path(out) / "pairs" / pair_id


def finished_record(out: Path, job: PairJob, settings: BatchSettings, inputs: str) -> dict | None:
    """The pair's record when it finished from these inputs with these settings, else None."""
    path = pair_folder(out, job.id) / DONE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (
        isinstance(record, dict)
        and record.get("schema") == RECORD_SCHEMA
        and record.get("inputs_sha256") == inputs
        and record.get("settings_sha256") == settings.sha256()
        and _files_intact(path.parent, record.get("files", {}))
    ):
        return record
    return None


def _files_intact(folder: Path, files: object) -> bool:
    if not isinstance(files, dict) or not files:
        return False
    return all(
        (folder / name).is_file() and sha256_file(folder / name) == digest for name, digest in files.items()
    )


def _configs(settings: BatchSettings):
    from qmtgan.train.models.registry import default_config
    from qmtgan.train.presets import DEMO_GENERATOR, REAL_TRAIN
    from qmtgan.train.training import TrainConfig

    gcfg = default_config(
        "multitempgan",
        patch_size=settings.patch_size,
        **{**DEMO_GENERATOR, "ngf": settings.ngf, "depth": settings.depth},
    )
    tcfg = TrainConfig(epochs=settings.epochs, seed=settings.seed, val_every=settings.epochs, **REAL_TRAIN)
    return gcfg, tcfg


def _prepare(job: PairJob, pair_dir: Path, settings: BatchSettings, inputs: str) -> None:
    from qmtgan.train.ingest import read_scene
    from qmtgan.train.pair import align_to_reference, write_pair

    if (pair_dir / "pair.json").is_file():
        meta = json.loads((pair_dir / "pair.json").read_text())
        if meta.get("archive_inputs") == inputs and meta.get("patch_size") == settings.patch_size:
            return
    reference = read_scene(job.reference)
    target = align_to_reference(reference, read_scene(job.target))
    write_pair(
        pair_dir,
        reference,
        target,
        settings.patch_size,
        None,
        "bilinear",
        extra={"archive_inputs": inputs, "patch_size": settings.patch_size},
    )


def _preview(path: Path, recon: np.ndarray, reference, valid: np.ndarray) -> None:
    """A true-colour uint8 COG of the decoded target (2-98 % stretch of each band)."""
    from qmtgan.runtime.raster import write_geotiff
    from qmtgan.runtime.scene import BAND_ORDER, Scene
    from qmtgan.train.preview import stretch

    rgb = np.stack([stretch(recon[BAND_ORDER.index(b)], valid) for b in PREVIEW_BANDS])
    scene = Scene(
        np.where(valid, 1 + np.rint(254 * rgb), 0).astype(np.float32),
        reference.crs,
        reference.transform,
        bands=PREVIEW_BANDS,
    )
    write_geotiff(path, scene, dtype="uint8", valid=valid)


def _footprint(reference) -> dict:
    """Bounds and outline in WGS 84 (what a STAC item's bbox and geometry are), and the grid."""
    from rasterio.warp import transform_bounds, transform_geom

    h, w = reference.shape
    t = reference.transform
    corners = [t * (0, 0), t * (w, 0), t * (w, h), t * (0, h), t * (0, 0)]
    outline = {"type": "Polygon", "coordinates": [[list(c) for c in corners]]}
    left, bottom, right, top = (
        min(c[0] for c in corners),
        min(c[1] for c in corners),
        max(c[0] for c in corners),
        max(c[1] for c in corners),
    )
    return {
        "bbox": list(transform_bounds(reference.crs, "EPSG:4326", left, bottom, right, top)),
        "geometry": transform_geom(reference.crs, "EPSG:4326", outline),
        "crs": reference.crs.to_string(),
        "shape": [h, w],
        "transform": list(t)[:6],
    }


def _report(folder: Path, record: dict) -> None:
    r = record
    lines = [
        f"# {r['id']}: {r['target_datetime']} against {r['reference_datetime'] or 'an earlier date'}",
        "",
        f"- payload: `{r['payload']}`, {r['payload_bytes']:,} bytes, {r['bpp']:.4f} bpp",
        f"- SNR of the decoded target: {r['snr_db']:.2f} dB (the reference as the target: "
        f"{r['reference_snr_db']:.2f} dB)",
        f"- generator: {json.dumps(r['generator'])}, {r['settings']['epochs']} epochs, "
        f"{r['settings']['method']} {r['settings']['bits']}-bit",
        f"- bundles: {', '.join(r['bundles']) or 'none'}",
        f"- worker: {r['worker']['host']} pid {r['worker']['pid']}, "
        + ", ".join(f"{k} {v:.1f} s" for k, v in r["timings_s"].items()),
        "",
    ]
    write_text_atomic(folder / "report.md", "\n".join(lines))
    write_text_atomic(folder / "report.json", json.dumps(record, indent=2))


def encode_pair_job(job: PairJob, out: Path, settings: BatchSettings, inputs: str,
                    progress: bool = False) -> dict:
    """Encode one pair into OUT/pairs/ID/ and return its record (also written as done.json);
    ``inputs`` is the pair's inputs_sha256."""
    from qmtgan.quantize.codec import scene_header, to_payload
    from qmtgan.quantize.model import quantize_tensors
    from qmtgan.quantize.policy import Policy, generator_tensors
    from qmtgan.runtime import payload as fmt
    from qmtgan.runtime.decode import reconstruct
    from qmtgan.runtime.metrics import snr_db
    from qmtgan.train.model_io import load_model
    from qmtgan.train.pair import load_pair
    from qmtgan.train.training import train

    t0, started = time.perf_counter(), time.time()
    timings: dict[str, float] = {}
    folder = pair_folder(out, job.id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ERROR).unlink(missing_ok=True)
    _prepare(job, folder / "pair", settings, inputs)
    pair = load_pair(folder / "pair")
    timings["prepare"] = time.perf_counter() - t0

    t = time.perf_counter()
    gcfg, tcfg = _configs(settings)
    identity = {"sha256": pair.meta["sha256"], "height": pair.meta["height"], "width": pair.meta["width"]}
    result = train(
        pair.reference, pair.target, folder / "model", gcfg, tcfg, identity, resume=True, progress=progress
    )
    if not result["finished"]:
        raise QmtganError(f"{job.id}: training stopped at epoch {result['epochs_done']} of {settings.epochs}")
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    generator, cfg, norm, _ = load_model(folder / "model")
    policy = Policy(settings.method, bits=settings.bits)
    qmodel = quantize_tensors(generator_tensors(generator), policy, settings.seed)
    payload_path = folder / f"{job.id}.qmtg"
    fmt.write(
        payload_path, to_payload(qmodel, cfg.to_dict(), norm, scene_header(pair.reference, cfg.patch_size))
    )
    timings["quantize"] = time.perf_counter() - t

    t = time.perf_counter()
    valid = pair.reference.valid & pair.target.valid
    recon = reconstruct(fmt.read(payload_path), pair.reference, str(payload_path))
    snr = snr_db(pair.target.data, recon, valid)
    _preview(folder / "preview.tif", recon, pair.reference, valid)
    timings["decode"] = time.perf_counter() - t

    bundles = []
    if settings.formats:
        from qmtgan.convert.build import build_bundles

        t = time.perf_counter()
        build_bundles(
            folder / "model",
            folder / "pair",
            folder / "bundles",
            list(settings.formats),
            settings.tile,
            payload=payload_path,
        )
        bundles = [f for f in settings.formats if (folder / "bundles" / f / "manifest.json").is_file()]
        timings["convert"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    files = {name: sha256_file(folder / name) for name in (payload_path.name, "preview.tif")}
    files.update(
        {f"bundles/{b}/manifest.json": sha256_file(folder / "bundles" / b / "manifest.json") for b in bundles}
    )
    size = payload_path.stat().st_size
    record = {
        "schema": RECORD_SCHEMA,
        "id": job.id,
        "status": "done",
        "qmtgan_version": __version__,
        "inputs": job.to_dict(),
        "inputs_sha256": inputs,
        "settings": asdict(settings),
        "settings_sha256": settings.sha256(),
        "target_datetime": job.target_datetime,
        "reference_datetime": job.reference_datetime,
        "payload": payload_path.name,
        "payload_bytes": size,
        "bpp": 8 * size / pair.reference.data.size,
        "snr_db": snr,
        "reference_snr_db": snr_db(pair.target.data, pair.reference.data, valid),
        "generator": cfg.to_dict(),
        "bundles": bundles,
        "footprint": _footprint(pair.reference),
        "timings_s": timings,
        "started_unix": started,
        "ended_unix": time.time(),
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
    }
    _report(folder, record)
    files.update({n: sha256_file(folder / n) for n in ("report.md", "report.json")})
    record["files"] = files
    write_text_atomic(folder / DONE, json.dumps(record, indent=2))  # last: the pair is finished
    shutil.rmtree(folder / "model" / "checkpoints", ignore_errors=True)  # only a resume needed them
    return record


def error_record(out: Path, job: PairJob, message: str) -> dict:
    """A pair that failed, as the record the batch keeps going past (OUT/pairs/ID/error.json)."""
    folder = pair_folder(out, job.id)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "schema": RECORD_SCHEMA,
        "id": job.id,
        "status": "error",
        "inputs": job.to_dict(),
        "error": message,
        "qmtgan_version": __version__,
    }
    write_text_atomic(folder / ERROR, json.dumps(record, indent=2))
    return record
