"""Keras generator -> TFLite flatbuffer at one of five precisions.

  fp32     plain float
  fp16     float16 weights (dequantized to float32 at load)
  dynamic  int8 weights, float activations (dynamic-range quantization)
  int8     full integer: int8 weights and activations, int8 input/output; calibrated on a
           representative set of the scene's reference tiles. `float_layers` keeps the ops of
           the named layers in float (the quantization debugger's denylist), the rest int8.
  16x8     int16 activations, int8 weights (accuracy fallback; no XNNPACK kernels: slow)

Two quantizers turn the calibrated ranges into int8 parameters: TensorFlow's MLIR quantizer
(its default) and the legacy one. They differ: on the generators of real pairs the MLIR
quantizer can give a LEAKY_RELU an output range many times the one calibrated for it, which
leaves the activations after it a few int8 steps, while the legacy quantizer keeps the
calibrated range. The int8 format measures both and keeps the better (convert/artifacts.py).
"""

from __future__ import annotations

import numpy as np

PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "16x8")
QUANTIZERS = ("mlir", "legacy")


def tile_samples(tiles: np.ndarray):
    """The converters' and the debugger's dataset form: a factory of one-tile input lists."""

    def samples():
        for tile in tiles:
            yield [tile[None].astype(np.float32)]

    return samples


def converter_for(model, precision: str, representative: np.ndarray | None = None, quantizer: str = "mlir"):
    """A TFLiteConverter set up for `precision` (the quantization debugger takes one too)."""
    import tensorflow as tf

    from qmtgan.runtime.errors import QmtganError

    if precision not in PRECISIONS:
        raise QmtganError(f"unknown TFLite precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if quantizer not in QUANTIZERS:
        raise QmtganError(f"unknown TFLite quantizer '{quantizer}' (choose from {', '.join(QUANTIZERS)})")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if precision in ("int8", "16x8"):
        if representative is None or not len(representative):
            raise QmtganError(f"TFLite {precision} needs representative tiles")

        converter.representative_dataset = tile_samples(representative)
        converter.experimental_new_quantizer = quantizer == "mlir"
    if precision == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if precision == "16x8":
        # the per-image normalization's NEG/SQUARE have no 16x8 kernels: they stay float
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def _quiet_convert(converter) -> bytes:
    # Keras' SavedModel export prints every captured variable, the quantizer its settings
    from qmtgan.runtime.quiet import native_output_captured

    with native_output_captured():
        return converter.convert()


def to_tflite(model, precision: str, representative: np.ndarray | None = None,
              float_layers: tuple[str, ...] = (), quantizer: str = "mlir") -> bytes:
    """float_layers go through the MLIR quantizer's denylist: they need quantizer 'mlir'."""
    converter = converter_for(model, precision, representative, quantizer)
    if not float_layers:
        blob = _quiet_convert(converter)
        return _with_float_statistics(blob) if precision == "int8" else blob
    from qmtgan.runtime.errors import QmtganError

    if precision != "int8" or quantizer != "mlir":
        raise QmtganError("float layers apply to the int8 precision with the mlir quantizer only")
    return _int8_with_float_layers(converter, float_layers)


def layer_of(tensor_name: str) -> str:
    """The Keras layer an op's output tensor belongs to ('model_1/layer_1/op;...' -> 'layer')."""
    parts = tensor_name.split(";")[0].split("/")
    return (parts[1] if len(parts) > 1 else parts[0]).removesuffix("_1")


def calibrated_model(converter) -> bytes:
    """The float model with the calibration statistics, not yet quantized."""
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True
    return _quiet_convert(converter)


def quantize_calibrated(calibrated: bytes, float_nodes: list[str]) -> bytes:
    """Full int8 (int8 input/output) with the ops named in `float_nodes` left in float."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as lite_convert

    from qmtgan.runtime.quiet import native_output_captured

    with native_output_captured():
        blob = lite_convert.mlir_quantize(calibrated, fully_quantize=True, input_data_type=tf.int8,
                                          output_data_type=tf.int8, denylisted_nodes=float_nodes)
    return _with_float_statistics(blob)


def _with_float_statistics(blob: bytes) -> bytes:
    from qmtgan.convert.int8_islands import float_statistics

    return float_statistics(blob)[0]


def float_islands(model_bytes: bytes) -> list[str]:
    """The layers whose normalization statistics an int8 model computes in float."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    tensors = interpreter.get_tensor_details()
    return sorted({layer_of(tensors[op["outputs"][0]]["name"]) for op in interpreter._get_ops_details()
                   if op["op_name"] == "RSQRT" and tensors[op["outputs"][0]]["dtype"] == np.float32})


def op_table(model_bytes: bytes) -> list[tuple[str, str]]:
    """(op type, output tensor name) of every op, in execution order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    tensors = interpreter.get_tensor_details()
    return [(op["op_name"], tensors[op["outputs"][0]]["name"]) for op in interpreter._get_ops_details()]


def _int8_with_float_layers(converter, float_layers: tuple[str, ...]) -> bytes:
    from qmtgan.runtime.errors import QmtganError

    calibrated = calibrated_model(converter)
    nodes = [name for _, name in op_table(calibrated) if layer_of(name) in float_layers]
    missing = [layer for layer in float_layers if not any(layer_of(n) == layer for n in nodes)]
    if missing:
        raise QmtganError(f"no op of layer(s) {missing} in the model to keep in float")
    return quantize_calibrated(calibrated, nodes)
