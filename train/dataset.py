"""Patches of a pair, normalized for the generator, and the tf.data pipeline over them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.normalization import Normalization
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


def make_patch_set(reference: Scene, target: Scene, patch_size: int,
                   normalization: Normalization | None = None) -> PatchSet:
    valid = reference.valid & target.valid
    grid = PatchGrid(*reference.shape, patch_size)
    norm = normalization or Normalization.fit([reference.data, target.data], valid)
    fractions = grid.cut(valid[None].astype(np.float32)).mean(axis=(1, 2, 3))
    trainable = np.flatnonzero(fractions > 0)
    if trainable.size == 0:
        raise QmtganError("every patch is all-nodata: nothing to train on")
    return PatchSet(grid.cut(norm.forward(reference.data)), grid.cut(norm.forward(target.data)),
                    grid, norm, trainable)


def epoch_dataset(patches: PatchSet, seed: int, epoch: int, flips: bool):
    """One epoch of (reference, target) batches of 1, in an order (and with mirror flips)
    drawn from (seed, epoch) alone, so a resumed run sees the same data as an uninterrupted one."""
    import tensorflow as tf

    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(patches.trainable)
    flip = rng.integers(0, 2, (order.size, 2)).astype(bool) if flips else np.zeros((order.size, 2), bool)
    ref, tgt = patches.reference, patches.target

    def fetch(i: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = ref[i], tgt[i]
        if f[0]:
            a, b = a[::-1], b[::-1]
        if f[1]:
            a, b = a[:, ::-1], b[:, ::-1]
        return np.ascontiguousarray(a), np.ascontiguousarray(b)

    def gen():
        for i, f in zip(order, flip):
            yield fetch(i, f)

    spec = tf.TensorSpec(ref.shape[1:], tf.float32)
    return (tf.data.Dataset.from_generator(gen, output_signature=(spec, spec))
            .batch(1).prefetch(2))
