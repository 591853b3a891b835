"""Bias correction for an int8 model: its output's mean error against float, per band, on the
calibration tiles, taken out of the bias of a layer whose output is added to the prediction
unchanged (the linear residual's spectral map). Rounding and activation quantization err
slightly more one way than the other in every band; this removes that part of the error."""

from __future__ import annotations

import numpy as np


def band_bias(quantized: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mean (quantized - reference) per band over (n, t, t, bands) normalized outputs."""
    return (quantized.astype(np.float64) - reference).mean(axis=(0, 1, 2))


def corrected_copy(graph, layer_name: str, bias: np.ndarray):
    """A copy of the graph whose `layer_name` bias is lowered by `bias`."""
    from qmtgan.convert.deploy_graph import deploy_graph

    copy = deploy_graph(graph)  # a deploy graph has nothing left to rewrite: this is a plain copy
    layer = copy.get_layer(layer_name)
    kernel, b = layer.get_weights()
    layer.set_weights([kernel, (b - bias).astype(b.dtype)])
    return copy
