"""Streaming decode: the reference is read window by window, each tile is normalized, run and
written as soon as it is final, so peak memory depends on the tile size, not on the scene's.

The grid tiling (overlap 0) holds one tile at a time; mirror padding past the scene's edges
reads the mirrored rows and columns themselves, exactly what `numpy.pad(..., "symmetric")` of
the whole scene gives. Overlapping tiles run in panels of a few tile columns, each holding one
strip of tile rows across the panel (the cross-fade accumulator): a strip's rows are written
once no later tile reaches them. Both
give the same floats as the whole-array path (`infer.run_scene`): the same per-pixel arithmetic,
in the same tile order.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from qmtgan.runtime.backends import Backend
from qmtgan.runtime.bundle import load_bundle
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.metrics import RunningMetrics
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.residual import add_residual
from qmtgan.runtime.scene import BAND_ORDER, NODATA
from qmtgan.runtime.tiling import PatchGrid, mirror_indices, ramp, tile_starts


class WindowSource:
    """Windows of a (bands, H, W) scene: subclasses give `height`, `width` and `read`."""

    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def band_count(self) -> int:
        return len(BAND_ORDER)

    def read(self, row: int, col: int, height: int, width: int, dtype=np.float32) -> np.ndarray:
        raise NotImplementedError

    def tile(self, row: int, col: int, size: int, dtype=np.float32) -> np.ndarray:
        """(bands, size, size): the window, mirror-padded where it runs past the scene."""
        rows, cols = mirror_indices(row, size, self.height), mirror_indices(col, size, self.width)
        r0, c0 = int(rows.min()), int(cols.min())
        block = self.read(r0, c0, int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1, dtype)
        if rows[-1] == row + size - 1 and cols[-1] == col + size - 1:
            return block  # wholly inside: no copy
        return block[:, rows - r0][:, :, cols - c0]



class ArrayScene(WindowSource):
    """Windows of a band-first scene already in memory (the whole-array path)."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.height, self.width = (int(v) for v in data.shape[1:])

    @property
    def band_count(self) -> int:
        return int(self.data.shape[0])

    def read(self, row: int, col: int, height: int, width: int, dtype=np.float32) -> np.ndarray:
        window = self.data[:, row:row + height, col:col + width]
        return window if dtype is None else window.astype(dtype, copy=False)


