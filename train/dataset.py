"""Patches of a pair, normalized for the generator, and the order training visits them in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.normalization import LOW_PERCENTILE, Normalization
from qmtgan.runtime.scene import Scene
from qmtgan.runtime.tiling import PatchGrid


@dataclass
class PatchSet:
    reference: np.ndarray    # (n, p, p, bands) float32 in [-1, 1]
    target: np.ndarray       # same
    grid: PatchGrid
    normalization: Normalization
    trainable: np.ndarray    # indices of patches that are not all-nodata

    @property
    def count(self) -> int:
        return int(self.reference.shape[0])


def make_patch_set(
    reference: Scene,
    target: Scene,
    patch_size: int,
    normalization: Normalization | None = None,
    clip_percent: float = LOW_PERCENTILE,
) -> PatchSet:
    valid = reference.valid & target.valid
    grid = PatchGrid(*reference.shape, patch_size)
    norm = normalization or Normalization.fit([reference.data, target.data], valid, clip_percent)
    fractions = grid.cut(valid[None].astype(np.float32)).mean(axis=(1, 2, 3))
    trainable = np.flatnonzero(fractions > 0)
    if trainable.size == 0:
        raise QmtganError("every patch is all-nodata: nothing to train on")
    return PatchSet(grid.cut(norm.forward(reference.data)), grid.cut(norm.forward(target.data)),
                    grid, norm, trainable)


def epoch_order(patches: PatchSet, seed: int, epoch: int, flips: bool) -> tuple[np.ndarray, np.ndarray]:
    """Patch order (and mirror flips) of one epoch, drawn from (seed, epoch) alone, so a
    resumed run sees the same data as an uninterrupted one."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(patches.trainable)
    flip = rng.integers(0, 2, (order.size, 2)).astype(bool) if flips else np.zeros((order.size, 2), bool)
    return order, flip


def training_dataset(patches: PatchSet, seed: int, first_epoch: int, last_epoch: int, flips: bool,
                     extra: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, ...]]:
    """(reference, target) batches of 1 for epochs first..last, as numpy arrays; with ``extra``
    (one array per patch, such as a precomputed base) (reference, target, extra)."""
    # Not tf.data: a step costs far more than slicing a patch, and a from_generator pipeline's
    # iterator can block its own destruction for tens of seconds (its pool waits for the GIL).
    if extra is not None and flips:
        raise QmtganError("per-patch extra inputs cannot follow mirror flips")
    ref, tgt = patches.reference, patches.target
    for epoch in range(first_epoch, last_epoch + 1):
        for i, (fv, fh) in zip(*epoch_order(patches, seed, epoch, flips)):
            a, b = ref[i], tgt[i]
            if fv:
                a, b = a[::-1], b[::-1]
            if fh:
                a, b = a[:, ::-1], b[:, ::-1]
            batch = (np.ascontiguousarray(a[None]), np.ascontiguousarray(b[None]))
            yield batch if extra is None else (*batch, extra[i : i + 1])
