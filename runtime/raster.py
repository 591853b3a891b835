"""GeoTIFF read/write of band-first scenes (rasterio is imported only when used, so the
device runtime can fall back to .npy where rasterio is not installed)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from qmtgan.runtime.atomic import atomic_file
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.scene import BAND_ORDER, NODATA, Scene


def to_uint16(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Round DN to uint16; valid pixels stay >= 1 so they never turn into nodata."""
    rounded = np.rint(data, dtype=np.float32)
    out = np.clip(rounded, 1, 65535, out=rounded).astype(np.uint16)
    out[:, ~valid] = NODATA
    return out


# Codecs of written GeoTIFFs, each with a fast level: DEFLATE is readable by any GDAL or libtiff;
# ZSTD writes about twice as fast at the same size (GDAL >= 2.3 built with it).
COMPRESSIONS = {
    "deflate": {"compress": "deflate", "zlevel": 1},
    "zstd": {"compress": "zstd", "zstd_level": 1},
}


def geotiff_profile(bands: int, height: int, width: int, dtype: str, crs, transform,
                    compress: str = "deflate") -> dict:
    """Tiled (256 px blocks), compressed with a predictor (horizontal differencing for integers);
    striped when the scene is smaller than one block."""
    if compress not in COMPRESSIONS:
        raise QmtganError(f"unknown GeoTIFF compression {compress!r}; known: {', '.join(COMPRESSIONS)}")
    profile = {"driver": "GTiff", "height": height, "width": width, "count": bands, "dtype": dtype,
               "crs": crs, "transform": transform, "nodata": NODATA, **COMPRESSIONS[compress],
               "predictor": 2 if dtype in ("uint16", "int16", "uint8") else 3}
    if height >= 256 and width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


# What a STAC asset calls a Cloud-Optimized GeoTIFF.
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def cog_copy(src: str | os.PathLike, dst: str | os.PathLike, compress: str = "deflate",
             overviews: bool = True) -> None:
    """``src`` (any raster GDAL reads) written to ``dst`` by GDAL's COG driver: 256 px tiles,
    the header and tile index first, overviews (averaged) when asked, then the full
    resolution; readable with HTTP range requests."""
    from rasterio.shutil import copy

    options = COMPRESSIONS[compress]
    level = options.get("zlevel", options.get("zstd_level"))
    copy(str(src), str(dst), driver="COG", compress=options["compress"].upper(), level=level,
         predictor="YES", blocksize=256, overviews="AUTO" if overviews else "NONE",
         overview_resampling="AVERAGE")


def write_geotiff(path: str | os.PathLike, scene: Scene, dtype: str = "uint16",
                  tags: dict | None = None, valid: np.ndarray | None = None,
                  overviews: bool = True) -> Path:
    """Write ``scene`` as a Cloud-Optimized GeoTIFF (compressed, 256 px tiles, overviews) with
    band descriptions. ``valid`` (default: the scene's own mask) says which pixels are real data."""
    from rasterio.io import MemoryFile

    valid = scene.valid if valid is None else valid
    array = to_uint16(scene.data, valid) if dtype == "uint16" else scene.data.astype(dtype)
    path = Path(path)
    with MemoryFile() as memory, atomic_file(path) as tmp:
        with memory.open(**geotiff_profile(*array.shape, dtype, scene.crs, scene.transform)) as dst:
            dst.write(array)
            for i, name in enumerate(scene.bands, start=1):
                dst.set_band_description(i, name)
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
        cog_copy(memory.name, tmp, overviews=overviews)
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


# GDAL's block cache defaults to 5 % of RAM and fills with the blocks a streamed scene passes
# through; a fixed size keeps the decoder's memory independent of the scene. Streamed tiles
# cover whole 256 px blocks, so a small cache costs no re-reads.
GDAL_CACHE_MB = 16


@contextlib.contextmanager
def streaming_gdal(threads: int | None = None) -> Iterator[None]:
    """GDAL set for streaming a scene: its block cache capped, and blocks (de)compressed on
    `threads` threads (default: every core). Nothing to do without rasterio."""
    try:
        import rasterio
    except ImportError:
        yield
        return
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GDAL_NUM_THREADS=str(threads) if threads else "ALL_CPUS"):
        yield


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


def band_index(ds, path: Path) -> dict[str, int]:
    """{band name: 1-based band of ``ds``} for BAND_ORDER: bands are matched by their
    descriptions (B10 and other extra bands are skipped); 12 bands without descriptions are
    taken as BAND_ORDER."""
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
    return index


