"""Quantize a whole generator under a Policy, and put dequantized weights back into it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmtgan.quantize.methods import FLOAT_BITS, QTensor, get_method
from qmtgan.quantize.policy import Policy, TensorInfo


@dataclass
class Entry:
    info: TensorInfo
    bits: int                       # FLOAT_BITS: kept as float32
    q: QTensor | None = None
    value: np.ndarray | None = None  # the float32 tensor when not quantized

    @property
    def quantized(self) -> bool:
        return self.q is not None


@dataclass
class QuantizedModel:
    policy: Policy
    entries: list[Entry]
    seed: int = 0

    @property
    def shared_side(self) -> bool:
        """`global` stores one (min, step) for the whole model, not one per tensor."""
        return self.policy.method == "global"

    def dequantized(self) -> list[np.ndarray]:
        return [get_method(e.q.method).dequantize(e.q) if e.quantized else e.value for e in self.entries]

    def side_values(self) -> int:
        """Side-information values as stored (Eq. 1's #side_information)."""
        sides = [e.q.side.size for e in self.entries if e.quantized]
        if not sides:
            return 0
        return sides[0] if self.shared_side else int(sum(sides))


def quantize_tensors(
    tensors: list[tuple[TensorInfo, np.ndarray]], policy: Policy, seed: int = 0
) -> QuantizedModel:
    rng = np.random.default_rng(seed)
    chosen = [(info, w, policy.bits_for(info)) for info, w in tensors]
    extra = {}
    if policy.method == "global":
        quantized = [w for _, w, b in chosen if b != FLOAT_BITS]
        if quantized:
            extra["lo_hi"] = (min(float(w.min()) for w in quantized), max(float(w.max()) for w in quantized))
    entries = []
    for info, w, bits in chosen:
        if bits == FLOAT_BITS:
            entries.append(Entry(info, bits, value=np.asarray(w, np.float32)))
            continue
        method = get_method(policy.method_for(info))
        if extra:
            codes, side = method.codes_and_side(
                np.asarray(w, np.float32), bits, rng, info.channel_axis, **extra
            )
            q = QTensor(np.asarray(codes).astype(np.uint32), np.asarray(side, np.float32), bits,
                        method.name, info.channel_axis)
        else:
            q = method.quantize(w, bits, rng, info.channel_axis)
        entries.append(Entry(info, bits, q=q))
    return QuantizedModel(policy, entries, seed)
