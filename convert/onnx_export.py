"""Keras generator -> ONNX (tf2onnx, opset 17), validated with onnx.checker."""

from __future__ import annotations

OPSET = 17


def to_onnx(model) -> bytes:
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec(tuple(model.inputs[0].shape), tf.float32, name="reference"),)

    @tf.function(input_signature=spec)
    def forward(x):
        return model(x, training=False)

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()
