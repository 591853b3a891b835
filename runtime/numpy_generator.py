"""The MultiTempGAN generator in plain numpy, so that a .qmtg payload decodes with numpy alone
(no TensorFlow, no converted model): weights from the payload, architecture from its header.

Layout NHWC, batch 1. Strided convolutions are written as k*k shifted matmuls (gather for
Conv2D, scatter-add for Conv2DTranspose), which keeps memory at a few activations' size.
Padding follows Keras 'same': for stride 2 a total of k-2 rows (top/left gets the floor half)
for Conv2D, and k-2 rows cropped the same way for Conv2DTranspose.
"""

from __future__ import annotations

import numpy as np

from qmtgan.runtime.errors import QmtganError


def conv2d_s2(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (H, W, C), kernel (k, k, C, O), stride 2, 'same' -> (H/2, W/2, O)."""
    k = kernel.shape[0]
    h, w, _ = x.shape
    oh, ow = h // 2, w // 2
    total = max((oh - 1) * 2 + k - h, 0)
    lo = total // 2
    xp = np.pad(x, ((lo, total - lo), (lo, total - lo), (0, 0)))
    out = np.zeros((oh, ow, kernel.shape[3]), np.float32)
    for dy in range(k):
        for dx in range(k):
            patch = xp[dy : dy + 2 * oh : 2, dx : dx + 2 * ow : 2]
            out += patch @ kernel[dy, dx]
    return out + bias


def conv2d_transpose_s2(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (H, W, C), kernel (k, k, O, C) (Keras layout), stride 2, 'same' -> (2H, 2W, O)."""
    k = kernel.shape[0]
    h, w, _ = x.shape
    full = np.zeros((2 * (h - 1) + k, 2 * (w - 1) + k, kernel.shape[2]), np.float32)
    for dy in range(k):
        for dx in range(k):
            full[dy : dy + 2 * h : 2, dx : dx + 2 * w : 2] += x @ kernel[dy, dx].T
    crop = full.shape[0] - 2 * h
    lo = crop // 2
    return full[lo : lo + 2 * h, lo : lo + 2 * w] + bias


def conv2d_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (H, W, C), kernel (k, k, C, O), stride 1, 'same' (zero padding) -> (H, W, O)."""
    k = kernel.shape[0]
    r = k // 2
    h, w, _ = x.shape
    xp = np.pad(x, ((r, r), (r, r), (0, 0)))
    out = np.zeros((h, w, kernel.shape[3]), np.float32)
    for dy in range(k):
        for dx in range(k):
            out += xp[dy : dy + h, dx : dx + w] @ kernel[dy, dx]
    return out + bias


def instance_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    mean = x.mean(axis=(0, 1), keepdims=True)
    var = x.var(axis=(0, 1), keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


MAX_DEPTH = 8


class NumpyGenerator:
    """Runs the `multitempgan` architecture of a payload header on (1, t, t, bands) tiles."""

    name = "numpy"

    def __init__(self, header: dict, weights: list[np.ndarray]):
        gen = header["generator"]
        if gen.get("name") != "multitempgan":
            raise QmtganError(f"the numpy decoder runs the multitempgan generator, not {gen.get('name')}")
        self.depth = int(gen["depth"])
        self.residual = gen.get("residual", "none")  # payloads of format 1.0 have no residual
        if self.residual not in ("none", "reference", "linear"):
            raise QmtganError(f"unknown generator residual '{self.residual}' in payload")
        self.w = {t["name"]: np.asarray(v, np.float32) for t, v in zip(header["tensors"], weights)}
        self.eps = 1e-3
        if not 1 <= self.depth <= MAX_DEPTH:
            raise QmtganError(f"generator depth {self.depth} is not in 1..{MAX_DEPTH}")
        self._check_shapes(int(gen.get("bands", 12)))

    def _check_shapes(self, bands: int) -> None:
        """Run the smallest tile the architecture takes: tensors whose shapes do not chain
        (a hostile or damaged header) fail here, once, with one clear error."""
        side = 2 ** self.depth
        try:
            out = self.run(np.zeros((1, side, side, bands), np.float32))
        except (ValueError, IndexError) as exc:
            raise QmtganError(f"the payload's tensors do not fit its generator ({exc})") from exc
        if out.shape != (1, side, side, bands):
            raise QmtganError(f"the payload's generator maps {bands} bands to {out.shape[-1]}")

    def _t(self, layer: str, role: str) -> np.ndarray:
        key = f"{layer}/{role}"
        if key not in self.w:
            raise QmtganError(f"payload has no tensor {key}")
        return self.w[key]

    def run(self, tile: np.ndarray) -> np.ndarray:
        x = tile[0].astype(np.float32)
        skips = []
        for i in range(1, self.depth + 1):
            x = conv2d_s2(x, self._t(f"conv{i}", "kernel"), self._t(f"conv{i}", "bias"))
            if i > 1:
                x = instance_norm(
                    x, self._t(f"conv{i}_bn", "gamma"), self._t(f"conv{i}_bn", "beta"), self.eps
                )
            x = np.where(x > 0, x, 0.2 * x)
            skips.append(x)
        for i in range(1, self.depth + 1):
            if i > 1:
                x = np.concatenate([x, skips[self.depth - i]], axis=-1)
            x = conv2d_transpose_s2(x, self._t(f"deconv{i}", "kernel"), self._t(f"deconv{i}", "bias"))
            if i < self.depth:
                x = instance_norm(
                    x, self._t(f"deconv{i}_bn", "gamma"), self._t(f"deconv{i}_bn", "beta"), self.eps
                )
                x = np.maximum(x, 0.0)
        if self.residual == "none":
            return np.tanh(x)[None]
        base = tile[0].astype(np.float32)
        if self.residual == "linear":
            base = conv2d_same(base, self._t("spectral", "kernel"), self._t("spectral", "bias"))
        return np.clip(base + np.tanh(x), -1.0, 1.0)[None]
