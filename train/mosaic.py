"""A full-size test scene made from a smaller real one: the scene tiled with mirroring (each
copy is the mirror image of its neighbour, so there are no seams) up to N x N pixels, written
strip by strip (memory holds the source and one strip, not the mosaic)."""

from __future__ import annotations

import os
from pathlib import Path


from qmtgan.runtime.atomic import atomic_file
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.raster import geotiff_profile, open_raster
from qmtgan.runtime.tiling import mirror_indices

STRIP_ROWS = 512


def write_mosaic(
    source: str | os.PathLike, size: int, out: str | os.PathLike, progress: bool = False
) -> Path:
    """A size x size GeoTIFF of `source`'s bands (same dtype, descriptions and pixel size; the
    origin is the source's)."""
    import rasterio

    if size < 1:
        raise QmtganError(f"mosaic size must be positive, got {size}")
    with open_raster(Path(source)) as src:
        data = src.read()
        descriptions = src.descriptions
        profile = geotiff_profile(src.count, size, size, src.dtypes[0], src.crs, src.transform)
        profile["nodata"] = src.nodata
    rows, cols = mirror_indices(0, size, data.shape[1]), mirror_indices(0, size, data.shape[2])
    out = Path(out)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=size, desc=f"mosaic {out.name}", unit="row", leave=False)
    with atomic_file(out) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for i, name in enumerate(descriptions, start=1):
                if name:
                    dst.set_band_description(i, name)
            for top in range(0, size, STRIP_ROWS):
                strip = rows[top:top + STRIP_ROWS]
                dst.write(
                    data[:, strip][:, :, cols], window=rasterio.windows.Window(0, top, size, len(strip))
                )
                if bar:
                    bar.update(len(strip))
    if bar:
        bar.close()
    return out
