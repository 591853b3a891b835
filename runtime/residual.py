"""The residual of a prediction, as an integer image a JPEG2000 codec takes, and its inverse.

Encoder and decoder form the prediction the same way (float32 DN), so the decoder adds the
decoded residual to its own prediction. Nodata pixels carry no residual and stay 0.
"""

from __future__ import annotations

import numpy as np

from qmtgan.runtime import jpeg2000
from qmtgan.runtime.errors import QmtganError

DTYPE = "int16"
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
    """The residual image a header record describes ({"codec", "dtype", "shape"}), which must
    be `expected` (the reference's bands, H, W): the record's shape, then the codestream's own
    header, are compared with it before anything is decoded or allocated."""
    if not isinstance(record, dict) or record.get("codec") != "jpeg2000" or record.get("dtype") != DTYPE:
        got = (record.get("codec"), record.get("dtype")) if isinstance(record, dict) else record
        raise QmtganError(f"unknown residual coding {got}")
    shape = record.get("shape")
    if not isinstance(shape, list) or tuple(shape) != tuple(expected):
        raise QmtganError(f"residual record says shape {shape!r}, the reference is {tuple(expected)}")
    return jpeg2000.decode(data, tuple(expected), DTYPE)
