"""Simulate a later acquisition (the target) from one real Sentinel-2 scene (the reference).

The sample data set has one date only, so the second date is made from it, seeded and
deterministic. Every random draw is recorded in the returned parameters, which `prepare`
writes into the pair's metadata. Effects, in order (all in DN):
  1. illumination/atmosphere: per-band gain ~ 1 + N(0, gain_sigma), offset ~ N(0, offset_sigma);
  2. phenology driven by the reference NDVI: vegetated pixels brighten (or darken) in the
     red-edge/NIR bands and move the other way in red and SWIR, by one seeded strength;
  3. localized land-cover change: a few soft-edged discs take the spectra of another part of
     the scene (a field harvested, a clearing, new built-up ground);
  4. sub-pixel misregistration: one global shift of at most `max_shift_px` (bilinear);
  5. sensor noise: Gaussian, sigma = noise_rel x the band's median.
Nodata pixels of the reference stay nodata. This is a simulation, not a real second date:
real pairs go through the same ingest/alignment path without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.scene import BAND_ORDER, NODATA, Scene

_IDX = {b: i for i, b in enumerate(BAND_ORDER)}
# How each band follows vegetation vigour (+: up with green-up, -: down).
PHENOLOGY_RESPONSE = {"B03": 0.1, "B04": -0.5, "B05": 0.2, "B06": 0.8, "B07": 1.0, "B08": 1.0,
                      "B8A": 1.0, "B11": -0.3, "B12": -0.4}


@dataclass(frozen=True)
class SimulationConfig:
    seed: int = 0
    preset: str = "default"   # the name of the parameter set below (see PRESETS)
    gain_sigma: float = 0.04
    offset_sigma: float = 40.0
    max_phenology: float = 0.2
    changes: int = 5
    change_radius_px: tuple[int, int] = (20, 60)
    max_shift_px: float = 0.5
    noise_rel: float = 0.005


# Pairs of different character (seeded like any other draw); "default" is the demo's pair.
PRESETS: dict[str, dict] = {
    "default": {},
    "mild": {"gain_sigma": 0.02, "offset_sigma": 20.0, "max_phenology": 0.05, "changes": 1,
             "change_radius_px": (10, 30)},
    "seasonal": {"gain_sigma": 0.06, "offset_sigma": 60.0, "max_phenology": 0.4, "changes": 2},
    "change": {"max_phenology": 0.1, "changes": 12, "change_radius_px": (20, 80)},
}


def preset_config(preset: str, seed: int) -> SimulationConfig:
    if preset not in PRESETS:
        raise QmtganError(f"unknown simulation preset '{preset}' (choose from {', '.join(PRESETS)})")
    return SimulationConfig(seed=seed, preset=preset, **PRESETS[preset])


def change_mask(simulation: dict | None, shape: tuple[int, int]) -> np.ndarray | None:
    """Pixels touched by a simulated land-cover change (any weight > 0), or None for a pair
    without simulated changes."""
    changes = (simulation or {}).get("land_cover_changes") or []
    if not changes:
        return None
    mask = np.zeros(shape, bool)
    for c in changes:
        mask |= _change_mask(shape, tuple(c["center_rc"]), float(c["radius_px"])) > 0
    return mask


def _change_mask(shape: tuple[int, int], center: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    d = np.hypot(yy - center[0], xx - center[1])
    return np.clip((radius - d) / (0.25 * radius) + 0.5, 0.0, 1.0).astype(np.float32)


def simulate_target(reference: Scene, config: SimulationConfig = SimulationConfig()) -> tuple[Scene, dict]:
    """Return the simulated target scene (same grid) and the parameters that made it."""
    rng = np.random.default_rng(config.seed)
    x = reference.data.astype(np.float32)
    valid = reference.valid
    bands, h, w = x.shape

    gains = 1.0 + rng.normal(0.0, config.gain_sigma, bands)
    offsets = rng.normal(0.0, config.offset_sigma, bands)
    y = x * gains[:, None, None].astype(np.float32) + offsets[:, None, None].astype(np.float32)

    red, nir = x[_IDX["B04"]], x[_IDX["B08"]]
    ndvi = (nir - red) / np.maximum(nir + red, 1.0)
    vigour = np.clip((ndvi - 0.2) / 0.5, 0.0, 1.0)
    strength = float(rng.uniform(-config.max_phenology, config.max_phenology))
    for band, response in PHENOLOGY_RESPONSE.items():
        y[_IDX[band]] *= 1.0 + strength * response * vigour

    changes = []
    for _ in range(config.changes):
        radius = float(rng.uniform(*config.change_radius_px))
        center = (int(rng.integers(0, h)), int(rng.integers(0, w)))
        donor_shift = (int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4)))
        mask = _change_mask((h, w), center, radius)
        donor = np.roll(y, donor_shift, axis=(1, 2))
        y = y * (1.0 - mask) + donor * mask
        changes.append({"center_rc": center, "radius_px": radius, "donor_shift_rc": donor_shift})

    shift = rng.uniform(-config.max_shift_px, config.max_shift_px, 2)
    y = np.stack([ndimage.shift(b, shift, order=1, mode="nearest") for b in y])

    sigmas = config.noise_rel * np.array([np.median(b[valid]) if valid.any() else 0.0 for b in x])
    y += rng.normal(0.0, 1.0, y.shape).astype(np.float32) * sigmas[:, None, None].astype(np.float32)

    y = np.clip(y, 1.0, 65535.0)
    y[:, ~valid] = NODATA
    params = {"kind": "simulated-later-acquisition", "config": asdict(config),
              "gains": gains.round(6).tolist(), "offsets_dn": offsets.round(3).tolist(),
              "phenology_strength": strength, "land_cover_changes": changes,
              "shift_px_rc": shift.round(6).tolist(), "noise_sigma_dn": sigmas.round(4).tolist()}
    target = Scene(y.astype(np.float32), reference.crs, reference.transform,
                   source=f"simulated from {reference.source} (seed {config.seed})",
                   meta={"simulation": params})
    return target, params
