"""The residual of a prediction, as an integer image a JPEG2000 codec takes, and its inverse.

Encoder and decoder form the prediction the same way (float32 DN), so the decoder adds the
decoded residual to its own prediction. Nodata pixels carry no residual and stay 0. The
residual may go through a spectral KLT first (its components are what JPEG2000 codes).
"""

from __future__ import annotations

import numpy as np

from qmtgan.runtime import jpeg2000
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.klt import Klt

DTYPE = "int16"
# A new codec name for each KLT layout: a reader that predates it refuses the payload instead of
# adding the components as if they were the residual. "jpeg2000+klt" carries the transform as
# base64 in the record (format 2.1-2.4); KLT_CODEC puts its float32 values at the start of the
# residual's bytes, ahead of the codestream (2.5), a third fewer bytes.
KLT_TEXT_CODEC = "jpeg2000+klt"
KLT_CODEC = "jpeg2000+klt-in-res"
CODECS = ("jpeg2000", KLT_TEXT_CODEC, KLT_CODEC)
_LIMIT = np.iinfo(np.int16)


def residual_image(target: np.ndarray, prediction: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """round(target - prediction) as int16 (clipped: a residual beyond +-32767 DN is not coded)."""
    r = np.rint(np.asarray(target, np.float32) - np.asarray(prediction, np.float32))
    r[:, ~valid] = 0
    return np.clip(r, _LIMIT.min, _LIMIT.max).astype(np.int16)


def add_residual(prediction: np.ndarray, residual: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """prediction + residual in whole DN (what a uint16 GeoTIFF stores), within the sensor's
    range; nodata stays 0."""
    out = np.clip(np.rint(np.asarray(prediction, np.float32) + residual.astype(np.float32)), 0.0, 65535.0)
    out[:, ~valid] = 0.0
    return out


def decode_residual(data: bytes, record: dict, expected: tuple[int, int, int]) -> np.ndarray:
    """The residual image a header record describes ({"codec", "dtype", "shape"}; through a
    spectral KLT, the transform is the record's "klt" text or the first bytes of ``data``),
    which must be `expected` (the reference's bands, H, W): the record's shape, the transform,
    then the codestream's own header are checked before anything is decoded or allocated.
    int16 DN, or float32 DN through a KLT."""
    if not isinstance(record, dict) or record.get("codec") not in CODECS or record.get("dtype") != DTYPE:
        got = (record.get("codec"), record.get("dtype")) if isinstance(record, dict) else record
        raise QmtganError(f"unknown residual coding {got}")
    shape = record.get("shape")
    if not isinstance(shape, list) or tuple(shape) != tuple(expected):
        raise QmtganError(f"residual record says shape {shape!r}, the reference is {tuple(expected)}")
    klt = None
    if record["codec"] == KLT_TEXT_CODEC:
        klt = Klt.from_text(record.get("klt"), expected[0])
    elif record["codec"] == KLT_CODEC:
        size = Klt.byte_count(expected[0])
        klt, data = Klt.from_bytes(data[:size], expected[0]), data[size:]
    decoded = jpeg2000.decode(data, tuple(expected), DTYPE)
    return decoded if klt is None else klt.inverse(decoded)


def residual_bytes(klt: Klt | None, codestream: bytes) -> bytes:
    """What a payload's RES section holds: the KLT's values (when there is one), then the
    codestream."""
    return (b"" if klt is None else klt.to_bytes()) + codestream


def klt_residual(target: np.ndarray, prediction: np.ndarray, valid: np.ndarray) -> tuple[Klt, np.ndarray]:
    """The residual's spectral KLT, fitted on the valid pixels, and its int16 components."""
    residual = np.asarray(target, np.float32) - np.asarray(prediction, np.float32)
    klt = Klt.fit(residual, valid)
    return klt, klt.forward(residual, valid)
