"""RGB previews of 12-band scenes: every three bands form one RGB image, four composites per
image, as in the paper's figures; and pair images with the target left, reference right."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qmtgan.runtime.atomic import atomic_file
from qmtgan.runtime.scene import Scene


def stretch(band: np.ndarray, valid: np.ndarray, lo_hi: tuple[float, float] | None = None) -> np.ndarray:
    """2-98 % percentile stretch to [0, 1] (nodata black)."""
    if lo_hi is None:
        vals = band[valid] if valid.any() else band.ravel()
        lo_hi = tuple(np.percentile(vals, [2, 98]))
    lo, hi = lo_hi
    out = np.clip((band - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    out[~valid] = 0.0
    return out


def composites(scene: Scene, valid: np.ndarray, ranges: list | None = None) -> list[tuple[str, np.ndarray]]:
    """[(name 'B01-B02-B03', HxWx3 float in [0,1]), ...] for the four band triplets."""
    out = []
    for k in range(0, len(scene.bands) - 2, 3):
        idx = range(k, k + 3)
        rgb = np.stack([stretch(scene.data[i], valid, ranges[i] if ranges else None) for i in idx], -1)
        out.append(("-".join(scene.bands[i] for i in idx), rgb))
    return out


def band_ranges(scene: Scene, valid: np.ndarray) -> list[tuple[float, float]]:
    """Stretch ranges of one scene, reused for the other images of a pair so colours compare."""
    return [tuple(np.percentile(b[valid], [2, 98])) for b in scene.data]


def save_png(path: Path, rgb: np.ndarray) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_file(path) as tmp:
        plt.imsave(tmp, rgb, format="png")
    return path


def write_previews(out_dir: str | Path, scenes: dict[str, Scene], valid: np.ndarray,
                   pair: tuple[str, str] | None = None) -> list[Path]:
    """One PNG per scene and band triplet, stretched with the first scene's ranges; with
    ``pair`` = (left, right) names also side-by-side images (the paper shows target | reference)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = next(iter(scenes.values()))
    ranges = band_ranges(first, valid)
    made, comps = [], {}
    for name, scene in scenes.items():
        comps[name] = composites(scene, valid, ranges)
        for bands, rgb in comps[name]:
            made.append(save_png(out_dir / f"{name}_{bands}.png", rgb))
    if pair:
        left, right = pair
        for (bands, a), (_, b) in zip(comps[left], comps[right]):
            made.append(save_png(out_dir / f"pair_{bands}.png", np.concatenate([a, b], axis=1)))
    return made
