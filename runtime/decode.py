"""Decode a .qmtg payload into the target scene with numpy alone: payload -> dequantized
weights -> the numpy generator, run on the reference over the encoder's patch grid, plus the
payload's coded residual when it carries one (hybrid mode; JPEG2000 through rasterio)."""

from __future__ import annotations

import os

import numpy as np

from qmtgan.runtime import payload as fmt
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.infer import run_scene
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.numpy_generator import NumpyGenerator
from qmtgan.runtime.residual import add_residual, decode_residual
from qmtgan.runtime.scene import BAND_ORDER, Scene
from qmtgan.runtime.shared import SharedModel, predictor_record, shared_prediction
from qmtgan.runtime.stream import stream_scene, with_residual
from qmtgan.runtime.tiling import MAX_TILE


def check_reference(header: dict, reference: Scene, name: str) -> None:
    """The reference must be the image the payload was made against: bands and grid."""
    if header["bands"] != list(BAND_ORDER):
        raise QmtganError(
            f"{name}: band order {header['bands']} differs from this qmtgan's {list(BAND_ORDER)}"
        )
    if reference.band_count != len(header["bands"]):
        raise QmtganError(
            f"reference has {reference.band_count} bands, {name} expects {len(header['bands'])}"
        )
    scene = header["scene"]
    if reference.shape != (scene["height"], scene["width"]):
        raise QmtganError(f"reference is {reference.shape[0]}x{reference.shape[1]} px, {name} was made "
                          f"for a {scene['height']}x{scene['width']} px reference")
    if reference.transform is not None and not np.allclose(list(reference.transform)[:6], scene["transform"]):
        raise QmtganError(f"reference grid {list(reference.transform)[:6]} differs from the one {name} "
                          f"was made for {scene['transform']}")
    code = scene.get("crs")
    if isinstance(code, str) and code.startswith("EPSG:") and reference.crs is not None:
        # payloads name an authority code (older ones a WKT, which only a writer reads)
        own = reference.crs.to_epsg()
        if own is not None and f"EPSG:{own}" != code:
            raise QmtganError(f"reference CRS EPSG:{own} differs from the one {name} was made for ({code})")


def decode_payload(path: str | os.PathLike, reference: Scene, progress: bool = False,
                   shared: SharedModel | None = None) -> np.ndarray:
    """(bands, H, W) DN reconstruction of the target; nodata pixels of the reference are 0."""
    return reconstruct(fmt.read(path), reference, str(path), progress, shared)


def reconstruct(payload: fmt.Payload, reference: Scene, name: str = "payload", progress: bool = False,
                shared: SharedModel | None = None) -> np.ndarray:
    """The prediction (the payload's own generator, or a shared generator's gated refinement of
    the payload's linear base), plus the coded residual of a hybrid payload (decoded, and so
    checked, first)."""
    residual = None
    check_reference(payload.header, reference, name)
    if payload.header.get("residual"):
        residual = _residual(payload, reference, name)
    if predictor_record(payload.header, name) is not None:
        pred = shared_prediction(payload, reference, shared, name, progress)
    else:
        pred = predict(payload, reference, name, progress)
    return pred if residual is None else add_residual(pred, residual, reference.valid)


def _residual(payload: fmt.Payload, reference: Scene, name: str) -> np.ndarray:
    """The payload's decoded residual, checked against the reference's shape."""
    try:
        return decode_residual(payload.residual, payload.header["residual"],
                               (reference.band_count, *reference.shape))
    except QmtganError as exc:
        raise QmtganError(f"{name}: {exc}") from exc


def _decoder(payload: fmt.Payload, reference, name: str) -> tuple[NumpyGenerator, Normalization, int]:
    """The payload's generator, normalization and tile size, checked against the reference."""
    header = payload.header
    check_reference(header, reference, name)
    try:
        tile = header["generator"]["patch_size"]
        if type(tile) is not int or not 1 <= tile <= MAX_TILE:
            raise QmtganError(f"generator patch_size {tile!r} is not in 1..{MAX_TILE}")
        norm = Normalization.from_dict(header["normalization"])
        return NumpyGenerator(header, payload.weights()), norm, tile
    except QmtganError as exc:
        raise QmtganError(f"{name}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise QmtganError(f"{name}: inconsistent header ({exc})") from exc


def predict(
    payload: fmt.Payload, reference: Scene, name: str = "payload", progress: bool = False
) -> np.ndarray:
    """The generator's prediction of the target (DN, nodata 0), without any residual."""
    generator, norm, tile = _decoder(payload, reference, name)
    pred, _ = run_scene(generator, reference.data, norm, tile, overlap=0, progress=progress)
    pred[:, ~reference.valid] = 0
    return pred


def decode_streaming(path: str | os.PathLike, reader, writer, progress: bool = False,
                     shared: SharedModel | None = None) -> None:
    """Decode a .qmtg payload tile by tile from a SceneReader into a SceneWriter (the hybrid
    residual, when there is one, is decoded whole: one int16 scene). A shared-predictor payload
    decodes whole: its linear base spans tile borders."""
    payload = fmt.read(path)
    if predictor_record(payload.header, str(path)) is not None:
        h, w = reader.shape
        reference = Scene(reader.read(0, 0, h, w), reader.crs, reader.transform)
        writer.write(0, 0, reconstruct(payload, reference, str(path), progress, shared), reference.valid)
        return
    generator, norm, tile = _decoder(payload, reader, str(path))
    residual = _residual(payload, reader, str(path)) if payload.header.get("residual") else None
    stream_scene(generator, reader, norm, tile, 0, with_residual(writer, residual), progress)


def hybrid_residual(path: str | os.PathLike, reference: Scene, generator: dict) -> np.ndarray:
    """The decoded residual of a hybrid payload made for this generator configuration and
    reference, to add to a bundle's prediction (it was coded against the numpy decoder's
    prediction, which a float bundle reproduces to a fraction of a DN)."""
    payload = fmt.read(path)
    if predictor_record(payload.header, str(path)) is not None:
        raise QmtganError(f"{path} predicts with a linear base, not a generator: decode it with `qmtgan "
                          "decode` (and --shared FILE if it names one); a bundle's input is the reference, "
                          "not the payload's linear base")
    if not payload.header.get("residual"):
        raise QmtganError(f"{path}: not a hybrid payload (it has no residual to add)")
    check_reference(payload.header, reference, str(path))
    if {**payload.header["generator"], "patch_size": 0} != {**generator, "patch_size": 0}:
        raise QmtganError(
            f"{path}: made for generator {payload.header['generator']}, the bundle runs {generator}"
        )
    return _residual(payload, reference, str(path))
