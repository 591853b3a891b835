"""Run a generator over every patch of a scene and stitch the result back into DN."""

from __future__ import annotations

import weakref

import numpy as np

from qmtgan.runtime import metrics
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.tiling import PatchGrid


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _compiled(generator):
    """One traced inference function per generator (re-tracing every epoch costs seconds)."""
    if generator not in _COMPILED:
        import tensorflow as tf

        _COMPILED[generator] = tf.function(lambda x: generator(x, training=False))
    return _COMPILED[generator]


def predict_patches(generator, patches: np.ndarray, progress: bool = False) -> np.ndarray:
    """(n, p, p, bands) normalized -> (n, p, p, bands) normalized, one patch at a time (the
    generators are built for batch 1, as deployed)."""
    import tensorflow as tf
    from tqdm import tqdm

    call = _compiled(generator)
    out = np.empty_like(patches)
    for i in tqdm(range(patches.shape[0]), desc="reconstruct", unit="patch", disable=not progress,
                  leave=False):
        out[i] = call(tf.constant(patches[i : i + 1])).numpy()[0]
    return out


def reconstruct_scene(generator, reference_patches: np.ndarray, grid: PatchGrid,
                      norm: Normalization, valid: np.ndarray, progress: bool = False) -> np.ndarray:
    """(bands, H, W) DN reconstruction of the target; nodata pixels set to 0."""
    predicted = predict_patches(generator, reference_patches, progress)
    scene = norm.inverse(grid.stitch(predicted))
    scene[:, ~valid] = 0.0
    return scene


def scene_metrics(target: np.ndarray, recon: np.ndarray, valid: np.ndarray, grid: PatchGrid) -> dict:
    """Scene-level SNR/PSNR/LMSE on valid pixels, plus SNR averaged over patches."""
    rec = metrics.image_metrics(target, recon, valid)
    per_patch = []
    for p in grid.patches:
        sl = (slice(None), slice(p.row, p.row + p.height), slice(p.col, p.col + p.width))
        v = valid[sl[1:]]
        if v.any():
            per_patch.append(metrics.snr_db(target[sl], recon[sl], v))
    rec["mean_patch_snr_db"] = float(np.mean(per_patch))
    rec["patches"] = len(per_patch)
    return rec
