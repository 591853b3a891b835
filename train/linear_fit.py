"""The robust least-squares fit of a pair's linear predictor (runtime/linear.py applies it)."""

from __future__ import annotations

import numpy as np

from qmtgan.runtime.linear import shifted

# Robust least squares: refit without the pixels with the largest residual energy.
TRIM_ROUNDS = 2
TRIM_FRACTION = 0.02


def neighbourhood_samples(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, kernel: int,
                          pad: str = "edge") -> np.ndarray:
    """(kernel^2 x bands, n) features at pixels (rows, cols) of a (bands, H, W) image, ordered
    (dy, dx, band) like a Keras kernel (k, k, in, out) read in C order."""
    padded, offsets = shifted(image, kernel, pad)
    return np.concatenate([padded[:, rows + dy, cols + dx] for dy, dx in offsets], axis=0)


def fit_linear(reference: np.ndarray, target: np.ndarray, valid: np.ndarray, cross: bool = True,
               kernel: int = 1, pad: str = "edge", max_samples: int = 500_000, seed: int = 0) -> np.ndarray:
    """Least-squares coefficients (bands, kernel^2 x bands + 1) of target ~ A @ neighbourhood + c
    on valid pixels, refitted without the worst-explained 2 % (twice) so that changed land cover
    does not bend the fit; without ``cross`` each band only sees itself (a per-band gain and offset).
    ``reference``/``target`` are (bands, H, W), or (bands, n, H, W) for a stack of patches (a
    neighbourhood then stays inside its patch). Spatial kernels fit on a seeded sample of pixels."""
    if kernel == 1 or not cross:
        x = reference[:, valid].astype(np.float64)
        y = target[:, valid].astype(np.float64)
    else:
        where = np.nonzero(valid)
        rng = np.random.default_rng(seed)
        pick = rng.choice(where[0].size, min(max_samples, where[0].size), replace=False)
        lead, (rows, cols) = [w[pick] for w in where[:-2]], (where[-2][pick], where[-1][pick])
        x = _patch_features(reference, lead, rows, cols, kernel, pad).astype(np.float64)
        y = target[(slice(None), *lead, rows, cols)].astype(np.float64)
    bands = target.shape[0]
    coef = np.zeros((bands, x.shape[0] + 1))
    if cross:
        design = np.vstack([x, np.ones((1, x.shape[1]))])
        keep = np.ones(design.shape[1], bool)
        for _ in range(1 + TRIM_ROUNDS):
            d, t = design[:, keep], y[:, keep]
            gram = d @ d.T
            coef[:] = np.linalg.solve(gram + 1e-9 * np.trace(gram) * np.eye(gram.shape[0]), d @ t.T).T
            # pixels the fit explains worst (changed land cover, clouds) are outliers, not signal
            energy = np.sum((y - coef @ design) ** 2, axis=0)
            keep = energy <= np.quantile(energy, 1.0 - TRIM_FRACTION)
    else:
        for b in range(bands):
            gain, offset = np.polyfit(x[b], y[b], 1)
            coef[b, b], coef[b, -1] = gain, offset
    return coef.astype(np.float32)


def _patch_features(image, lead, rows, cols, kernel, pad):
    if not lead:
        return neighbourhood_samples(image, rows, cols, kernel, pad)
    padded, offsets = shifted(image, kernel, pad)
    return np.concatenate([padded[:, lead[0], rows + dy, cols + dx] for dy, dx in offsets], axis=0)
