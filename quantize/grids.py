"""Each quantized tensor's grid as a sorted table of levels, for the methods that give one grid
per tensor: what fake quantization (finetune.py) rounds to and what data-aware rounding
(adaround.py) chooses between. A tensor's code is the index of its level in the table."""

from __future__ import annotations

import numpy as np

from qmtgan.quantize.methods import QTensor
from qmtgan.runtime.dequant import dequantize
from qmtgan.runtime.errors import QmtganError

# Methods whose grid is one set of levels per tensor, ascending with the code (per-channel
# grids and the shared global range are not handled).
GRID_METHODS = ("symmetric", "asymmetric", "linear", "mse", "kmeans", "pwl")


def check_grid_method(method: str, what: str) -> None:
    if method not in GRID_METHODS:
        raise QmtganError(f"{what} needs one grid per tensor: --method one of {', '.join(GRID_METHODS)}, "
                          f"not {method}")


def levels(q: QTensor) -> np.ndarray:
    """Level c of the tensor's grid is what code c dequantizes to (ascending in c)."""
    count = q.side.size if q.method == "kmeans" else 1 << q.bits
    return dequantize(q.method, np.arange(count, dtype=np.uint32), q.side, q.bits).astype(np.float32)
