"""ONNX -> int8 ONNX with ONNX Runtime's static quantization: QDQ format, int8 weights per
output channel, int8 activations calibrated on the scene's tiles. Each calibration method is
tried and the caller keeps the one that measures best."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from qmtgan.runtime.errors import QmtganError

ACTIVATIONS = "QUInt8"
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
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(float_model)
        from qmtgan.convert.quiet import converter_output_captured

        with converter_output_captured():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(dst), Tiles(name), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=getattr(QuantType, ACTIVATIONS), weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, calibration),
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        return dst.read_bytes()


def float_convolutions(model_bytes: bytes) -> list[str]:
    """Conv/ConvTranspose nodes whose weight does not come from a DequantizeLinear: the ones
    left in float."""
    import onnx

    graph = onnx.load_from_string(model_bytes).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in graph.node if n.op_type in ("Conv", "ConvTranspose") and n.input[1] not in dequantized]
