"""Which tensors are quantized, at which bit width: the uniform and mixed-precision modes.

"Convolutional" tensors are the 10 kernels (2,558,000 parameters in the paper generator);
everything else (biases, norm gamma/beta) is "non-convolutional", as in the paper's Table 2.

  uniform       every tensor at `bits`
  conv-only     kernels at `bits`, the rest float32                       (seed: mixed (i))
  nonconv-only  non-conv tensors at `bits`, kernels float32               (seed: mixed (ii))
  split         kernels at `conv_bits`, the rest at `nonconv_bits`       (seed: mixed (iii))
  lwpq          critical layers' tensors at `critical_bits`, other kernels at `conv_bits`,
                the other non-conv tensors at `nonconv_bits`              (seed: 16 / 8 / 6)
  allocated     each layer's tensors at the width `allocation` gives it (quantize/allocate.py
                chooses them from measured sensitivities), unlisted layers at `bits`
Bit width 32 means "kept in float32".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qmtgan.quantize.methods import FLOAT_BITS, check_bits, get_method
from qmtgan.runtime.errors import QmtganError

MODES = ("uniform", "conv-only", "nonconv-only", "split", "lwpq", "allocated")
# Layers the policy's widths never reach: the residual generator's spectral map, the base
# prediction every pixel starts from. Its kernel is stored as a linear predictor's taps are
# (12-bit integers, one step per output band of 1/2047 of its largest tap:
# runtime/linear_coding.py) wherever the policy quantizes kernels, in 37.5 % of float32's bytes;
# its bias, and the whole map under `global` (one step shared by every tensor), stay float32.
FLOAT_LAYERS = ("spectral",)
SPECTRAL_METHOD, SPECTRAL_BITS = "integer", 12


@dataclass(frozen=True)
class TensorInfo:
    name: str            # the variable path, e.g. "conv1/kernel"
    layer: str
    role: str            # kernel | bias | gamma | beta
    shape: tuple[int, ...]
    channel_axis: int    # output channels: -1 (Conv2D), -2 (Conv2DTranspose kernel)

    @property
    def is_conv(self) -> bool:
        return self.role == "kernel"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def generator_tensors(generator) -> list[tuple[TensorInfo, np.ndarray]]:
    """The trainable tensors of a Keras generator, in its weight order, with their roles."""
    import keras

    out = []
    for layer in generator.layers:
        transposed = isinstance(layer, keras.layers.Conv2DTranspose)
        for var in layer.trainable_weights:
            role = var.path.rsplit("/", 1)[-1]
            axis = -2 if (transposed and role == "kernel") else -1
            out.append((TensorInfo(var.path, layer.name, role, tuple(var.shape), axis),
                        np.asarray(var.numpy(), np.float32)))
    return out


@dataclass(frozen=True)
class Policy:
    method: str = "symmetric"
    mode: str = "uniform"
    bits: int = 8                 # uniform / conv-only / nonconv-only
    conv_bits: int = 8            # split / lwpq
    nonconv_bits: int = 6         # split / lwpq
    critical_bits: int = 16       # lwpq
    critical: tuple[str, ...] = field(default_factory=tuple)  # lwpq: layer names
    allocation: tuple[tuple[str, int], ...] = field(default_factory=tuple)  # allocated: (layer, bits)

    def __post_init__(self) -> None:
        get_method(self.method)
        if self.mode not in MODES:
            raise QmtganError(f"unknown mode '{self.mode}' (choose from {', '.join(MODES)})")
        allocated = dict(self.allocation).values()
        for b in (self.bits, self.conv_bits, self.nonconv_bits, self.critical_bits, *allocated):
            check_bits(b)
        if self.mode == "lwpq" and not self.critical:
            raise QmtganError("lwpq needs the critical layers (or let the sweep measure them)")

    def bits_for(self, t: TensorInfo) -> int:
        if t.layer in FLOAT_LAYERS:
            return SPECTRAL_BITS if self._codes_spectral(t) else FLOAT_BITS
        return self._width(t)

    def method_for(self, t: TensorInfo) -> str:
        return SPECTRAL_METHOD if t.layer in FLOAT_LAYERS and self._codes_spectral(t) else self.method

    def _codes_spectral(self, t: TensorInfo) -> bool:
        # the map follows the kernels: coded when an ordinary kernel (the probe) would be
        probe = TensorInfo("probe/kernel", "probe", "kernel", t.shape, t.channel_axis)
        quantizes_kernels = self._width(probe) != FLOAT_BITS or any(
            b != FLOAT_BITS for _, b in self.allocation)
        return t.is_conv and self.method != "global" and quantizes_kernels

    def _width(self, t: TensorInfo) -> int:
        if self.mode == "uniform":
            return self.bits
        if self.mode == "allocated":
            return dict(self.allocation).get(t.layer, self.bits)
        if self.mode == "conv-only":
            return self.bits if t.is_conv else FLOAT_BITS
        if self.mode == "nonconv-only":
            return FLOAT_BITS if t.is_conv else self.bits
        if self.mode == "lwpq" and t.layer in self.critical:
            return self.critical_bits
        return self.conv_bits if t.is_conv else self.nonconv_bits

    @property
    def label(self) -> str:
        m = self.method
        if self.mode == "uniform":
            return f"{m} {self.bits}" if self.bits != FLOAT_BITS else "float32"
        if self.mode in ("conv-only", "nonconv-only"):
            return f"{self.mode} {m} {self.bits}"
        if self.mode == "split":
            return f"split {m} conv {self.conv_bits} / non-conv {self.nonconv_bits}"
        if self.mode == "allocated":
            widths = sorted(set(dict(self.allocation).values()))
            if not widths:
                return f"allocated {m} {self.bits}"
            return f"allocated {m} {widths[0]}-{widths[-1]} bits ({len(self.allocation)} layers)"
        return (f"lwpq {m} {self.critical_bits}/{self.conv_bits}/{self.nonconv_bits} "
                f"(critical: {','.join(self.critical)})")

    @property
    def bits_column(self) -> str:
        """What the paper's Table 2 prints in its Bits column."""
        if self.mode in ("split", "lwpq", "allocated"):
            return "BP"
        return str(self.bits)

    def to_dict(self) -> dict:
        return {"method": self.method, "mode": self.mode, "bits": self.bits,
                "conv_bits": self.conv_bits, "nonconv_bits": self.nonconv_bits,
                "critical_bits": self.critical_bits, "critical": list(self.critical),
                "allocation": [list(a) for a in self.allocation]}

    @classmethod
    def from_dict(cls, d: dict) -> "Policy":
        allocation = tuple((str(k), int(b)) for k, b in d.get("allocation", ()))
        return cls(**{**d, "critical": tuple(d.get("critical", ())), "allocation": allocation})
