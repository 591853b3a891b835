"""Eq. 1 of the paper and the other accounting columns of its Table 2.

  bpp = (sum over quantized tensors of params x bits + #side_information x 32
         + params kept in float32 x 32) / (#pixels x #images)

The paper rounds bpp to 4 decimals and truncates memory (MB = 2^20 bytes) and the compression
ratio (float32 bits / stored bits) to 2 decimals; `paper_row` reproduces that.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# The paper's data set: 441 patches of 512 x 512 x 12 (one Sentinel-2 tile).
PAPER_PIXELS = 512 * 512 * 12
PAPER_IMAGES = 441


@dataclass(frozen=True)
class Accounting:
    total_params: int
    quantized_params: int
    quantized_bits: int      # sum of params x bits over the quantized tensors
    side_values: int
    pixels: int              # per image, bands included (the paper: 512 x 512 x 12)
    images: int

    @property
    def float_params(self) -> int:
        return self.total_params - self.quantized_params

    @property
    def total_bits(self) -> int:
        return self.quantized_bits + 32 * self.side_values + 32 * self.float_params

    @property
    def bpp(self) -> float:
        return self.total_bits / (self.pixels * self.images)

    @property
    def ratio(self) -> float:
        return 32 * self.total_params / self.total_bits

    @property
    def memory_mb(self) -> float:
        return self.total_bits / 8 / 2**20

    def with_data(self, pixels: int, images: int) -> "Accounting":
        return Accounting(self.total_params, self.quantized_params, self.quantized_bits,
                          self.side_values, pixels, images)

    def to_dict(self) -> dict:
        return {**asdict(self), "float_params": self.float_params, "total_bits": self.total_bits,
                "bpp": self.bpp, "ratio": self.ratio, "memory_mb": self.memory_mb}


def truncate(x: float, decimals: int) -> float:
    f = 10**decimals
    return math.floor(x * f + 1e-9) / f


def paper_row(a: Accounting) -> dict:
    """The columns as the paper prints them."""
    return {"q_params": a.quantized_params, "side_info": a.side_values,
            "memory_mb": truncate(a.memory_mb, 2), "bpp": round(a.bpp, 4), "ratio": truncate(a.ratio, 2)}


def account(qmodel, pixels: int = PAPER_PIXELS, images: int = PAPER_IMAGES) -> Accounting:
    entries = qmodel.entries
    return Accounting(
        total_params=sum(e.info.size for e in entries),
        quantized_params=sum(e.info.size for e in entries if e.quantized),
        quantized_bits=sum(e.info.size * e.bits for e in entries if e.quantized),
        side_values=qmodel.side_values(), pixels=pixels, images=images)
