"""ONNX -> int8 ONNX with ONNX Runtime's static quantization: QDQ format, 8-bit weights per
output channel, 8-bit activations calibrated on the scene's tiles. Each calibration method is
tried and the caller keeps the one that measures best.

Weights and activations are both unsigned (U8U8). With signed weights (U8S8, S8S8) ONNX Runtime
multiplies with VPMADDUBSW on x86 CPUs that have AVX2 but no VNNI (Intel Haswell to Skylake,
AMD Zen 2 and 3), whose 16-bit pair sums saturate: the same model then decodes differently, and
much worse, there than on a VNNI or ARM CPU. U8U8 has no such step: the same outputs on x86
with and without VNNI, and within the ARM board's tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.scratch import scratch_dir

ACTIVATIONS = "QUInt8"
WEIGHTS = "QUInt8"
CALIBRATIONS = ("MinMax", "Entropy", "Percentile")


def quantize_onnx(float_model: bytes, representative: np.ndarray, calibration: str) -> bytes:
    """representative: (n, t, t, bands) normalized tiles."""
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
            quantize_static(str(pre), str(dst), Tiles(name), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=getattr(QuantType, ACTIVATIONS),
                            weight_type=getattr(QuantType, WEIGHTS),
                            calibrate_method=getattr(CalibrationMethod, calibration),
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        return dst.read_bytes()


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
