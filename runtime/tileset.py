"""A small set of real scene tiles that travels to a board: the bundle's smoke test and the
benchmark's inputs. One .npz of plain arrays (loaded with allow_pickle=False):

    reference  (n, bands, s, s) DN           what the generator reads
    target     (n, bands, s, s) DN           the true target, for SNR / LMSE (optional)
    valid      (n, s, s) bool                pixels that count (no nodata in either image)
    tile       () int                        only when s < t: each tile is its s x s crop
                                             mirrored out to t x t (runtime/tiling.py)

DN are stored as uint16 when that is lossless (checked), otherwise float32; loading gives float32.
Benchmark tiles come from the encoder's patch grid (the patches the generator was fitted to);
tiles that touch the mirror-padded scene edge are skipped so every pixel is real. The smoke
test's tile is one small valid crop mirrored out to the tile size: the board runs the whole
model on real data and must reproduce the SNR measured at conversion, from a file a few
percent of the model's size."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmtgan.runtime import metrics
from qmtgan.runtime.atomic import atomic_file
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.scene import BAND_ORDER
from qmtgan.runtime.tiling import PatchGrid, mirror_indices


@dataclass
class TileSet:
    reference: np.ndarray          # (n, bands, t, t) float32 DN
    target: np.ndarray | None
    valid: np.ndarray
    crop: int = 0                  # > 0: every tile is its top-left crop x crop mirrored out

    def __len__(self) -> int:
        return len(self.reference)

    @property
    def tile(self) -> int:
        return int(self.reference.shape[-1])

    def normalized(self, norm: Normalization) -> np.ndarray:
        """(n, t, t, bands) generator inputs."""
        n, bands, t, _ = self.reference.shape
        x = norm.forward(self.reference.transpose(1, 0, 2, 3).reshape(bands, n * t, t))
        return np.ascontiguousarray(x.reshape(bands, n, t, t).transpose(1, 2, 3, 0))

    @staticmethod
    def denormalized(outputs: np.ndarray, norm: Normalization) -> np.ndarray:
        """(n, t, t, bands) generator outputs -> (n, bands, t, t) DN."""
        n, t, _, bands = outputs.shape
        y = norm.inverse(outputs.transpose(3, 0, 1, 2).reshape(bands, n * t, t))
        return np.ascontiguousarray(y.reshape(bands, n, t, t).transpose(1, 0, 2, 3))

    def scores(self, predicted: np.ndarray, against: np.ndarray | None = None) -> dict:
        """SNR (dB, over all tiles' valid pixels) and LMSE of band-first DN predictions against
        the target, or against `against` (e.g. the float model's outputs)."""
        truth = self.target if against is None else against
        if truth is None:
            return {}
        stack = lambda a: np.concatenate(list(a), axis=-1)  # (bands, t, n*t)
        p, t, v = stack(predicted), stack(truth), np.concatenate(list(self.valid), axis=-1)
        return {"snr_db": metrics.snr_db(t, p, v), "lmse": metrics.lmse(t, p, v)}


def sample_tiles(
    reference: np.ndarray, target: np.ndarray | None, tile: int, count: int, seed: int = 0
) -> TileSet:
    """`count` interior tiles of the encoder grid, chosen with a seeded generator."""
    bands, h, w = reference.shape
    grid = PatchGrid(h, w, tile)
    interior = [p for p in grid.patches if p.row + tile <= h and p.col + tile <= w]
    if not interior:
        raise QmtganError(f"the scene ({h}x{w}) holds no whole {tile}x{tile} tile")
    picks = sorted(np.random.default_rng(seed).permutation(len(interior))[: max(1, count)])
    cut = lambda a: np.stack([a[..., interior[i].row : interior[i].row + tile,
                                 interior[i].col : interior[i].col + tile] for i in picks])
    ref = cut(reference).astype(np.float32)
    tgt = None if target is None else cut(target).astype(np.float32)
    valid = np.all(ref != 0, axis=1) & (np.all(tgt != 0, axis=1) if tgt is not None else True)
    return TileSet(ref, tgt, valid)


def smoke_tiles(
    reference: np.ndarray, target: np.ndarray, tile: int, budget_bytes: int, seed: int = 0
) -> TileSet:
    """One tile made of a small fully valid crop of the scene, mirrored out to `tile`; the crop's
    side is chosen so that its DN (both images, uint16) fit in `budget_bytes` (at least 8 px)."""
    bands, h, w = reference.shape
    side = int(np.clip(np.sqrt(budget_bytes / (2 * bands * 2)), 8, min(tile, h, w)))
    valid = np.all(reference != 0, axis=0) & np.all(target != 0, axis=0)
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        r, c = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        if valid[r:r + side, c:c + side].all():
            break
    else:
        raise QmtganError(f"no fully valid {side}x{side} crop found in the scene for the smoke test")
    rows = mirror_indices(r, tile, h) if side == tile else r + mirror_indices(0, tile, side)
    cols = mirror_indices(c, tile, w) if side == tile else c + mirror_indices(0, tile, side)
    cut = lambda a: a[:, rows][:, :, cols][None].astype(np.float32)
    return TileSet(
        cut(reference), cut(target), np.ones((1, tile, tile), bool), crop=side if side < tile else 0
    )


def _dn_array(a: np.ndarray) -> np.ndarray:
    """uint16 if that holds `a` exactly (whole DN within 0..65535), else float32."""
    if a.size and np.all((a >= 0) & (a <= 65535)) and np.array_equal(a, np.rint(a)):
        return a.astype(np.uint16)
    return a.astype(np.float32)


def save_tiles(path: str | os.PathLike, tiles: TileSet) -> Path:
    path = Path(path)
    keep = (lambda a: a[..., : tiles.crop, : tiles.crop]) if tiles.crop else (lambda a: a)
    arrays = {"reference": _dn_array(keep(tiles.reference)), "valid": keep(tiles.valid)}
    if tiles.target is not None:
        arrays["target"] = _dn_array(keep(tiles.target))
    if tiles.crop:
        arrays["tile"] = np.asarray(tiles.tile, np.int64)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


def _mirrored_out(a: np.ndarray, tile: int) -> np.ndarray:
    index = mirror_indices(0, tile, a.shape[-1])
    return np.ascontiguousarray(a[..., index, :][..., index])


def load_tiles(path: str | os.PathLike) -> TileSet:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise QmtganError(f"{path}: not a readable tile set ({exc})") from exc
    ref, tgt, valid = arrays.get("reference"), arrays.get("target"), arrays.get("valid")
    if ref is None or valid is None:
        raise QmtganError(f"{path}: a tile set needs arrays 'reference' and 'valid', found {sorted(arrays)}")
    if ref.ndim != 4 or ref.shape[1] != len(BAND_ORDER) or ref.shape[2] != ref.shape[3]:
        raise QmtganError(f"{path}: reference tiles must be (n, {len(BAND_ORDER)}, t, t), found {ref.shape}")
    if ref.dtype not in (np.float32, np.uint16):
        raise QmtganError(f"{path}: reference tiles must be float32 or uint16, found {ref.dtype}")
    if tgt is not None and (tgt.shape != ref.shape or tgt.dtype not in (np.float32, np.uint16)):
        raise QmtganError(f"{path}: target tiles {tgt.shape} {tgt.dtype} differ from reference {ref.shape}")
    if valid.shape != (ref.shape[0], ref.shape[2], ref.shape[3]) or valid.dtype != np.bool_:
        raise QmtganError(
            f"{path}: valid mask {valid.shape} {valid.dtype}, expected {(ref.shape[0], *ref.shape[2:])} bool"
        )
    crop = 0
    if "tile" in arrays:
        tile, crop = arrays["tile"], ref.shape[-1]
        if tile.shape != () or not np.issubdtype(tile.dtype, np.integer) or not crop < int(tile) <= 8192:
            raise QmtganError(f"{path}: 'tile' must be one integer in {crop + 1}..8192, found {tile!r}")
        ref, valid = _mirrored_out(ref, int(tile)), _mirrored_out(valid, int(tile))
        tgt = None if tgt is None else _mirrored_out(tgt, int(tile))
    as_float = lambda a: None if a is None else a.astype(np.float32, copy=False)
    return TileSet(as_float(ref), as_float(tgt), valid, crop)
