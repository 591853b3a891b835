"""Windows of a band-first (bands, H, W) C-order .npy file, read and written row by row with
pread/pwrite. Nothing is mapped, so only the window in hand counts as this process's memory: a
memory-mapped scene pulls neighbouring pages in on every fault (fault-around) and its resident
size grows with the scene's width."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qmtgan.runtime.errors import QmtganError


class NpyWindows:
    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...] | None = None, dtype=None):
        """Open `path` to read, or with `shape` and `dtype` create it (sparse) to write."""
        self.path = Path(path)
        if shape is None:
            self._fd = os.open(self.path, os.O_RDONLY)
            try:
                self.shape, self.dtype, self._offset = self._header()
            except BaseException:
                os.close(self._fd)
                raise
        else:
            self.shape, self.dtype = tuple(int(v) for v in shape), np.dtype(dtype)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(os.dup(self._fd), "wb") as fh:
                np.lib.format.write_array_header_2_0(
                    fh, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                         "shape": self.shape})
                self._offset = fh.tell()
            os.ftruncate(self._fd, self._offset + self.nbytes)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def _header(self):
        with os.fdopen(os.dup(self._fd), "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(fh, max_header_size=10000)
            except (ValueError, OSError, SyntaxError) as exc:
                raise QmtganError(f"{self.path}: not a readable .npy array ({exc})") from exc
            offset = fh.tell()
        if fortran or dtype.hasobject or len(shape) != 3:
            raise QmtganError(f"{self.path}: expected a C-order (bands, H, W) array, found {shape} "
                              f"{'fortran order' if fortran else dtype}")
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise QmtganError(f"{self.path}: dtype {dtype} is not numeric")
        size = os.fstat(self._fd).st_size
        need = offset + int(np.prod(shape)) * dtype.itemsize
        if size != need:
            raise QmtganError(f"{self.path}: {size} bytes, its header says {need} (truncated or padded)")
        return tuple(int(v) for v in shape), dtype, offset

    def _row_offset(self, band: int, row: int, col: int) -> int:
        _, h, w = self.shape
        return self._offset + ((band * h + row) * w + col) * self.dtype.itemsize

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        out = np.empty((self.shape[0], height, width), self.dtype)
        for b in range(self.shape[0]):
            for i in range(height):
                view = memoryview(out[b, i]).cast("B")
                if os.preadv(self._fd, [view], self._row_offset(b, row + i, col)) != view.nbytes:
                    raise QmtganError(f"{self.path}: short read at band {b}, row {row + i}")
        return out

    def write(self, row: int, col: int, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, self.dtype)
        for b in range(block.shape[0]):
            for i in range(block.shape[1]):
                os.pwrite(self._fd, block[b, i].tobytes(), self._row_offset(b, row + i, col))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
