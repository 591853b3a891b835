"""Reconstruction metrics, computed in one place for every stage (numpy only).

Images are band-first arrays ``(bands, H, W)`` in physical units (Sentinel-2 DN). An optional
boolean ``valid`` mask ``(H, W)`` restricts every sum to valid (non-nodata) pixels.
"""

from __future__ import annotations

import numpy as np


def _masked(x: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, valid] if valid is not None else x.reshape(x.shape[0], -1)


def snr_db(x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None = None) -> float:
    """SNR = 10 log10( sum x^2 / sum (x - x_hat)^2 ), as in MultiTempGAN."""
    a, b = _masked(x, valid), _masked(x_hat, valid)
    noise = np.sum((a - b) ** 2)
    if noise == 0:
        return float("inf")
    return float(10.0 * np.log10(np.sum(a**2) / noise))


def psnr_db(x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None = None,
            peak: float | None = None) -> float:
    """PSNR with ``peak`` = the largest value of the reference image x unless given."""
    a, b = _masked(x, valid), _masked(x_hat, valid)
    mse = np.mean((a - b) ** 2)
    peak = float(np.max(a)) if peak is None else peak
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(peak**2 / mse))


def laplacian(x: np.ndarray) -> np.ndarray:
    """Discrete 4-neighbour Laplacian of every band, on interior pixels: (bands, H-2, W-2)."""
    x = np.asarray(x, dtype=np.float64)
    return (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:]
            - 4.0 * x[:, 1:-1, 1:-1])


def lmse(x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Laplacian MSE = sum (L(x) - L(x_hat))^2 / sum L(x)^2 (interior pixels whose 3x3
    neighbourhood is fully valid when a mask is given)."""
    lx, lxh = laplacian(x), laplacian(x_hat)
    if valid is not None:
        v = valid.astype(bool)
        inner = (v[1:-1, 1:-1] & v[:-2, 1:-1] & v[2:, 1:-1] & v[1:-1, :-2] & v[1:-1, 2:])
        lx, lxh = lx[:, inner], lxh[:, inner]
    denom = np.sum(lx**2)
    if denom == 0:
        return float("nan")
    return float(np.sum((lx - lxh) ** 2) / denom)


def image_metrics(x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """SNR, PSNR and LMSE of one image, the record every stage reports."""
    return {"snr_db": snr_db(x, x_hat, valid), "psnr_db": psnr_db(x, x_hat, valid),
            "lmse": lmse(x, x_hat, valid)}


def mean_over_images(records: list[dict]) -> dict:
    """Average per-image metrics over images, the way the seed averages over its pairs."""
    keys = records[0].keys() if records else []
    return {k: float(np.mean([r[k] for r in records])) for k in keys}
