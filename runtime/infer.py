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
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.tiling import PatchGrid


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if tile > length:
        raise QmtganError(f"tile {tile} px is larger than the scene ({length} px along one axis)")
    if not 0 <= overlap < tile:
        raise QmtganError(f"overlap must be in 0..{tile - 1}, got {overlap}")
    step = tile - overlap
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def ramp(tile: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    w = np.ones(tile, np.float32)
    if overlap:
        rising = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not at_start:
            w[:overlap] = rising
        if not at_end:
            w[-overlap:] = rising[::-1]
    return w


def run_scene(backend: Backend, reference: np.ndarray, norm: Normalization, tile: int,
              overlap: int = 32, progress: bool = False) -> tuple[np.ndarray, list[float]]:
    """(bands, H, W) reference DN -> (bands, H, W) predicted target DN, and per-tile seconds."""
    bands, h, w = reference.shape
    if overlap == 0:
        return _run_grid(backend, reference, norm, tile, progress)
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    x = norm.forward(reference).transpose(1, 2, 0)  # H, W, bands
    acc = np.zeros((h, w, bands), np.float32)
    weight = np.zeros((h, w, 1), np.float32)
    latencies = []
    positions = [(r, c) for r in rows for c in cols]
    bar = _bar(len(positions), progress)
    for r, c in positions:
        t0 = time.perf_counter()
        y = backend.run(np.ascontiguousarray(x[None, r : r + tile, c : c + tile]))[0]
        latencies.append(time.perf_counter() - t0)
        win = np.outer(ramp(tile, overlap, r == 0, r == rows[-1]), ramp(tile, overlap, c == 0, c == cols[-1]))
        acc[r : r + tile, c : c + tile] += y * win[..., None]
        weight[r : r + tile, c : c + tile] += win[..., None]
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return norm.inverse((acc / weight).transpose(2, 0, 1)), latencies


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


def _run_grid(backend: Backend, reference: np.ndarray, norm: Normalization, tile: int,
              progress: bool) -> tuple[np.ndarray, list[float]]:
    grid = PatchGrid(reference.shape[1], reference.shape[2], tile)
    out, latencies = run_tiles(backend, grid.cut(norm.forward(reference)), progress)
    return norm.inverse(grid.stitch(out)), latencies
