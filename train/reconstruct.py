"""Run a generator over every patch of a scene and stitch the result back into DN."""

from __future__ import annotations

import numpy as np

from qmtgan.runtime import metrics
from qmtgan.runtime.infer import run_tiles
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.tiling import PatchGrid
from qmtgan.train.keras_backend import keras_backend


def reconstruct_scene(generator, reference_patches: np.ndarray, grid: PatchGrid,
                      norm: Normalization, valid: np.ndarray, progress: bool = False) -> np.ndarray:
    """(bands, H, W) DN reconstruction of the target from already cut, normalized patches;
    nodata pixels set to 0."""
    predicted, _ = run_tiles(keras_backend(generator), reference_patches, progress)
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
