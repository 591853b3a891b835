"""A reference/target pair on one grid, written as a pair folder:

    reference.tif  target.tif   12-band uint16 GeoTIFFs (BAND_ORDER, nodata 0)
    pair.json                   sources, grid, nodata counts, simulation parameters, sha256s
    patches.json                the patch manifest (grid, edge rule, per-patch valid fraction)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
from rasterio.warp import reproject, transform_bounds
from rasterio.transform import array_bounds

from qmtgan import __version__
from qmtgan.runtime.atomic import atomic_dir
from qmtgan.runtime.digest import load_record, sha256_file, verify_files
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.raster import write_geotiff
from qmtgan.runtime.scene import BAND_ORDER, NODATA, Scene
from qmtgan.runtime.tiling import PATCHES_SCHEMA, PatchGrid
from qmtgan.train.ingest import RESAMPLING, read_scene

PAIR_SCHEMA = "qmtgan.pair/1"


def _bounds(scene: Scene) -> tuple[float, float, float, float]:
    h, w = scene.shape
    return array_bounds(h, w, scene.transform)  # (west, south, east, north)


def align_to_reference(reference: Scene, target: Scene, resampling: str = "bilinear") -> Scene:
    """Return ``target`` on the reference grid, reprojecting it when the grids differ."""
    if (target.shape == reference.shape and target.transform == reference.transform
            and target.crs == reference.crs):
        return target
    rw, rs, re_, rn = _bounds(reference)
    tw, ts, te, tn = transform_bounds(target.crs, reference.crs, *_bounds(target))
    if min(re_, te) <= max(rw, tw) or min(rn, tn) <= max(rs, ts):
        raise QmtganError(
            f"reference and target do not overlap: reference {target_str(reference)} covers "
            f"{(rw, rs, re_, rn)}, target {target_str(target)} covers {(tw, ts, te, tn)} "
            f"(in the reference CRS {reference.crs})")
    h, w = reference.shape
    out = np.zeros((len(BAND_ORDER), h, w), np.float32)
    for i in range(len(BAND_ORDER)):
        reproject(target.data[i], out[i], src_transform=target.transform, src_crs=target.crs,
                  dst_transform=reference.transform, dst_crs=reference.crs, src_nodata=NODATA,
                  dst_nodata=NODATA, resampling=RESAMPLING[resampling])
    return Scene(out, reference.crs, reference.transform,
                 source=f"{target.source} (reprojected onto the reference grid)", meta=target.meta)


def target_str(scene: Scene) -> str:
    return scene.source or "<in memory>"


def patch_manifest(grid: PatchGrid, reference: Scene, target: Scene) -> dict:
    valid = reference.valid & target.valid
    fractions = [float(f) for f in grid.cut(valid[None].astype(np.float32)).mean(axis=(1, 2, 3))]
    # The padded part of an edge patch mirrors real pixels, so its fraction is that of the
    # patch as the generator sees it.
    manifest = grid.to_manifest(crs=reference.crs.to_wkt(), transform=list(reference.transform)[:6],
                                bands=list(BAND_ORDER))
    for entry, frac in zip(manifest["patches"], fractions):
        entry["valid_fraction"] = round(frac, 6)
    if not any(fractions):
        raise QmtganError("every patch of the pair is all-nodata: nothing to train on")
    return manifest


def write_pair(out_dir: str | Path, reference: Scene, target: Scene, patch_size: int,
               simulation: dict | None, resampling: str, extra: dict | None = None) -> Path:
    """Write the pair folder atomically (it appears complete or not at all); `extra` adds keys
    to pair.json (e.g. where a real pair came from)."""
    if reference.shape != target.shape:
        raise QmtganError(f"reference is {reference.shape}, target {target.shape}: align first")
    grid = PatchGrid(*reference.shape, patch_size)
    manifest = patch_manifest(grid, reference, target)
    valid = reference.valid & target.valid
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        write_geotiff(tmp / "reference.tif", reference, valid=valid)
        write_geotiff(tmp / "target.tif", target, valid=valid)
        meta = {
            "schema": PAIR_SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "qmtgan_version": __version__, "bands": list(BAND_ORDER), "resampling": resampling,
            "reference_source": reference.source, "target_source": target.source,
            "crs": reference.crs.to_wkt(), "transform": list(reference.transform)[:6],
            "height": reference.shape[0], "width": reference.shape[1],
            "nodata_value": NODATA, "nodata_pixels": int(valid.size - valid.sum()),
            "simulation": simulation,
            "sha256": {"reference.tif": sha256_file(tmp / "reference.tif"),
                       "target.tif": sha256_file(tmp / "target.tif")},
            **(extra or {}),
        }
        (tmp / "pair.json").write_text(json.dumps(meta, indent=2))
        (tmp / "patches.json").write_text(json.dumps(manifest, indent=1))
    return out_dir


@dataclass(frozen=True)
class Pair:
    """A pair folder, read and sha256-checked: the two scenes and the records written with them.
    Unpacks as (reference, target, meta, patches)."""
    folder: Path
    reference: Scene
    target: Scene
    meta: dict      # pair.json: identity, sha256 of both GeoTIFFs, the simulation record
    patches: dict   # patches.json: the patch grid

    @property
    def valid(self) -> np.ndarray:
        """Pixels that count: valid (no nodata) in both scenes."""
        return self.reference.valid & self.target.valid

    @property
    def identity(self) -> dict:
        return data_identity(self.folder, self.meta)

    def __iter__(self) -> Iterator:
        return iter((self.reference, self.target, self.meta, self.patches))


def load_pair(pair_dir: str | Path) -> Pair:
    """A pair folder, sha256-checked."""
    pair_dir = Path(pair_dir)
    meta = load_record(pair_dir / "pair.json", PAIR_SCHEMA, "a pair folder")
    manifest = load_record(pair_dir / "patches.json", PATCHES_SCHEMA, "a patch manifest")
    verify_files(pair_dir, meta.get("sha256", {}))
    reference, target = read_scene(pair_dir / "reference.tif"), read_scene(pair_dir / "target.tif")
    grid = PatchGrid.from_manifest(manifest)
    shapes = {"reference.tif": reference.shape, "target.tif": target.shape, "patches.json":
              (grid.scene_height, grid.scene_width), "pair.json": (meta.get("height"), meta.get("width"))}
    if len(set(shapes.values())) != 1:  # the records are read as one pair: they must agree
        raise QmtganError(f"{pair_dir}: the pair's files disagree on its size: "
                          + ", ".join(f"{k} {v[0]}x{v[1]}" for k, v in shapes.items()))
    return Pair(pair_dir, reference, target, meta, manifest)


def data_identity(pair_dir: str | Path, meta: dict) -> dict:
    """What model.json records about the data a generator was fitted to."""
    return {"pair": str(pair_dir), "sha256": meta["sha256"], "height": meta["height"],
            "width": meta["width"], "crs": meta["crs"], "transform": meta["transform"],
            "simulation_seed": (meta.get("simulation") or {}).get("config", {}).get("seed")}
