"""Cutting a scene into non-overlapping square patches and stitching them back (numpy only).

Rule for partial edge tiles: the grid has ceil(H/p) x ceil(W/p) patches starting at (0, 0);
a patch that runs past the scene's bottom or right edge is filled by mirroring the scene
(numpy 'symmetric' padding), and its ``valid`` height/width in the manifest say how much of it
is real. Stitching keeps only the valid part, so cut -> stitch is lossless.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from qmtgan.runtime.errors import QmtganError

# The largest tile (patch) side any header or manifest may name.
MAX_TILE = 8192
# The paper's patch side, which is also the tile every bundle runs on unless told otherwise.
PATCH_SIZE = 512


def mirror_indices(start: int, size: int, length: int) -> np.ndarray:
    """Indices start .. start+size-1 of an axis of `length` extended by mirroring ('symmetric':
    the edge pixel repeats, period 2 * length), e.g. length 3: 0 1 2 2 1 0 0 1 2 ..."""
    i = np.arange(start, start + size) % (2 * length)
    return np.where(i < length, i, 2 * length - 1 - i)


@dataclass(frozen=True)
class Patch:
    index: int
    row: int       # top-left pixel in the scene
    col: int
    height: int    # valid (real) size; the rest of the patch is mirror padding
    width: int


PATCHES_SCHEMA = "qmtgan.patches/1"


@dataclass(frozen=True)
class PatchGrid:
    scene_height: int
    scene_width: int
    patch_size: int

    def __post_init__(self) -> None:
        # a scene smaller than one patch is one mirror-padded patch, like any scene edge
        if self.patch_size <= 0:
            raise QmtganError(f"patch size must be positive, got {self.patch_size}")
        if min(self.scene_height, self.scene_width) <= 0:
            raise QmtganError(f"an empty scene ({self.scene_height}x{self.scene_width} px) has no patches")

    @property
    def rows(self) -> int:
        return math.ceil(self.scene_height / self.patch_size)

    @property
    def cols(self) -> int:
        return math.ceil(self.scene_width / self.patch_size)

    @property
    def patches(self) -> list[Patch]:
        p, out = self.patch_size, []
        for r in range(self.rows):
            for c in range(self.cols):
                row, col = r * p, c * p
                out.append(Patch(len(out), row, col, min(p, self.scene_height - row),
                                 min(p, self.scene_width - col)))
        return out

    def cut(self, image: np.ndarray) -> np.ndarray:
        """(bands, H, W) -> (n_patches, p, p, bands), channels-last for the generator."""
        bands, h, w = image.shape
        if (h, w) != (self.scene_height, self.scene_width):
            raise QmtganError(f"image is {h}x{w} px, the patch grid expects "
                              f"{self.scene_height}x{self.scene_width}")
        p = self.patch_size
        padded = np.pad(image, ((0, 0), (0, self.rows * p - h), (0, self.cols * p - w)),
                        mode="symmetric")
        tiles = padded.reshape(bands, self.rows, p, self.cols, p)
        return np.ascontiguousarray(tiles.transpose(1, 3, 2, 4, 0).reshape(-1, p, p, bands))

    def stitch(self, patches: np.ndarray) -> np.ndarray:
        """(n_patches, p, p, bands) -> (bands, H, W), keeping only each patch's valid part."""
        n, p = self.rows * self.cols, self.patch_size
        if patches.ndim != 4 or patches.shape[0] != n or patches.shape[1:3] != (p, p):
            raise QmtganError(f"expected {n} patches of {p}x{p}, got array {patches.shape}")
        out = np.empty((patches.shape[3], self.scene_height, self.scene_width), patches.dtype)
        for patch in self.patches:  # one patch at a time: its transpose stays in the cache
            out[:, patch.row : patch.row + patch.height, patch.col : patch.col + patch.width] = (
                patches[patch.index, : patch.height, : patch.width].transpose(2, 0, 1))
        return out

    def to_manifest(self, **extra: object) -> dict:
        return {"schema": PATCHES_SCHEMA, "scene_height": self.scene_height,
                "scene_width": self.scene_width, "patch_size": self.patch_size,
                "rows": self.rows, "cols": self.cols,
                "edge_rule": "symmetric mirror padding; stitch keeps the valid part",
                "patches": [asdict(p) for p in self.patches], **extra}

    @classmethod
    def from_manifest(cls, m: dict) -> "PatchGrid":
        try:
            grid = cls(int(m["scene_height"]), int(m["scene_width"]), int(m["patch_size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise QmtganError(f"bad patch manifest: {exc}") from exc
        if len(m.get("patches", [])) != grid.rows * grid.cols:
            raise QmtganError(f"patch manifest lists {len(m.get('patches', []))} patches, "
                              f"its grid has {grid.rows * grid.cols}")
        return grid


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
