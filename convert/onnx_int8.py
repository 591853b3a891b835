"""ONNX -> int8 ONNX with ONNX Runtime's static quantization: QDQ format, 7-bit signed weights
per output channel, 8-bit unsigned activations calibrated on the scene's tiles. Each
calibration method is tried and the caller keeps the one that measures best.

- Signed weights with unsigned activations (U8S8) are what ONNX Runtime's fast int8 kernels are
  built for: VPDPBUSD on x86 with VNNI, VPMADDUBSW on x86 with AVX2 only, SDOT/UDOT on ARM.
  U8U8 runs slower than float32 on x86.
- VPMADDUBSW adds two uint8 x int8 products in 16 bits, with saturation. With 7-bit weights
  (reduce_range: |w| <= 64) the sum stays below 2^15, so an AVX2-only CPU (Intel Haswell to
  Skylake, AMD Zen 2 and 3) computes exactly what a VNNI or ARM CPU does; 8-bit weights
  saturate there and decode differently.
- The layers the payload keeps in float (the full-resolution spectral map, which carries the
  whole prediction) stay float32 here too, from the float input to the output: 7-bit weights
  there cost several dB, and with 12 channels in and out ONNX Runtime's float convolution is
  faster than its int8 one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.scratch import scratch_dir

ACTIVATIONS = "QUInt8"
WEIGHTS = "QInt8"              # 7-bit (reduce_range): no VPMADDUBSW pair sum can saturate
WEIGHTS_RECORD = f"{WEIGHTS} 7-bit (reduce_range) per channel, symmetric"
CALIBRATIONS = ("MinMax", "Entropy", "Percentile")


def weight_overrides(model, float_nodes: list[str]) -> dict:
    """ONNX Runtime's TensorQuantOverrides making the weights of every quantized convolution
    7-bit: one entry per output channel (per-channel quantization)."""
    initializers = {t.name: t for t in model.graph.initializer}
    return {node.input[1]: [{"reduce_range": True, "axis": 0}] * initializers[node.input[1]].dims[0]
            for node in model.graph.node
            if node.op_type == "Conv" and node.input[1] in initializers and node.name not in float_nodes}


def keep_float(model, float_layers: tuple[str, ...]) -> list[str]:
    """The nodes of `float_layers`' convolutions, and every node downstream of them, to be left
    out of quantization. A transpose feeding such a convolution gets a private copy (also left
    out), so the convolution reads the float input, not a dequantized int8 copy of it. Edits
    `model` in place; returns the node names."""
    import copy

    from qmtgan.convert.tflite import layer_of

    nodes = list(model.graph.node)
    producers = {out: n for n in nodes for out in n.output}
    convs = [n for n in nodes if n.op_type == "Conv" and layer_of(n.input[1]) in float_layers]
    kept = [n.name for n in convs]
    for conv in convs:
        source = producers.get(conv.input[0])
        if source is not None and source.op_type == "Transpose":
            private = copy.deepcopy(source)
            private.name, private.output[0] = f"{source.name}/float", f"{source.output[0]}/float"
            conv.input[0] = private.output[0]
            model.graph.node.insert(list(model.graph.node).index(source) + 1, private)
            kept.append(private.name)
    reached = {out for n in convs for out in n.output}
    for node in model.graph.node:  # topological order: a node's inputs are made before it
        if node.name not in kept and any(name in reached for name in node.input):
            kept.append(node.name)
            reached.update(node.output)
    return kept


def quantize_onnx(float_model: bytes, representative: np.ndarray, calibration: str,
                  float_layers: tuple[str, ...] = ()) -> tuple[bytes, list[str]]:
    """representative: (n, t, t, bands) normalized tiles; float_layers: layers kept in float
    with everything downstream of them. Returns the model and its float nodes.

    The float model is calibrated with its DepthToSpace whole, then each DepthToSpace is split
    in the quantized model: a histogram calibrator keeps every calibrated tensor of every tile,
    and the split's intermediates are full-resolution copies of the same values."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration not in CALIBRATIONS:
        raise QmtganError(f"unknown ONNX calibration '{calibration}' (choose from {', '.join(CALIBRATIONS)})")

    class Tiles(CalibrationDataReader):
        def __init__(self, name: str):
            self.items = iter([{name: tile[None].astype(np.float32)} for tile in representative])

        def get_next(self):
            return next(self.items, None)

    import onnx

    name = onnx.load_from_string(float_model).graph.input[0].name
    with scratch_dir() as tmp:
        src, pre, dst = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(float_model)
        from qmtgan.runtime.quiet import native_output_captured

        with native_output_captured():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            model = onnx.load(str(pre))
            float_nodes = keep_float(model, float_layers)
            onnx.save(model, str(pre))
            quantize_static(str(pre), str(dst), Tiles(name), quant_format=QuantFormat.QDQ, per_channel=True,
                            nodes_to_exclude=float_nodes,
                            activation_type=getattr(QuantType, ACTIVATIONS),
                            weight_type=getattr(QuantType, WEIGHTS),
                            calibrate_method=getattr(CalibrationMethod, calibration),
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                           "TensorQuantOverrides": weight_overrides(model, float_nodes)})
        from qmtgan.convert.onnx_export import split_depth_to_space

        quantized = onnx.load(str(dst))
        split_depth_to_space(quantized, requantize=True)
        onnx.checker.check_model(quantized)
        return quantized.SerializeToString(), float_nodes


def float_convolutions(model_bytes: bytes) -> list[str]:
    """Convolutions ONNX Runtime still runs in float: after its graph optimizations (which fuse
    DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv where it has an int8 kernel),
    any Conv or ConvTranspose left."""
    import onnx
    import onnxruntime as ort

    with scratch_dir() as tmp:
        src, optimized = Path(tmp) / "model.onnx", Path(tmp) / "optimized.onnx"
        src.write_bytes(model_bytes)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized)
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(optimized)).graph
    return [n.name or n.output[0] for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
