"""Whole-scene inference (numpy + a backend), in one of two tilings.

overlap = 0 (the default for compression bundles): the encoder's own patch grid
(runtime/tiling.py: tiles from the top-left corner, edge tiles mirror-padded). A MultiTempGAN
generator is fitted to exactly those patches; shifted tiles are inputs it never saw.

overlap > 0: tiles of the backend's fixed size start every (tile - overlap) pixels; the last row/column
of tiles is moved back to end exactly at the scene's edge, so any scene at least one tile
large is covered without padding. Each tile's output is weighted by a window that ramps
linearly from ~0 at the tile's edges to 1 at `overlap` pixels inside (1 everywhere on the
scene's own border), and the weighted sum is normalized: overlapping predictions cross-fade
instead of meeting at a seam.
"""

from __future__ import annotations

import time

import numpy as np

from qmtgan.runtime.backends import Backend
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.stream import ArrayScene, stream_scene


def run_scene(
    backend: Backend,
    reference: np.ndarray,
    norm: Normalization,
    tile: int,
    overlap: int = 32,
    progress: bool = False,
) -> tuple[np.ndarray, list[float]]:
    """(bands, H, W) reference DN -> (bands, H, W) predicted target DN, and per-tile seconds: the
    streaming decoder (runtime/stream.py) over a scene in memory, its windows gathered."""
    out = np.empty(reference.shape, np.float32)

    def gather(window) -> None:
        _, h, w = window.prediction.shape
        out[:, window.row : window.row + h, window.col : window.col + w] = window.prediction

    latencies = stream_scene(backend, ArrayScene(reference), norm, tile, overlap, gather, progress)
    return out, latencies


def _bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="tiles", unit="tile", leave=False)


def run_tiles(backend: Backend, tiles: np.ndarray, progress: bool = False) -> tuple[np.ndarray, list[float]]:
    """(n, t, t, bands) normalized tiles -> outputs, one tile at a time (batch 1, as deployed),
    and the seconds each took."""
    out = np.empty_like(tiles)
    latencies = []
    bar = _bar(len(tiles), progress)
    for i in range(len(tiles)):
        t0 = time.perf_counter()
        out[i] = backend.run(tiles[i : i + 1])[0]
        latencies.append(time.perf_counter() - t0)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return out, latencies
