"""A per-layer parameter table like the paper's Figure 1: parameters, biases, and storage at
float32 and at 8 bits per parameter."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np


@dataclass(frozen=True)
class LayerRow:
    layer: str
    kind: str
    weights: int   # kernel elements, or gamma+beta for a norm layer
    biases: int
    tensors: int

    @property
    def params(self) -> int:
        return self.weights + self.biases


def layer_rows(model: keras.Model) -> list[LayerRow]:
    rows = []
    for layer in model.layers:
        ws = layer.trainable_weights
        if not ws:
            continue
        biases = sum(int(np.prod(w.shape)) for w in ws if w.path.endswith("bias"))
        total = sum(int(np.prod(w.shape)) for w in ws)
        rows.append(LayerRow(layer.name, type(layer).__name__, total - biases, biases, len(ws)))
    return rows


def summary_table(model: keras.Model) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings), with a totals row; bytes are for the parameters alone."""
    rows = layer_rows(model)
    header = ["layer", "kind", "parameters", "biases", "tensors", "float32 bytes", "int8 bytes"]
    out = [[r.layer, r.kind, f"{r.weights:,}", f"{r.biases:,}", str(r.tensors),
            f"{4 * r.params:,}", f"{r.params:,}"] for r in rows]
    total = sum(r.params for r in rows)
    out.append(["total", "", f"{sum(r.weights for r in rows):,}", f"{sum(r.biases for r in rows):,}",
                str(sum(r.tensors for r in rows)), f"{4 * total:,} ({4 * total / 2**20:.2f} MiB)",
                f"{total:,} ({total / 2**20:.2f} MiB)"])
    return header, out


def conv_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass through the convolution and dense layers (the
    normalization, activation and concatenation work is elementwise and left out)."""
    return sum(layer_macs(layer) for layer in model.layers)


def layer_macs(layer: keras.layers.Layer) -> int:
    """One layer's forward multiply-accumulates: conv, output pixels x kernel area x in/groups x
    out; transposed conv, input pixels x kernel area x in x out; dense, in x out; else 0."""
    if isinstance(layer, keras.layers.Conv2DTranspose):
        _, h, w, cin = layer.input.shape
        kh, kw = layer.kernel_size
        return int(h * w * kh * kw * cin * layer.filters)
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, cout = layer.output.shape
        kh, kw = layer.kernel_size
        return int(h * w * kh * kw * (layer.input.shape[-1] // layer.groups) * cout)
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.input.shape[1:])) * layer.units
    return 0