def read_bands(ds, index: dict[str, int], path: Path, window=None, dtype=np.float32) -> np.ndarray:
    """(bands, h, w) in BAND_ORDER (a window of it if given), as `dtype` (None: the file's own),
    checked finite."""
    from rasterio.errors import RasterioError

    try:
        data = ds.read([index[b] for b in BAND_ORDER], window=window, out_dtype=dtype)
    except RasterioError as exc:
        cause = exc.__cause__ or exc  # GDAL's own message (which block failed) rides on the cause
        raise QmtganError(f"{path}: unreadable or truncated raster ({cause})") from exc
    if np.issubdtype(data.dtype, np.floating):
        for b, band in zip(BAND_ORDER, data):
            check_finite(band, f"{path} band {b}")
    return data


def read_multiband(path: str | os.PathLike) -> Scene:
    """A multi-band GeoTIFF in BAND_ORDER (bands found by `band_index`)."""
    path = Path(path)
    with open_raster(path) as ds:
        data = read_bands(ds, band_index(ds, path), path)
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


def check_free_space(path: Path, needed_bytes: float) -> None:
    """Refuse to start a write that may not fit: the bound is the uncompressed size, what an
    incompressible scene would take."""
    import shutil

    folder = path.parent if path.parent.exists() else Path.cwd()
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise QmtganError(
            f"{path}: {free / 2**20:.0f} MiB free on its file system, the decoded scene may take "
            f"up to {needed_bytes / 2**20:.0f} MiB (uncompressed); free space or write elsewhere"
        )


class SceneWriter:
    """A decoded scene written window by window: a tiled, compressed uint16 GeoTIFF of whole DN
    (a band-first float32 .npy when the name ends in .npy or rasterio is not installed), nodata
    0 where the reference has none; at the end rewritten as a Cloud-Optimized GeoTIFF (``cog``,
    the default). The file appears under its name only once every window is written (and the
    overviews built, if asked); a failure leaves nothing behind."""

    def __init__(self, path: str | os.PathLike, bands: int, height: int, width: int, crs=None, transform=None,
                 overviews: bool = False, compress: str = "deflate", cog: bool = True):
        rasterio = None
        if Path(path).suffix.lower() != ".npy":  # a .npy name is written as .npy, rasterio or not
            try:
                import rasterio
            except ImportError:
                pass
        self.path = Path(path) if rasterio else Path(path).with_suffix(".npy")
        self.overviews = overviews and rasterio is not None
        self.cog, self.compress = cog and rasterio is not None, compress
        copies = 2 if self.cog else 1  # the tiled file and its COG rewrite, side by side at the end
        check_free_space(self.path, bands * height * width * (2 if rasterio else 4) * copies
                         * (4 / 3 if self.overviews else 1))
        self._atomic = atomic_file(self.path)
        tmp = self._atomic.__enter__()
        try:
            if rasterio is None:
                from qmtgan.runtime.npy_window import NpyWindows

                self._npy = NpyWindows(tmp, (bands, height, width), np.float32)
                self._dst = None
            else:
                profile = geotiff_profile(bands, height, width, "uint16", crs, transform, compress)
                self._dst = rasterio.open(tmp, "w", **profile)
                for i, name in enumerate(BAND_ORDER[:bands], start=1):
                    self._dst.set_band_description(i, name)
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        self._tmp = tmp

    def write(self, row: int, col: int, prediction: np.ndarray, valid: np.ndarray) -> None:
        """prediction: (bands, h, w) float DN at (row, col)."""
        _, h, w = prediction.shape
        if self._dst is None:
            self._npy.write(row, col, np.where(valid, prediction, 0.0))
            return
        from rasterio.windows import Window

        self._dst.write(to_uint16(prediction, valid), window=Window(col, row, w, h))

    def close(self, ok: bool = True) -> None:
        """Finish the file and move it under its name (ok), or throw it away."""
        try:
            if self._dst is not None:
                self._dst.close()
                if ok and self.overviews:
                    self._build_overviews()  # the COG driver keeps them (it makes none below 256 px)
                if ok and self.cog:
                    self._rewrite_as_cog()
            else:
                self._npy.close()
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        if ok:
            self._atomic.__exit__(None, None, None)
        else:
            self._atomic.__exit__(QmtganError, QmtganError("aborted"), None)

    def _rewrite_as_cog(self) -> None:
        cog = Path(f"{self._tmp}.cog")
        try:
            cog_copy(self._tmp, cog, self.compress, self.overviews)
            os.replace(cog, self._tmp)
        finally:
            cog.unlink(missing_ok=True)

    def _build_overviews(self) -> None:
        import rasterio
        from rasterio.enums import Resampling

        with rasterio.open(self._tmp, "r+") as dst:
            factors = [f for f in (2, 4, 8, 16, 32) if min(dst.height, dst.width) // f >= 256] or [2]
            dst.build_overviews(factors, Resampling.average)

    def __enter__(self) -> "SceneWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)
