"""A linear predictor's coefficients as a payload carries them: each output band's kernel
(its taps over the reference's bands and neighbourhood) as 12-bit integers with one float32
step per band, and the offsets as float32.

At 12 bits the prediction moves by a few DN, small against what a linear map of one date
onto another misses, and a 3x3 map of 12 bands takes 2,040 bytes instead of 5,232 as float32.
Encoder and decoder both predict with the dequantized values, so they agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmtgan.runtime import entropy
from qmtgan.runtime.dequant import dequantize

KERNEL_BITS = 12
METHOD = "integer"  # per-channel symmetric scales: runtime/dequant.py
FLOAT_BYTES = 4


@dataclass(frozen=True)
class CodedLinear:
    """(bands, taps + 1) coefficients, the last column the offset, as they are stored."""

    codes: np.ndarray   # uint32 (bands, taps), offset by 2^(bits-1)
    steps: np.ndarray   # float32 (bands,)
    bias: np.ndarray    # float32 (bands,)
    bits: int = KERNEL_BITS

    @classmethod
    def code(cls, coef: np.ndarray, bits: int = KERNEL_BITS) -> "CodedLinear":
        kernel = np.asarray(coef[:, :-1], np.float64)
        qmax = (1 << (bits - 1)) - 1
        steps = (np.max(np.abs(kernel), axis=1) / qmax).astype(np.float32)
        steps[steps == 0] = 1.0
        q = np.clip(np.rint(kernel / steps.astype(np.float64)[:, None]), -qmax, qmax)
        codes = (q + (1 << (bits - 1))).astype(np.uint32)
        return cls(codes, steps, np.asarray(coef[:, -1], np.float32), bits)

    @property
    def kernel(self) -> np.ndarray:
        return dequantize(METHOD, self.codes, self.steps, self.bits, 0)

    @property
    def coef(self) -> np.ndarray:
        """The coefficients both ends predict with (float32, offset last)."""
        return np.concatenate([self.kernel, self.bias[:, None]], axis=1).astype(np.float32)

    @property
    def nbytes(self) -> int:
        """What they cost in a payload: the codes as its CODE section codes them, the steps and
        the offsets."""
        _, data = entropy.encode([self.codes], [self.bits])
        return len(data) + FLOAT_BYTES * (self.steps.size + self.bias.size)
