"""A quantized generator <-> a .qmtg payload, and decoding a payload into the target scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qmtgan import __version__
from qmtgan.quantize.model import QuantizedModel
from qmtgan.runtime import payload as fmt
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.scene import BAND_ORDER, Scene


def scene_header(scene: Scene, patch_size: int) -> dict:
    h, w = scene.shape
    return {"height": h, "width": w, "crs": scene.crs.to_wkt() if scene.crs else None,
            "transform": list(scene.transform)[:6], "patch_size": patch_size}


def to_payload(qmodel: QuantizedModel, generator_config: dict, norm: Normalization, scene: dict) -> fmt.Payload:
    tensors = []
    for e in qmodel.entries:
        tensors.append({"name": e.info.name, "layer": e.info.layer, "role": e.info.role,
                        "shape": list(e.info.shape), "bits": e.bits,
                        "method": e.q.method if e.quantized else "float32",
                        "channel_axis": e.info.channel_axis,
                        "side": int(e.q.side.size) if e.quantized else 0})
    header = {"format": "qmtg", "qmtgan_version": __version__, "generator": generator_config,
              "bands": list(BAND_ORDER), "normalization": norm.to_dict(),
              "policy": qmodel.policy.to_dict(), "method": qmodel.policy.method,
              "seed": qmodel.seed, "shared_side": qmodel.shared_side, "scene": scene,
              "tensors": tensors}
    return fmt.Payload(header,
                       [e.q.codes if e.quantized else None for e in qmodel.entries],
                       [e.q.side if e.quantized else None for e in qmodel.entries],
                       [None if e.quantized else e.value for e in qmodel.entries])


def check_reference(header: dict, reference: Scene, name: str) -> None:
    """The reference must be the image the payload was made against: bands and grid."""
    if header["bands"] != list(BAND_ORDER):
        raise QmtganError(f"{name}: band order {header['bands']} differs from this qmtgan's {list(BAND_ORDER)}")
    if reference.data.shape[0] != len(header["bands"]):
        raise QmtganError(f"reference has {reference.data.shape[0]} bands, {name} expects {len(header['bands'])}")
    scene = header["scene"]
    if reference.shape != (scene["height"], scene["width"]):
        raise QmtganError(f"reference is {reference.shape[0]}x{reference.shape[1]} px, {name} was made "
                          f"for a {scene['height']}x{scene['width']} px reference")
    if not np.allclose(list(reference.transform)[:6], scene["transform"]):
        raise QmtganError(f"reference grid {list(reference.transform)[:6]} differs from the one {name} "
                          f"was made for {scene['transform']}")


def decode_target(payload_path: str | Path, reference: Scene, out_tif: str | Path,
                  progress: bool = True) -> Path:
    """Rebuild the georeferenced target from the reference and a payload."""
    from qmtgan.quantize.model import assign_weights
    from qmtgan.runtime.raster import write_geotiff
    from qmtgan.runtime.tiling import PatchGrid
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.models.registry import build_generator
    from qmtgan.train.reconstruct import reconstruct_scene

    payload = fmt.read(payload_path)
    header = payload.header
    check_reference(header, reference, str(payload_path))
    try:
        cfg = GeneratorConfig.from_dict(header["generator"])
        norm = Normalization.from_dict(header["normalization"])
        generator = build_generator(cfg)
        expected = [tuple(v.shape) for layer in generator.layers for v in layer.trainable_weights]
        found = [tuple(t["shape"]) for t in header["tensors"]]
        if expected != found:
            raise QmtganError(f"{payload_path}: tensor shapes do not match the {cfg.name} architecture")
        assign_weights(generator, payload.weights())
    except (KeyError, TypeError, ValueError) as exc:
        raise QmtganError(f"{payload_path}: inconsistent header ({exc})") from exc
    grid = PatchGrid(*reference.shape, cfg.patch_size)
    valid = reference.valid
    recon = reconstruct_scene(generator, grid.cut(norm.forward(reference.data)), grid, norm, valid, progress)
    return write_geotiff(out_tif, Scene(recon, reference.crs, reference.transform), valid=valid)
