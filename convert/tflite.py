"""Keras generator -> TFLite flatbuffer at one of five precisions.

  fp32     plain float
  fp16     float16 weights (dequantized to float32 at load)
  dynamic  int8 weights, float activations (dynamic-range quantization)
  int8     full integer: int8 weights and activations, int8 input/output; calibrated on a
           representative set of the scene's reference tiles
  16x8     int16 activations, int8 weights (accuracy fallback; no XNNPACK kernels: slow)
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "16x8")


def to_tflite(model, precision: str, representative: np.ndarray | None = None) -> bytes:
    import tensorflow as tf

    from qmtgan.runtime.errors import QmtganError

    if precision not in PRECISIONS:
        raise QmtganError(f"unknown TFLite precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if precision in ("int8", "16x8"):
        if representative is None or not len(representative):
            raise QmtganError(f"TFLite {precision} needs representative tiles")

        def samples():
            for tile in representative:
                yield [tile[None].astype(np.float32)]

        converter.representative_dataset = samples
    if precision == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if precision == "16x8":
        # the per-image normalization's NEG/SQUARE have no 16x8 kernels: they stay float
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS]
    # Keras' SavedModel export prints every captured variable; keep the CLI's output readable
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()
