"""A spectral KLT (principal components over the bands): the transform a residual (or an
image) goes through before JPEG2000 codes its components, and back. numpy only: the device
decodes with it."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np

from qmtgan.runtime.errors import QmtganError

_CHUNK = 1 << 16  # pixels per chunk of the fit's float64 sums


@dataclass(frozen=True)
class Klt:
    """An orthonormal spectral transform fitted to an image's valid pixels: components =
    basis.T @ (x - mean), stored as int16 in steps of `step` (the smallest power of two that
    keeps the largest component in range). Orthonormal, so an error in the components is the
    same squared error in the bands, and OpenJPEG's rate allocation over the components of one
    codestream (post-compression rate-distortion optimization, by squared error) is an
    allocation over the bands' error too."""
    mean: np.ndarray    # (bands,)
    basis: np.ndarray   # (bands, bands), columns by decreasing variance
    step: float

    @property
    def side_bytes(self) -> int:
        return self.byte_count(self.mean.size)  # float32

    def to_bytes(self) -> bytes:
        """mean, basis (row-major) and step as little-endian float32: what a payload carries."""
        return np.concatenate([self.mean, self.basis.ravel(), [self.step]]).astype("<f4").tobytes()

    def to_text(self) -> str:
        """``to_bytes`` as base64 (the residual record of format 2.1-2.4)."""
        return base64.b64encode(self.to_bytes()).decode("ascii")

    @staticmethod
    def byte_count(bands: int) -> int:
        return 4 * (bands + bands * bands + 1)

    @classmethod
    def from_text(cls, text: object, bands: int) -> "Klt":
        """The transform of a base64 residual record, checked as ``from_bytes`` checks it."""
        try:
            raw = base64.b64decode(str(text), validate=True)
        except (ValueError, TypeError) as exc:
            raise QmtganError(f"residual KLT record is not base64 ({exc})") from exc
        return cls.from_bytes(raw, bands)

    @classmethod
    def from_bytes(cls, raw: bytes, bands: int) -> "Klt":
        """The transform of ``to_bytes``, checked: the expected count of finite values, an
        orthonormal basis, and a step that is a power of two from 1 to 2^16."""
        if len(raw) != cls.byte_count(bands):
            raise QmtganError(f"residual KLT record has {len(raw)} bytes, {bands} bands need "
                              f"{cls.byte_count(bands)}")
        values = np.frombuffer(raw, "<f4").astype(np.float32)
        mean, basis, step = values[:bands], values[bands:-1].reshape(bands, bands), float(values[-1])
        if (not np.all(np.isfinite(values)) or step < 1 or step > 2 ** 16 or not math.log2(step).is_integer()
                or not np.allclose(basis.T @ basis, np.eye(bands), atol=1e-3)):
            raise QmtganError("residual KLT record is not an orthonormal transform with a power-of-two step")
        return cls(mean, basis, step)

    @classmethod
    def fit(cls, image: np.ndarray, valid: np.ndarray) -> "Klt":
        x = image[:, valid]
        bands, n = x.shape
        mean = x.mean(axis=1, dtype=np.float64) if n else np.zeros(bands)
        # float64 sums over column chunks: no whole-image float64 copy, which costs more than the sums
        chunks = [slice(i, i + _CHUNK) for i in range(0, n, _CHUNK)]
        centred = lambda c: x[:, c].astype(np.float64) - mean[:, None]
        cov = sum((d @ d.T for d in map(centred, chunks)), np.zeros((bands, bands))) / max(n - 1, 1)
        variance, basis = np.linalg.eigh(cov)
        basis = basis[:, np.argsort(variance)[::-1]].astype(np.float32)
        peak = max((float(np.max(np.abs(basis.T @ centred(c)))) for c in chunks), default=0.0)
        step = float(2.0 ** max(0, int(np.ceil(np.log2(max(peak, 1.0) / 32000.0)))))
        return cls(mean.astype(np.float32), basis, step)

    def forward(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        bands, h, w = image.shape
        comps = self.basis.T @ (image.reshape(bands, -1) - self.mean[:, None])
        comps = np.clip(np.rint(comps / self.step), -32768, 32767).reshape(bands, h, w)
        comps[:, ~valid] = 0  # nodata codes as the mean: no edge for the wavelet to spend bits on
        return comps.astype(np.int16)

    def inverse(self, comps: np.ndarray) -> np.ndarray:
        bands, h, w = comps.shape
        x = self.basis @ (comps.reshape(bands, -1).astype(np.float32) * self.step) + self.mean[:, None]
        return x.reshape(bands, h, w)


