"""GeoTIFF read/write of band-first scenes (rasterio is imported only when used, so the
device runtime can fall back to .npy where rasterio is not installed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qmtgan.runtime.atomic import atomic_file
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.scene import NODATA, Scene


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
