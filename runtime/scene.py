"""A georeferenced 12-band scene in memory, and the fixed band order every stage uses."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The 13 Sentinel-2 L1C bands without B10 (cirrus), i.e. the L2A set, in this order.
BAND_ORDER: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08",
                               "B8A", "B09", "B11", "B12")
NODATA = 0  # Sentinel-2 L1C/L2A fill value


@dataclass
class Scene:
    """``data`` is float32 (bands, H, W) in DN; ``valid`` is False where any band is nodata.

    ``crs`` and ``transform`` are rasterio objects (a rasterio CRS and an affine.Affine);
    the runtime only passes them through to the GeoTIFF writer."""

    data: np.ndarray
    crs: object
    transform: object
    source: str = ""
    bands: tuple[str, ...] = BAND_ORDER
    meta: dict = field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        return np.all(self.data != NODATA, axis=0)

    @property
    def band_count(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.data.shape[1]), int(self.data.shape[2])

    def nodata_count(self) -> int:
        return int(self.valid.size - np.count_nonzero(self.valid))
