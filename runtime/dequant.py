"""Integer codes + side information -> float32 weights, for every PTQ method (numpy only).

This is the decoder's half of quantize/methods.py, kept here so that a device decodes a
.qmtg payload with numpy alone. Codes are unsigned; signed grids are offset by 2^(bits-1).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from qmtgan.runtime.errors import QmtganError


def signed(codes: np.ndarray, bits: int) -> np.ndarray:
    return codes.astype(np.int64) - (1 << (bits - 1))


def _linear(codes, side, bits, axis):
    return side[0] + codes.astype(np.float64) * side[1]


def _fixed_point(codes, side, bits, axis):
    return signed(codes, bits) * 2.0 ** (-float(side[0]))


def _scaled(codes, side, bits, axis):
    return signed(codes, bits) * float(side[0])


def _asymmetric(codes, side, bits, axis):
    return (codes.astype(np.float64) - float(side[1])) * float(side[0])


def _per_channel(codes, side, bits, axis):
    q = signed(codes, bits).astype(np.float64)
    if codes.ndim <= 1:
        return q * float(side[0])
    shape = [1] * codes.ndim
    shape[axis] = -1
    return q * np.asarray(side, np.float64).reshape(shape)


DEQUANTIZERS: dict[str, Callable] = {
    "global": _linear, "linear": _linear, "fixed_point": _fixed_point, "symmetric": _scaled,
    "stochastic": _scaled, "mse": _scaled, "asymmetric": _asymmetric, "integer": _per_channel,
}


def dequantize(method: str, codes: np.ndarray, side: np.ndarray, bits: int, axis: int = -1) -> np.ndarray:
    if method not in DEQUANTIZERS:
        raise QmtganError(f"unknown quantization method '{method}' in payload")
    return DEQUANTIZERS[method](codes, np.asarray(side, np.float32), bits, axis).astype(np.float32)
