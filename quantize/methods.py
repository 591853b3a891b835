"""Post-training quantization methods: float tensor -> unsigned integer codes + side info.

Every method maps one float32 tensor to codes of `bits` bits (what the payload bit-packs)
plus float32 side information; `side` is exactly what is stored, and Eq. 1 counts
len(side) x 32 bits. Dequantization lives in runtime/dequant.py (the device decodes with
numpy alone); side values are rounded to float32 *before* the codes are computed, so the
decoder's arithmetic is the quantizer's.

  global       linear with one (min, step) shared by all tensors of the model: side 2 in all
  linear       per-tensor min/max, 2^b uniform levels: side (min, step)
  fixed_point  power-of-two step 2^-n (Qm.n with the most fractional bits that fit): side (n,)
  symmetric    zero-centred, step = max|w| / (2^(b-1) - 1): side (step,)
  asymmetric   step and integer zero point (zero exactly representable), codes 0..2^b-1:
               side (step, zero_point)
  stochastic   the symmetric grid, rounding up with probability = the fraction (seeded,
               unbiased in expectation): side (step,)
  integer      symmetric per output channel (TFLite's integer scheme for kernels; biases and
               norm vectors are one channel): side one step per output channel
  mse          symmetric with the clipping range that minimizes the tensor's squared error
               (grid search over 0.50..1.00 x max|w|): side (step,)
  kmeans       non-uniform: a Lloyd-Max (1-D k-means) codebook per tensor of at most 2^b levels
               (a tensor with no more distinct values than that keeps them as its codebook):
               side the sorted codebook
  pwl          piecewise linear: a dense uniform grid of 2^(b-1) levels on [-p, p] and 2^(b-2)
               levels on each tail (p, max|w|], the breakpoint p chosen for least squared error
               (as in NUQ-MultiTempGAN): side (p, max|w|)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmtgan.runtime.dequant import dequantize as runtime_dequantize
from qmtgan.runtime.dequant import pwl_levels
from qmtgan.runtime.errors import QmtganError

MIN_BITS, MAX_BITS = 2, 16
FLOAT_BITS = 32  # "32 bits" = the identity baseline: the tensor stays float32


@dataclass
class QTensor:
    codes: np.ndarray        # uint32, the tensor's shape, 0 <= code < 2^bits
    side: np.ndarray         # float32, 1-D
    bits: int
    method: str
    channel_axis: int = -1


def check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not (
            MIN_BITS <= bits <= MAX_BITS or bits == FLOAT_BITS):
        raise QmtganError(f"bit width must be an integer in {MIN_BITS}..{MAX_BITS}, or "
                          f"{FLOAT_BITS} for float32; got {bits!r}")
    return int(bits)


def f32(x: float) -> float:
    return float(np.float32(x))


def _offset(q: np.ndarray, bits: int) -> np.ndarray:
    return (q.astype(np.int64) + (1 << (bits - 1))).astype(np.uint32)


class Method:
    """One PTQ scheme: subclasses implement `codes_and_side`."""

    name = ""

    def quantize(self, w: np.ndarray, bits: int, rng: np.random.Generator | None = None,
                 channel_axis: int = -1) -> QTensor:
        """``channel_axis``: the output-channel axis of a kernel (Conv2D -1, Conv2DTranspose
        -2); only per-channel methods use it."""
        bits = check_bits(bits)
        if bits == FLOAT_BITS:
            raise QmtganError("32 bits keeps a tensor in float32: nothing to quantize")
        w = np.asarray(w, np.float32)
        codes, side = self.codes_and_side(w, bits, rng, channel_axis)
        return QTensor(np.asarray(codes).astype(np.uint32), np.asarray(side, np.float32).ravel(),
                       bits, self.name, channel_axis)

    @staticmethod
    def dequantize(q: QTensor) -> np.ndarray:
        return runtime_dequantize(q.method, q.codes, q.side, q.bits, q.channel_axis)

    def side_count(self, shape: tuple[int, ...], bits: int, channel_axis: int = -1) -> int:
        return 1

    def codes_and_side(self, w, bits, rng, axis):  # pragma: no cover - abstract
        raise NotImplementedError


class Linear(Method):
    name = "linear"

    def side_count(self, shape, bits, channel_axis=-1):
        return 2

    def codes_and_side(self, w, bits, rng, axis, lo_hi=None):
        lo, hi = lo_hi if lo_hi else (float(w.min()), float(w.max()))
        lo = f32(lo)
        step = f32((hi - lo) / ((1 << bits) - 1)) or 1.0
        codes = np.clip(np.rint((w.astype(np.float64) - lo) / step), 0, (1 << bits) - 1)
        return codes, (lo, step)


class GlobalLinear(Linear):
    """Linear with the model-wide range; quantize.model passes ``lo_hi``."""

    name = "global"


class FixedPoint(Method):
    name = "fixed_point"

    def codes_and_side(self, w, bits, rng, axis):
        peak = float(np.max(np.abs(w)))
        qmax = (1 << (bits - 1)) - 1
        n = int(np.floor(np.log2(qmax / peak))) if peak > 0 else 0
        q = np.clip(np.rint(w.astype(np.float64) * 2.0**n), -qmax - 1, qmax)
        return _offset(q, bits), (float(n),)


class Symmetric(Method):
    name = "symmetric"

    def round(self, x: np.ndarray, rng) -> np.ndarray:
        return np.rint(x)

    def codes_and_side(self, w, bits, rng, axis, peak=None):
        qmax = (1 << (bits - 1)) - 1
        peak = float(np.max(np.abs(w))) if peak is None else peak
        step = f32(peak / qmax) or 1.0
        q = np.clip(self.round(w.astype(np.float64) / step, rng), -qmax, qmax)
        return _offset(q, bits), (step,)


class Stochastic(Symmetric):
    name = "stochastic"

    def round(self, x, rng):
        if rng is None:
            raise QmtganError("stochastic rounding needs a seeded random generator")
        return np.floor(x + rng.random(x.shape))


class MseClip(Symmetric):
    name = "mse"

    def codes_and_side(self, w, bits, rng, axis, peak=None):
        top = float(np.max(np.abs(w)))
        best, best_err = top, np.inf
        for ratio in np.linspace(0.5, 1.0, 26):
            codes, side = super().codes_and_side(w, bits, rng, axis, peak=top * ratio)
            err = float(np.mean((runtime_dequantize("mse", codes, side, bits) - w) ** 2))
            if err < best_err:
                best, best_err = top * ratio, err
        return super().codes_and_side(w, bits, rng, axis, peak=best)


class Asymmetric(Method):
    name = "asymmetric"

    def side_count(self, shape, bits, channel_axis=-1):
        return 2

    def codes_and_side(self, w, bits, rng, axis):
        lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
        levels = (1 << bits) - 1
        step = f32((hi - lo) / levels) or 1.0
        zero = float(np.clip(np.rint(-lo / step), 0, levels))
        codes = np.clip(np.rint(w.astype(np.float64) / step) + zero, 0, levels)
        return codes, (step, zero)


class PerChannel(Method):
    name = "integer"

    def side_count(self, shape, bits, channel_axis=-1):
        return int(shape[channel_axis]) if len(shape) > 1 else 1

    def codes_and_side(self, w, bits, rng, axis):
        qmax = (1 << (bits - 1)) - 1
        if w.ndim <= 1:
            step = f32(float(np.max(np.abs(w))) / qmax) or 1.0
            return _offset(np.clip(np.rint(w / step), -qmax, qmax), bits), (step,)
        reduce = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
        steps = (np.max(np.abs(w), axis=reduce) / qmax).astype(np.float32)
        steps[steps == 0] = 1.0
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.rint(w.astype(np.float64) / steps.astype(np.float64).reshape(shape)), -qmax, qmax)
        return _offset(q, bits), steps


def nearest_level(w: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The index of the nearest of the sorted ``levels`` for every value of ``w``."""
    edges = (levels[1:].astype(np.float64) + levels[:-1]) / 2
    return np.searchsorted(edges, w.astype(np.float64).ravel()).reshape(w.shape)


