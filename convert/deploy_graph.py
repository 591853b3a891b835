"""The exported graph: the trained generator rewritten into layers that compute the same
function (equal in float up to rounding) and map onto fast integer kernels.

- Each stride-2 transposed convolution becomes its sub-pixel form: one stride-1 convolution
  that computes the four output phases side by side, then depth-to-space. Same weights,
  rearranged; TFLite, ONNX Runtime and TVM run it as a plain convolution instead of a
  transposed one (slow in TFLite, and left in float by ONNX Runtime's quantizer).
- The per-image normalization centres before it scales, y = (x - mean) * gamma / std + beta,
  instead of x * (gamma / std) + (beta - mean * gamma / std): the int8 product then covers the
  centred range instead of the raw one, and the cancellation no longer happens in 8 bits.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from qmtgan.runtime.errors import QmtganError
from qmtgan.train.models.subpixel import phase_kernel


@keras.saving.register_keras_serializable(package="qmtgan")
class DepthToSpace(layers.Layer):
    """(h, w, block^2 * c) -> (block * h, block * w, c), TensorFlow's channel order."""

    def __init__(self, block: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, x):
        import tensorflow as tf

        return tf.nn.depth_to_space(x, self.block)

    def get_config(self) -> dict:
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package="qmtgan")
class CentredNormalization(layers.Layer):
    """Per-image, per-channel normalization (GroupNormalization with one group per channel),
    centred before it is scaled. Weights: gamma, beta, as GroupNormalization's."""

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape) -> None:
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, x):
        centred = x - keras.ops.mean(x, axis=(1, 2), keepdims=True)
        variance = keras.ops.mean(centred * centred, axis=(1, 2), keepdims=True)
        return centred * (self.gamma * keras.ops.rsqrt(variance + self.epsilon)) + self.beta

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


def _sub_pixel(layer: layers.Conv2DTranspose, x):
    stride = layer.strides[0]
    if layer.strides != (stride, stride) or layer.padding != "same" or layer.dilation_rate != (1, 1):
        raise QmtganError(
            f"{layer.name}: the sub-pixel rewrite needs equal strides, 'same' padding and no dilation"
        )
    kernel, bias = layer.get_weights()
    phases = phase_kernel(kernel, stride)
    conv = layers.Conv2D(phases.shape[-1], phases.shape[0], padding="same", name=f"{layer.name}_phases")
    y = DepthToSpace(stride, name=layer.name)(conv(x))
    conv.set_weights([phases, np.tile(bias, stride * stride)])
    return y


def _centred(layer: layers.GroupNormalization, x):
    if layer.groups != x.shape[-1]:
        raise QmtganError(
            f"{layer.name}: only per-channel normalization (one group per channel) is rewritten"
        )
    norm = CentredNormalization(layer.epsilon, name=layer.name)
    y = norm(x)
    norm.set_weights(layer.get_weights())
    return y


def deploy_graph(model: keras.Model) -> keras.Model:
    """The same generator with sub-pixel transposed convolutions and centred normalization.
    Every other layer is copied with its weights; the graph is walked in layer order (a
    functional model lists a layer after its inputs)."""
    inputs = keras.Input(model.inputs[0].shape[1:], batch_size=model.inputs[0].shape[0],
                         name=model.inputs[0].name)
    tensors = {id(model.inputs[0]): inputs}
    for layer in model.layers[1:]:
        node = layer._inbound_nodes[0]  # a generator uses each layer once
        args = [tensors[id(t)] for t in node.input_tensors]
        x = args if len(args) > 1 else args[0]
        if isinstance(layer, layers.Conv2DTranspose):
            y = _sub_pixel(layer, x)
        elif isinstance(layer, layers.GroupNormalization):
            y = _centred(layer, x)
        else:
            copy = layer.__class__.from_config(layer.get_config())
            y = copy(x)
            copy.set_weights(layer.get_weights())
        tensors[id(node.output_tensors[0])] = y
    return keras.Model(inputs, tensors[id(model.outputs[0])], name=model.name)
