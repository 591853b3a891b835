"""Error-compensating rounding of convolution weights to the int8 grid the converters use
(symmetric, per output channel, scale = max|w| / 127).

Rounding each weight to its nearest step leaves an error in every output pixel. Rounding them
one input at a time and spreading each one's error over the inputs not yet rounded, weighted
by how the scene's inputs correlate (the second-order update of GPTQ: Frantar et al., "GPTQ:
Accurate Post-Training Quantization for Generative Pre-trained Transformers", ICLR 2023),
leaves far less. Neighbouring pixels and bands of a multispectral image are strongly
correlated, so the errors mostly cancel.

The result is float weights that lie exactly on the int8 grid with the same scale, so a
converter that rounds to nearest reproduces these integers."""

from __future__ import annotations

import numpy as np

QMAX = 127


def patch_rows(features: np.ndarray, kernel: int, stride: int, samples: int, seed: int = 0) -> np.ndarray:
    """(n, h, w, c) layer inputs -> (samples, kernel*kernel*c) receptive fields of a 'same'
    convolution at random output pixels, in the kernel's (dy, dx, c) order."""
    n, h, w, _ = features.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_y = max((out_h - 1) * stride + kernel - h, 0)
    pad_x = max((out_w - 1) * stride + kernel - w, 0)
    padded = np.pad(
        features, ((0, 0), (pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2), (0, 0))
    )
    rng = np.random.default_rng(seed)
    tile = rng.integers(0, n, samples)
    y = rng.integers(0, out_h, samples) * stride
    x = rng.integers(0, out_w, samples) * stride
    taps = [padded[tile, y + dy, x + dx] for dy in range(kernel) for dx in range(kernel)]
    return np.concatenate(taps, axis=1).astype(np.float64)


def compensated_kernel(kernel: np.ndarray, rows: np.ndarray, damping: float = 0.01) -> np.ndarray:
    """A (k, k, in, out) kernel rounded to the int8 grid with error compensation, as float32.
    A channel whose largest weight would not stay at +-127 (so the converter would pick
    another scale) is rounded to nearest instead."""
    w = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)  # one row per input tap
    scale = np.abs(w).max(axis=0) / QMAX
    scale[scale == 0] = 1.0
    hessian = rows.T @ rows / len(rows)
    hessian += damping * max(float(np.mean(np.diag(hessian))), 1e-12) * np.eye(len(hessian))
    # upper Cholesky factor of the inverse: row j gives the update for the inputs after j
    factor = np.linalg.cholesky(np.linalg.inv(hessian)).T
    work, levels = w.copy(), np.zeros_like(w)
    for j in range(len(w)):
        levels[j] = np.clip(np.rint(work[j] / scale), -QMAX, QMAX)
        error = (work[j] - levels[j] * scale) / factor[j, j]
        work[j + 1:] -= np.outer(factor[j, j + 1:], error)
    nearest = np.clip(np.rint(w / scale), -QMAX, QMAX)
    keeps_scale = np.abs(levels).max(axis=0) == QMAX
    levels[:, ~keeps_scale] = nearest[:, ~keeps_scale]
    return (levels * scale).reshape(kernel.shape).astype(np.float32)


def round_convolutions(model, tiles: np.ndarray, names: list[str] | None = None,
                       samples: int = 100_000) -> list[str]:
    """Replace the kernels of the model's Conv2D layers (or just `names`) by compensated int8
    ones, fitted on the layer inputs the calibration tiles produce. Returns the layers changed."""
    import keras

    changed = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D) or (names is not None and layer.name not in names):
            continue
        if layer.padding != "same" or layer.dilation_rate != (1, 1) or layer.groups != 1:
            continue
        features = keras.Model(model.inputs[0], layer.input)(tiles, training=False)
        features = np.asarray(features)
        kernel, *rest = layer.get_weights()
        rows = patch_rows(features, kernel.shape[0], layer.strides[0], samples)
        layer.set_weights([compensated_kernel(kernel, rows), *rest])
        changed.append(layer.name)
    return changed
