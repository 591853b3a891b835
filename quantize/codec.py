"""A quantized generator -> a .qmtg payload (decoding lives in runtime/decode.py)."""

from __future__ import annotations


from qmtgan import __version__
from qmtgan.quantize.model import QuantizedModel
from qmtgan.runtime import payload as fmt
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.scene import BAND_ORDER, Scene


def scene_header(scene: Scene, patch_size: int) -> dict:
    h, w = scene.shape
    return {"height": h, "width": w, "crs": crs_text(scene.crs),
            "transform": list(scene.transform)[:6], "patch_size": patch_size}


def crs_text(crs) -> str | None:
    """The CRS as its authority code ("EPSG:32636") when it has one, else as WKT: a few bytes
    instead of several hundred (the decoder takes the reference's CRS, and checks the code)."""
    if crs is None:
        return None
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else crs.to_wkt()


def to_payload(
    qmodel: QuantizedModel, generator_config: dict, norm: Normalization, scene: dict | None
) -> fmt.Payload:
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