class SceneReader(WindowSource):
    """Windows of a 12-band reference in BAND_ORDER, as float32 DN: a GeoTIFF (bands found by
    their descriptions) or a band-first .npy (memory-mapped, no georeference)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._ds = None
        if self.path.suffix.lower() == ".npy":
            from qmtgan.runtime.npy_window import NpyWindows

            try:
                self._npy = NpyWindows(self.path)
            except OSError as exc:
                raise QmtganError(f"{self.path}: not a readable .npy array ({exc})") from exc
            if self._npy.shape[0] != len(BAND_ORDER):
                self._npy.close()
                raise QmtganError(f"{self.path}: expected a ({len(BAND_ORDER)}, H, W) array, "
                                  f"found {self._npy.shape}")
            self.height, self.width = self._npy.shape[1:]
            self.crs = self.transform = None
        else:
            from qmtgan.runtime.raster import band_index, open_raster

            self._ds = open_raster(self.path)
            self._index = band_index(self._ds, self.path)
            self.height, self.width = self._ds.height, self._ds.width
            self.crs, self.transform = self._ds.crs, self._ds.transform

    def read(self, row: int, col: int, height: int, width: int, dtype=np.float32) -> np.ndarray:
        """(bands, height, width) DN of the window at (row, col), inside the scene, as `dtype`
        (None: the file's own, e.g. uint16 at half the memory of float32)."""
        if self._ds is None:
            from qmtgan.runtime.raster import check_finite

            data = self._npy.read(row, col, height, width)
            data = data if dtype is None else data.astype(dtype, copy=False)
            if np.issubdtype(data.dtype, np.floating):
                check_finite(data, str(self.path))
            return data
        from rasterio.windows import Window

        from qmtgan.runtime.raster import read_bands

        return read_bands(self._ds, self._index, self.path, Window(col, row, width, height), dtype)

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
        else:
            self._npy.close()

    def __enter__(self) -> "SceneReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Window:
    """A final piece of the decoded scene: prediction (bands, h, w) float32 DN at (row, col),
    and where the reference has data."""
    row: int
    col: int
    prediction: np.ndarray
    valid: np.ndarray


def valid_mask(reference: np.ndarray) -> np.ndarray:
    return np.all(reference != NODATA, axis=0)


def stream_scene(backend: Backend, reader: WindowSource, norm: Normalization, tile: int, overlap: int,
                 emit: Callable[[Window], None], progress: bool = False) -> list[float]:
    """Run the scene tile by tile and `emit` each final window; returns per-tile seconds."""
    if overlap == 0:
        return _stream_grid(backend, reader, norm, tile, emit, progress)
    return _stream_overlap(backend, reader, norm, tile, overlap, emit, progress)


class _Progress:
    """Tiles done and the decode rate in MPix/s of scene."""

    def __init__(self, total: int, pixels_per_tile: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="decode", unit="tile", leave=False)
        self.pixels, self.per_tile, self.start = 0, pixels_per_tile, time.perf_counter()

    def step(self) -> None:
        self.pixels += self.per_tile
        if self.bar is not None:
            rate = self.pixels / 1e6 / max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix_str(f"{rate:.1f} MPix/s", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run(backend: Backend, x: np.ndarray, latencies: list[float]) -> np.ndarray:
    """(t, t, bands) normalized -> (t, t, bands) output, batch 1 as deployed."""
    start = time.perf_counter()
    y = backend.run(np.ascontiguousarray(x[None]))[0]
    latencies.append(time.perf_counter() - start)
    return y


def _stream_grid(backend, reader, norm, tile, emit, progress) -> list[float]:
    grid = PatchGrid(reader.height, reader.width, tile)
    latencies: list[float] = []
    bar = _Progress(grid.rows * grid.cols, tile * tile, progress)
    x = np.empty((tile, tile, reader.band_count), np.float32)  # the generator's input, reused
    try:
        for patch in grid.patches:
            reference = reader.tile(patch.row, patch.col, tile, dtype=None)  # DN as stored
            valid = valid_mask(reference[:, : patch.height, : patch.width])
            norm.forward(reference, out=x.transpose(2, 0, 1))  # normalized straight into channels-last
            del reference  # each full-tile array is dropped as soon as it is used: memory is a few tiles
            y = _run(backend, x, latencies)
            prediction = np.ascontiguousarray(y[: patch.height, : patch.width].transpose(2, 0, 1))
            del y
            emit(Window(patch.row, patch.col, norm.inverse(prediction, out=prediction), valid))
            del prediction
            bar.step()
    finally:
        bar.close()
    return latencies


# Overlapping tiles are run in panels of this many tile columns: the cross-fade accumulator is
# one strip of tile rows across a panel, so memory is bounded by the tile and the overlap,
# whatever the scene's width. A tile that reaches into two panels runs once for each.
PANEL_TILES = 8


def _panels(cols: list[int], tile: int, width: int) -> list[tuple[int, int, range]]:
    """(left, right, tile columns): each panel's final columns [left, right) and the tile
    columns that reach into them (all of them, so each pixel sums the same tiles, in the same
    order, as over the whole width)."""
    out = []
    for j0 in range(0, len(cols), PANEL_TILES):
        j1 = min(j0 + PANEL_TILES, len(cols))
        left, right = (cols[j0] if j0 else 0), (cols[j1] if j1 < len(cols) else width)
        reaching = [j for j, c in enumerate(cols) if c < right and c + tile > left]
        out.append((left, right, range(reaching[0], reaching[-1] + 1)))
    return out


def _stream_overlap(backend, reader, norm, tile, overlap, emit, progress) -> list[float]:
    h, w = reader.shape
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    panels = _panels(cols, tile, w)
    latencies: list[float] = []
    bar = _Progress(len(rows) * sum(len(js) for _, _, js in panels), tile * tile, progress)
    try:
        for left, right, js in panels:
            origin = cols[js[0]]  # the accumulator's first column in the scene
            span = cols[js[-1]] + tile - origin
            acc = weight = None
            for i, r in enumerate(rows):
                shift = r - rows[i - 1] if i else 0
                acc, weight = _shifted(acc, weight, shift, tile, span, reader.band_count)
                for j in js:
                    c = cols[j]
                    x = norm.forward(reader.read(r, c, tile, tile)).transpose(1, 2, 0)
                    y = _run(backend, x, latencies)
                    win = np.outer(ramp(tile, overlap, r == rows[0], r == rows[-1]),
                                   ramp(tile, overlap, j == 0, j == len(cols) - 1))
                    acc[:, c - origin:c - origin + tile] += y * win[..., None]
                    weight[:, c - origin:c - origin + tile] += win[..., None]
                    bar.step()
                done = (rows[i + 1] if i + 1 < len(rows) else h) - r  # rows no later tile reaches
                part = slice(left - origin, right - origin)
                prediction = norm.inverse(
                    np.ascontiguousarray((acc[:done, part] / weight[:done, part]).transpose(2, 0, 1)))
                emit(Window(r, left, prediction, valid_mask(reader.read(r, left, done, right - left))))
    finally:
        bar.close()
    return latencies


def _shifted(acc, weight, shift: int, tile: int, width: int, bands: int):
    """The strip accumulator moved down by `shift` rows, keeping the sums of the rows both
    positions cover (a new one when there is none yet)."""
    new_acc = np.zeros((tile, width, bands), np.float32)
    new_weight = np.zeros((tile, width, 1), np.float32)
    if acc is not None and shift < tile:
        new_acc[: tile - shift] = acc[shift:]
        new_weight[: tile - shift] = weight[shift:]
    return new_acc, new_weight


def compare(target: SceneReader, decoded: SceneReader, block: int = 256) -> dict:
    """SNR, PSNR and LMSE of a decoded scene against the true target, over pixels valid in
    both. Each file is read once, in block-aligned windows (row-major). The Laplacian needs
    each pixel's neighbours: every window is extended by the last two rows of the window row
    above (kept for the whole width) and the last two columns of the window to its left, so
    memory stays at a few windows and two rows, whatever the scene's size."""
    if target.shape != decoded.shape:
        raise QmtganError(f"target is {target.shape[0]}x{target.shape[1]} px, the decoded scene "
                          f"{decoded.shape[0]}x{decoded.shape[1]}")
    if block < 2:
        raise QmtganError(f"compare block must be at least 2 px, got {block}")
    h, w = target.shape
    running = RunningMetrics()
    above = None  # (2 images, bands, 2 rows, w): the bottom of the previous window row
    for top in range(0, h, block):
        bottom = min(top + block, h)
        rows_kept = np.empty((2, target.band_count, min(2, bottom - top), w), np.float32)
        seam = None  # (2, bands, bottom - top, 2): the previous window's last two columns
        for left in range(0, w, block):
            right = min(left + block, w)
            pair = np.stack([target.read(top, left, bottom - top, right - left),
                             decoded.read(top, left, bottom - top, right - left)])
            running.add_pixels(pair[0], pair[1], valid_mask(pair[0]) & valid_mask(pair[1]))
            rows_kept[..., left:right] = pair[..., -rows_kept.shape[2]:, :]
            extended = pair if seam is None else np.concatenate([seam, pair], axis=3)
            seam = pair[..., -2:]
            if above is not None:
                extended = np.concatenate(
                    [above[..., left - (extended.shape[3] - pair.shape[3]) : right], extended], axis=2
                )
            # the interior of `extended` is this window shifted up and left by one pixel (less
            # the scene's border): the windows' interiors tile the scene's interior once
            running.add_laplacian(extended[0], extended[1], valid_mask(extended[0]) & valid_mask(extended[1]))
        above = rows_kept if rows_kept.shape[2] == 2 else None
    return running.result()


def with_residual(writer, residual: np.ndarray | None):
    """An emit function for stream_scene that writes each window, plus its part of a decoded
    residual when there is one."""
    def emit(window) -> None:
        prediction = window.prediction
        if residual is not None:
            _, h, w = prediction.shape
            part = residual[:, window.row:window.row + h, window.col:window.col + w]
            prediction = add_residual(prediction, part, window.valid)
        writer.write(window.row, window.col, prediction, window.valid)
    return emit


def decode_scene(bundle, reference: str | os.PathLike, out: str | os.PathLike, overlap: int = 0,
                 threads: int | None = None, overviews: bool = False, compress: str = "zstd",
                 residual: np.ndarray | None = None, progress: bool = False) -> dict:
    """Decode `reference` with a loaded bundle into `out`, streaming; the run's record."""
    from qmtgan.runtime.raster import SceneWriter, streaming_gdal

    start = time.perf_counter()
    with streaming_gdal(threads), SceneReader(reference) as ref:
        with SceneWriter(
            out, ref.band_count, *ref.shape, ref.crs, ref.transform, overviews, compress
        ) as writer:
            latencies = stream_scene(bundle.backend(threads), ref, bundle.normalization, bundle.tile, overlap,
                                     with_residual(writer, residual), progress)
        megapixels = ref.height * ref.width / 1e6
    seconds = time.perf_counter() - start
    return {"bundle": bundle.manifest.name, "tiles": len(latencies),
            "mean_tile_ms": 1000 * float(np.mean(latencies)), "decode_s": round(seconds, 3),
            "mpix_per_s": round(megapixels / seconds, 3), "output": str(writer.path)}


def main(argv: list[str] | None = None) -> int:
    """`python -m qmtgan.runtime.stream`: the device's scene decoder (numpy and the backend only:
    no click, no rasterio needed for .npy scenes). One JSON line: the run's record and its peak RSS."""
    import argparse
    import json
    import resource

    ap = argparse.ArgumentParser(
        prog="python -m qmtgan.runtime.stream", description=main.__doc__.split(":")[0]
    )
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--reference", required=True, help="12-band GeoTIFF, or band-first (12, H, W) .npy")
    ap.add_argument("--overlap", type=int, default=0)
    ap.add_argument("--threads", type=int)
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args(argv)
    try:
        record = decode_scene(load_bundle(a.bundle), a.reference, a.out, a.overlap, a.threads)
    except QmtganError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    record["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
