"""Reconstruct the target of a pair with a trained generator: a georeferenced GeoTIFF of the
whole scene, and SNR / PSNR / LMSE against the true target."""

from __future__ import annotations

import json
from pathlib import Path

from qmtgan.runtime.atomic import write_text_atomic
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.raster import write_geotiff
from qmtgan.runtime.scene import Scene
from qmtgan.train.dataset import make_patch_set
from qmtgan.train.model_io import load_model
from qmtgan.train.pair import load_pair
from qmtgan.train.reconstruct import reconstruct_scene, scene_metrics


def evaluate(model_dir: str | Path, pair_dir: str | Path, out_tif: str | Path,
             progress: bool = True) -> dict:
    generator, cfg, norm, meta = load_model(model_dir)
    pair = load_pair(pair_dir)
    reference, target, manifest = pair.reference, pair.target, pair.patches
    if manifest["patch_size"] != cfg.patch_size:
        raise QmtganError(f"model was trained on {cfg.patch_size} px patches, the pair is cut "
                          f"into {manifest['patch_size']} px patches")
    patches = make_patch_set(reference, target, cfg.patch_size, normalization=norm)
    valid = pair.valid
    recon = reconstruct_scene(generator, patches.reference, patches.grid, norm, valid, progress)
    result = scene_metrics(target.data, recon, valid, patches.grid)
    result.update(model=str(model_dir), pair=str(pair_dir), output=str(out_tif),
                  generator=cfg.to_dict(), valid_pixels=int(valid.sum()))
    out_tif = Path(out_tif)
    write_geotiff(out_tif, Scene(recon, reference.crs, reference.transform), valid=valid,
                  tags={"qmtgan_snr_db": f"{result['snr_db']:.4f}"})
    write_text_atomic(out_tif.with_suffix(".json"), json.dumps(result, indent=2))
    return result
