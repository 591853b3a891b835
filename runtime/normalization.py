"""Per-band linear map between sensor values (DN) and the generator's tanh range [-1, 1].

The parameters travel with the model (model.json, later the .qmtg header): the decoder needs
them to turn the generator's output back into DN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmtgan.runtime.errors import QmtganError

# Percentiles of the valid pixels of both images that map to -1 and +1. Values beyond them
# are clipped: the generator's tanh cannot produce them anyway, and 0.1 % tails (saturated
# or cloud pixels) would otherwise squeeze the useful range.
LOW_PERCENTILE = 0.1
HIGH_PERCENTILE = 99.9


@dataclass(frozen=True)
class Normalization:
    low: tuple[float, ...]
    high: tuple[float, ...]
    low_percentile: float = LOW_PERCENTILE
    high_percentile: float = HIGH_PERCENTILE

    @classmethod
    def fit(
        cls, images: list[np.ndarray], valid: np.ndarray, clip_percent: float = LOW_PERCENTILE
    ) -> "Normalization":
        """Fit per-band ranges on the valid pixels of band-first images: the ``clip_percent``
        and 100 - ``clip_percent`` percentiles (0: the full range, nothing clipped, where a
        clipped target pixel would cap a near-perfect prediction; on real scenes a few saturated
        pixels make that range wide enough to squeeze everything else)."""
        if not valid.any():
            raise QmtganError("cannot fit normalization: every pixel is nodata")
        if not 0.0 <= clip_percent < 50.0:
            raise QmtganError(f"normalization clip percentile must be in [0, 50), got {clip_percent}")
        stacked = np.concatenate([img[:, valid] for img in images], axis=1)
        lo, hi = np.percentile(stacked, [clip_percent, 100.0 - clip_percent], axis=1)
        hi = np.maximum(hi, lo + 1.0)  # a constant band still gets a usable range
        return cls(
            tuple(float(v) for v in lo), tuple(float(v) for v in hi), clip_percent, 100.0 - clip_percent
        )

    def _arrays(self, bands: int) -> tuple[np.ndarray, np.ndarray]:
        if bands != len(self.low):
            raise QmtganError(f"normalization has {len(self.low)} bands, data has {bands}")
        lo = np.asarray(self.low, np.float32).reshape(-1, 1, 1)
        hi = np.asarray(self.high, np.float32).reshape(-1, 1, 1)
        return lo, hi

    def forward(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(bands, H, W) DN -> float32 in [-1, 1], into `out` if given (a float32 array or view
        of x's shape, e.g. a channels-last buffer seen band-first)."""
        lo, hi = self._arrays(x.shape[0])
        # 2 (x - lo) / (hi - lo) - 1, evaluated in that order in one float32 buffer
        y = np.subtract(x, lo, dtype=np.float32, out=out)
        y *= 2.0
        y /= hi - lo
        y -= 1.0
        return np.clip(y, -1.0, 1.0, out=y)

    def inverse(self, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(bands, H, W) in [-1, 1] -> float32 DN, into `out` if given (may be y itself)."""
        lo, hi = self._arrays(y.shape[0])
        # (y + 1) 0.5 (hi - lo) + lo, evaluated in that order in one float32 buffer
        x = np.add(y, 1.0, dtype=np.float32, out=out)
        x *= 0.5
        x *= hi - lo
        x += lo
        return x

    def to_dict(self) -> dict:
        return {"kind": "percentile-linear", "low_percentile": self.low_percentile,
                "high_percentile": self.high_percentile, "low": _compact(self.low),
                "high": _compact(self.high)}

    def outward_to_integers(self) -> "Normalization":
        """The same map with each range widened to whole DN: nothing more is clipped, and the
        bounds are a few characters each in a header."""
        return Normalization(tuple(float(np.floor(v)) for v in self.low),
                             tuple(float(np.ceil(v)) for v in self.high), self.low_percentile,
                             self.high_percentile)

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        try:
            low, high = tuple(map(float, d["low"])), tuple(map(float, d["high"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise QmtganError(f"bad normalization record: {exc}") from exc
        if len(low) != len(high):
            raise QmtganError(f"normalization low has {len(low)} bands, high has {len(high)}")
        return cls(low, high, float(d.get("low_percentile", LOW_PERCENTILE)),
                   float(d.get("high_percentile", HIGH_PERCENTILE)))


def _compact(values: tuple[float, ...]) -> list[float | int]:
    """Whole values as JSON integers (the same numbers, fewer characters)."""
    return [int(v) if float(v).is_integer() else v for v in values]
