"""GeoTIFF read/write of band-first scenes (rasterio is imported only when used, so the
device runtime can fall back to .npy where rasterio is not installed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qmtgan.runtime.atomic import atomic_file
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.scene import BAND_ORDER, NODATA, Scene


def to_uint16(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Round DN to uint16; valid pixels stay >= 1 so they never turn into nodata."""
    out = np.clip(np.rint(data), 1, 65535).astype(np.uint16)
    out[:, ~valid] = NODATA
    return out


def write_geotiff(path: str | os.PathLike, scene: Scene, dtype: str = "uint16",
                  tags: dict | None = None, valid: np.ndarray | None = None) -> Path:
    """Write ``scene`` as a tiled, deflate-compressed GeoTIFF with band descriptions.
    ``valid`` (default: the scene's own mask) says which pixels are real data."""
    import rasterio

    valid = scene.valid if valid is None else valid
    array = to_uint16(scene.data, valid) if dtype == "uint16" else scene.data.astype(dtype)
    bands, h, w = array.shape
    profile = {"driver": "GTiff", "height": h, "width": w, "count": bands, "dtype": dtype,
               "crs": scene.crs, "transform": scene.transform, "nodata": NODATA,
               "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256}
    if h < 256 or w < 256:
        profile.update(tiled=False, blockxsize=None, blockysize=None)
        profile = {k: v for k, v in profile.items() if v is not None}
    path = Path(path)
    with atomic_file(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(array)
            for i, name in enumerate(scene.bands, start=1):
                dst.set_band_description(i, name)
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
    return path


def write_scene(path: str | os.PathLike, scene: Scene, valid: np.ndarray | None = None) -> Path:
    """GeoTIFF when rasterio is installed, otherwise a band-first .npy next to the name."""
    try:
        import rasterio  # noqa: F401
    except ImportError:
        path = Path(path).with_suffix(".npy")
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, scene.data.astype(np.float32), allow_pickle=False)
        return path
    return write_geotiff(path, scene, valid=valid)


def check_finite(array: np.ndarray, what: str) -> None:
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise QmtganError(f"{what}: {bad} NaN/inf pixel(s); set them to nodata ({NODATA}) first")


def open_raster(path: Path):
    import rasterio
    from rasterio.errors import RasterioError

    try:
        return rasterio.open(path)
    except RasterioError as exc:
        raise QmtganError(f"{path}: cannot read raster ({exc})") from exc


def read_multiband(path: str | os.PathLike) -> Scene:
    """A multi-band GeoTIFF in BAND_ORDER: bands are matched by their descriptions (B10 and
    other extra bands are skipped); 12 bands without descriptions are taken as BAND_ORDER."""
    from rasterio.errors import RasterioError

    path = Path(path)
    with open_raster(path) as ds:
        names = [(d or "").strip().upper() for d in ds.descriptions]
        if all(n in BAND_ORDER or n == "B10" for n in names) and len(set(names)) == len(names):
            index = {n: i + 1 for i, n in enumerate(names)}
            missing = [b for b in BAND_ORDER if b not in index]
            if missing:
                raise QmtganError(f"{path}: band(s) {', '.join(missing)} not among its band "
                                  f"descriptions {names}")
        elif ds.count == len(BAND_ORDER):
            index = {b: i + 1 for i, b in enumerate(BAND_ORDER)}
        else:
            raise QmtganError(f"{path}: expected {len(BAND_ORDER)} bands ({' '.join(BAND_ORDER)}) "
                              f"or band descriptions naming them, found {ds.count} band(s)")
        if ds.dtypes[0] not in ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"):
            raise QmtganError(f"{path}: data type {ds.dtypes[0]} is not a reflectance/DN type")
        try:
            data = np.stack([ds.read(index[b]).astype(np.float32) for b in BAND_ORDER])
        except RasterioError as exc:
            raise QmtganError(f"{path}: unreadable or truncated raster ({exc})") from exc
        for b, band in zip(BAND_ORDER, data):
            check_finite(band, f"{path} band {b}")
        return Scene(data, ds.crs, ds.transform, source=str(path), meta=dict(ds.tags()))


def read_reference(path: str | os.PathLike) -> Scene:
    """The device's reader: a 12-band GeoTIFF, or a band-first (12, H, W) .npy (no georeference)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise QmtganError(f"{path}: not a readable .npy array ({exc})") from exc
        if data.ndim != 3 or data.shape[0] != len(BAND_ORDER):
            raise QmtganError(f"{path}: expected a ({len(BAND_ORDER)}, H, W) array, found {data.shape}")
        if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
            raise QmtganError(f"{path}: dtype {data.dtype} is not numeric")
        check_finite(data.astype(np.float32), str(path))
        return Scene(data.astype(np.float32), None, None, source=str(path))
    return read_multiband(path)