class KMeans(Method):
    """Lloyd-Max: alternately assign each weight to its nearest level and move each level to the
    mean of its weights. The levels start at the high-rate optimum (point density proportional
    to the cube root of the weights' density), so that few iterations are needed at any width;
    the codebook is rounded to float32 before the final assignment, so that the decoder's levels
    are the ones the codes were chosen for."""

    name = "kmeans"
    iterations = 60

    def side_count(self, shape, bits, channel_axis=-1):
        return min(1 << bits, int(np.prod(shape)))

    @staticmethod
    def start(x: np.ndarray, count: int) -> np.ndarray:
        hist, edges = np.histogram(x, bins=max(64, 4 * count))
        mass = np.cumsum(np.cbrt(hist.astype(np.float64)))
        mass = np.concatenate([[0.0], mass / mass[-1]])
        return np.interp((np.arange(count) + 0.5) / count, mass, edges)

    def codes_and_side(self, w, bits, rng, axis):
        x = w.astype(np.float64).ravel()
        values = np.unique(w)
        if values.size <= 1 << bits:  # a tensor already on a grid keeps it exactly
            return nearest_level(w, values), values
        count = min(1 << bits, x.size)
        levels = np.sort(self.start(x, count))
        for _ in range(self.iterations):
            idx = nearest_level(x, levels)
            sums = np.bincount(idx, x, minlength=count)
            hits = np.bincount(idx, minlength=count)
            moved = np.sort(np.where(hits > 0, sums / np.maximum(hits, 1), levels))
            done = np.allclose(moved, levels, rtol=0, atol=1e-7 * (x.max() - x.min() + 1e-30))
            levels = moved
            if done:
                break
        levels = np.sort(levels.astype(np.float32))
        return nearest_level(w, levels), levels


class PiecewiseLinear(Method):
    name = "pwl"

    def side_count(self, shape, bits, channel_axis=-1):
        return 2

    def codes_and_side(self, w, bits, rng, axis):
        peak = f32(float(np.max(np.abs(w)))) or 1.0
        best, best_err = (peak, peak), np.inf
        for ratio in np.linspace(0.05, 1.0, 39):
            side = (f32(peak * ratio), peak)
            levels = pwl_levels(*side, bits)
            err = float(np.mean((levels[nearest_level(w, levels)] - w) ** 2))
            if err < best_err:
                best, best_err = side, err
        return nearest_level(w, pwl_levels(*best, bits)), best


METHODS: dict[str, Method] = {m.name: m for m in (
    GlobalLinear(), Linear(), FixedPoint(), Symmetric(), Asymmetric(), Stochastic(), PerChannel(),
    MseClip(), KMeans(), PiecewiseLinear())}
PAPER_METHODS = ("global", "linear", "fixed_point", "symmetric", "asymmetric", "stochastic", "integer")


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise QmtganError(f"unknown quantization method '{name}' (choose from {', '.join(METHODS)})")
    return METHODS[name]
