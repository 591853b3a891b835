"""A small set of real scene tiles that travels to a board: the bundle's smoke test and the
benchmark's inputs. One .npz of plain arrays (loaded with allow_pickle=False):

    reference  (n, bands, t, t) float32 DN   what the generator reads
    target     (n, bands, t, t) float32 DN   the true target, for SNR / LMSE (optional)
    valid      (n, t, t) bool                pixels that count (no nodata in either image)

Tiles come from the encoder's patch grid (the patches the generator was fitted to); tiles that
touch the mirror-padded scene edge are skipped so every pixel is real."""

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
from qmtgan.runtime.tiling import PatchGrid


@dataclass
class TileSet:
    reference: np.ndarray
    target: np.ndarray | None
    valid: np.ndarray

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


def sample_tiles(reference: np.ndarray, target: np.ndarray | None, tile: int, count: int, seed: int = 0) -> TileSet:
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


def save_tiles(path: str | os.PathLike, tiles: TileSet) -> Path:
    path = Path(path)
    arrays = {"reference": tiles.reference, "valid": tiles.valid}
    if tiles.target is not None:
        arrays["target"] = tiles.target
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


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
    if ref.dtype != np.float32:
        raise QmtganError(f"{path}: reference tiles must be float32, found {ref.dtype}")
    if tgt is not None and (tgt.shape != ref.shape or tgt.dtype != np.float32):
        raise QmtganError(f"{path}: target tiles {tgt.shape} {tgt.dtype} differ from reference {ref.shape} float32")
    if valid.shape != (ref.shape[0], ref.shape[2], ref.shape[3]) or valid.dtype != np.bool_:
        raise QmtganError(f"{path}: valid mask {valid.shape} {valid.dtype}, expected {(ref.shape[0], *ref.shape[2:])} bool")
    return TileSet(ref, tgt, valid)
