"""Reconstruction metrics, computed in one place for every stage (numpy only).

Images are band-first arrays ``(bands, H, W)`` in physical units (Sentinel-2 DN). An optional
boolean ``valid`` mask ``(H, W)`` restricts every sum to valid (non-nodata) pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# Rows per strip: a strip of one band in float64 stays in the CPU's cache, so the sums below
# never build whole-band float64 copies (on a full scene those cost more than the arithmetic).
STRIP_ROWS = 64


def _strips(height: int, halo: int = 0):
    """Row slices of STRIP_ROWS rows covering rows halo .. height - halo, each widened by the halo."""
    for r0 in range(halo, height - halo, STRIP_ROWS):
        yield slice(r0 - halo, min(r0 + STRIP_ROWS, height - halo) + halo)


def _sums(x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None) -> tuple[float, float, int, float]:
    """(sum x^2, sum (x - x_hat)^2, sample count, max x) over the valid samples of every band."""
    x, x_hat = np.asarray(x), np.asarray(x_hat)
    if valid is not None and valid.all():
        valid = None  # no masked copy when every pixel counts
    signal = noise = 0.0
    count, peak = 0, -np.inf
    for a_band, b_band in zip(x, x_hat):
        for rows in _strips(a_band.shape[0]):
            a, b = a_band[rows], b_band[rows]
            if valid is not None:
                a, b = a[valid[rows]], b[valid[rows]]
            a = a.astype(np.float64).ravel()
            d = a - b.ravel()
            signal += float(a @ a)
            noise += float(d @ d)
            count += a.size
            if a.size:
                peak = max(peak, float(a.max()))
    return signal, noise, count, peak


def _snr(signal: float, noise: float) -> float:
    return float("inf") if noise == 0 else float(10.0 * np.log10(signal / noise))


def _psnr(noise: float, count: int, peak: float) -> float:
    return float("inf") if noise == 0 else float(10.0 * np.log10(peak**2 / (noise / count)))


def snr_db(x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None = None) -> float:
    """SNR = 10 log10( sum x^2 / sum (x - x_hat)^2 ), as in MultiTempGAN."""
    signal, noise, _, _ = _sums(x, x_hat, valid)
    return _snr(signal, noise)


def psnr_db(x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None = None,
            peak: float | None = None) -> float:
    """PSNR with ``peak`` = the largest value of the reference image x unless given."""
    _, noise, count, top = _sums(x, x_hat, valid)
    return _psnr(noise, count, top if peak is None else peak)


def laplacian(x: np.ndarray) -> np.ndarray:
    """Discrete 4-neighbour Laplacian of every band, on interior pixels: (bands, H-2, W-2)."""
    x = np.asarray(x, dtype=np.float64)
    return (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:]
            - 4.0 * x[:, 1:-1, 1:-1])


def _lmse_sums(x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None) -> tuple[float, float]:
    """(sum (L(x) - L(x_hat))^2, sum L(x)^2) over interior pixels (whose 3x3 neighbourhood is
    fully valid when a mask is given), band by band in row strips with one row of halo. The
    Laplacian is linear, so L(x) - L(x_hat) is computed as L(x - x_hat)."""
    inner = None
    if valid is not None and not valid.all():
        v = valid.astype(bool)
        inner = (v[1:-1, 1:-1] & v[:-2, 1:-1] & v[2:, 1:-1] & v[1:-1, :-2] & v[1:-1, 2:])
    num = denom = 0.0
    for a_band, b_band in zip(np.asarray(x), np.asarray(x_hat)):
        for rows in _strips(a_band.shape[0], halo=1):
            a = a_band[rows].astype(np.float64)
            la, ld = laplacian(a[None])[0], laplacian((a - b_band[rows])[None])[0]
            if inner is not None:
                keep = inner[rows.start : rows.stop - 2]
                la, ld = la[keep], ld[keep]
            la, ld = la.ravel(), ld.ravel()
            num += float(ld @ ld)
            denom += float(la @ la)
    return num, denom


def lmse(x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Laplacian MSE = sum (L(x) - L(x_hat))^2 / sum L(x)^2 (interior pixels whose 3x3
    neighbourhood is fully valid when a mask is given). Band by band, like the other sums."""
    num, denom = _lmse_sums(x, x_hat, valid)
    return float("nan") if denom == 0 else float(num / denom)


@dataclass
class RunningMetrics:
    """The same sums as `image_metrics`, added up over pieces of a scene too large to hold:
    pixel sums over disjoint windows, Laplacian sums over row strips that carry one row of halo
    on each side (their interior rows are then disjoint and cover the scene's interior)."""
    signal: float = 0.0
    noise: float = 0.0
    count: int = 0
    peak: float = -np.inf
    laplacian_error: float = 0.0
    laplacian_signal: float = 0.0

    def add_pixels(self, x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None = None) -> None:
        signal, noise, count, peak = _sums(x, x_hat, valid)
        self.signal, self.noise, self.count = self.signal + signal, self.noise + noise, self.count + count
        self.peak = max(self.peak, peak)

    def add_laplacian(self, x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None = None) -> None:
        num, denom = _lmse_sums(x, x_hat, valid)
        self.laplacian_error += num
        self.laplacian_signal += denom

    def result(self) -> dict:
        lmse_value = (
            float("nan") if self.laplacian_signal == 0 else self.laplacian_error / self.laplacian_signal
        )
        return {"snr_db": _snr(self.signal, self.noise), "psnr_db": _psnr(self.noise, self.count, self.peak),
                "lmse": float(lmse_value)}


def image_metrics(x: np.ndarray, x_hat: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """SNR, PSNR and LMSE of one image, the record every stage reports."""
    running = RunningMetrics()
    running.add_pixels(x, x_hat, valid)
    running.add_laplacian(x, x_hat, valid)
    return running.result()


def mean_over_images(records: list[dict]) -> dict:
    """Average per-image metrics over images, the way the paper averages over its pairs."""
    keys = records[0].keys() if records else []
    return {k: float(np.mean([r[k] for r in records])) for k in keys}
