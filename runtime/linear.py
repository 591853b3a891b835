"""A pair's linear predictor applied: target ~ A @ (each pixel's k x k neighbourhood of the
reference's bands) + c, in DN. The encoder fits it (train/linear_fit.py); a decoder needs only
this side, with numpy."""

from __future__ import annotations

import numpy as np

from qmtgan.runtime.errors import QmtganError


def shifted(image: np.ndarray, kernel: int, pad: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The padded image and the kernel's (dy, dx) offsets, in Keras kernel order."""
    r = kernel // 2
    padded = np.pad(image, ((0, 0),) * (image.ndim - 2) + ((r, r), (r, r)), mode=pad)
    return padded, [(dy, dx) for dy in range(kernel) for dx in range(kernel)]


def kernel_of(coef: np.ndarray, bands: int) -> int:
    """The neighbourhood size a (bands, k^2 x bands + 1) coefficient matrix implies."""
    kernel = int(round(np.sqrt(max(coef.shape[1] - 1, 0) / bands)))
    if coef.ndim != 2 or coef.shape != (bands, kernel * kernel * bands + 1) or kernel % 2 == 0:
        raise QmtganError(f"linear predictor coefficients of shape {coef.shape} do not fit {bands} bands")
    return kernel


def apply_linear(coef: np.ndarray, reference: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The prediction in DN (float32), 0 on nodata; the kernel size follows from ``coef``."""
    bands, h, w = reference.shape
    kernel = kernel_of(coef, bands)
    padded, offsets = shifted(reference.astype(np.float32), kernel, "edge")
    pred = np.repeat(coef[:, -1], h * w).reshape(bands, h, w).astype(np.float32)
    for i, (dy, dx) in enumerate(offsets):
        a = coef[:, i * bands:(i + 1) * bands]
        pred += (a @ padded[:, dy:dy + h, dx:dx + w].reshape(bands, -1)).reshape(bands, h, w)
    pred[:, ~valid] = 0.0
    return pred
