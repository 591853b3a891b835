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


def _table(codes, levels, method):
    """Codes as indices into a table of levels; a code past the table is a corrupt payload."""
    if codes.size and int(codes.max()) >= levels.size:
        raise QmtganError(f"a {method} code ({int(codes.max())}) lies past its {levels.size}-level codebook")
    return levels[codes]


def _codebook(codes, side, bits, axis):
    if not 1 <= side.size <= (1 << bits):
        raise QmtganError(f"a {bits}-bit kmeans codebook has {side.size} levels, not 1..{1 << bits}")
    return _table(codes, side.astype(np.float64), "kmeans")


def pwl_levels(breakpoint: float, peak: float, bits: int) -> np.ndarray:
    """The sorted 2^b levels of the piecewise-linear grid: 2^(b-1) evenly spaced on [-p, p],
    and 2^(b-2) on each tail at the centres of equal cells of (p, peak]."""
    inner = np.linspace(-breakpoint, breakpoint, 1 << (bits - 1))
    tail = breakpoint + (np.arange(1 << (bits - 2)) + 0.5) * (peak - breakpoint) / (1 << (bits - 2))
    return np.concatenate([-tail[::-1], inner, tail]).astype(np.float32)


def _piecewise_linear(codes, side, bits, axis):
    if side.size != 2 or not np.all(np.isfinite(side)):
        raise QmtganError(f"a pwl tensor needs 2 finite side values (breakpoint, peak), found {side.size}")
    return _table(codes, pwl_levels(float(side[0]), float(side[1]), bits).astype(np.float64), "pwl")


DEQUANTIZERS: dict[str, Callable] = {
    "global": _linear, "linear": _linear, "fixed_point": _fixed_point, "symmetric": _scaled,
    "stochastic": _scaled, "mse": _scaled, "asymmetric": _asymmetric, "integer": _per_channel,
    "kmeans": _codebook, "pwl": _piecewise_linear,
}


def dequantize(method: str, codes: np.ndarray, side: np.ndarray, bits: int, axis: int = -1) -> np.ndarray:
    if method not in DEQUANTIZERS:
        raise QmtganError(f"unknown quantization method '{method}' in payload")
    return DEQUANTIZERS[method](codes, np.asarray(side, np.float32), bits, axis).astype(np.float32)
