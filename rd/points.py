"""Rate-distortion points: every codec (baselines, generators, hybrids) is scored here, in one
place, on one pair, with the rate from bytes: bpp = 8 x bytes / (H x W x bands)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from qmtgan.runtime import metrics
from qmtgan.runtime.scene import Scene


@dataclass
class PairData:
    """A pair as the rate-distortion stage sees it."""

    name: str
    reference: Scene
    target: Scene
    valid: np.ndarray                # valid in both images
    changes: np.ndarray | None       # simulated land-cover change areas, when known
    preset: str = ""
    memo: dict = field(default_factory=dict, repr=False)  # predictions several codecs share

    @property
    def samples(self) -> int:
        return int(self.target.data.size)  # H x W x bands

    @classmethod
    def load(cls, pair_dir: str | Path, name: str | None = None) -> "PairData":
        from qmtgan.train.pair import load_pair
        from qmtgan.train.simulate import change_mask

        pair = load_pair(pair_dir)
        simulation = pair.meta.get("simulation") or {}
        return cls(
            name or Path(pair_dir).name,
            pair.reference,
            pair.target,
            pair.valid,
            change_mask(simulation, pair.reference.shape),
            simulation.get("config", {}).get("preset", ""),
        )


@dataclass
class RDPoint:
    pair: str
    family: str  # reference | gain-offset | linear | jpeg2000 | linear+jpeg2000 | generator | hybrid
    label: str
    bytes: int
    bpp: float
    requested_bpp: float | None
    snr_db: float
    psnr_db: float
    lmse: float
    snr_change_db: float | None   # inside the simulated change areas
    snr_outside_db: float | None  # everywhere else
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-safe: a non-finite metric (a lossless SNR, an LMSE of a flat image) becomes null."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }


def score(pair: PairData, family: str, label: str, recon: np.ndarray, nbytes: int,
          requested_bpp: float | None = None, **extra) -> RDPoint:
    """The record of one reconstruction (bands, H, W) in DN that cost ``nbytes``."""
    m = metrics.image_metrics(pair.target.data, recon, pair.valid)
    inside = outside = None
    if pair.changes is not None:
        inside = metrics.snr_db(pair.target.data, recon, pair.valid & pair.changes)
        outside = metrics.snr_db(pair.target.data, recon, pair.valid & ~pair.changes)
    return RDPoint(pair.name, family, label, int(nbytes), 8.0 * nbytes / pair.samples, requested_bpp,
                   m["snr_db"], m["psnr_db"], m["lmse"], inside, outside, dict(extra))
