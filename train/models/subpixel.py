"""Stride-s 'same' transposed convolutions computed as sub-pixel convolutions: one stride-1
convolution that computes the s x s output phases side by side, then depth_to_space(s). The
same arithmetic on the same kernel, rearranged so that no multiply lands on an inserted zero.

`phase_kernel` is the rearrangement (the exported graph of convert/deploy_graph.py bakes it
into a plain convolution). `SubpixelConv2DTranspose` keeps the transposed convolution's own
kernel variable and gathers the phase kernel from it on every call, so its weights, its
checkpoints and its gradients are the standard layer's: training and reconstruction run their
generator through `with_subpixel_deconvs`, and what is saved is always the standard layer
(`with_standard_deconvs`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from qmtgan.runtime.errors import QmtganError


def phase_kernel(kernel: np.ndarray, stride: int = 2) -> np.ndarray:
    """A 'same'-padded transposed-conv kernel (k, k, out, in) -> the stride-1 'same' conv kernel
    (2r+1, 2r+1, in, stride^2 * out) whose output channels are the output phases in
    depth-to-space order: phase (a, b) of output channel c is channel (a * stride + b) * out + c.

    Output row stride*m + a takes input rows m + d through kernel tap t = a + pad - stride*d,
    where pad = (k - stride) // 2 is the top padding of the forward convolution."""
    k = kernel.shape[0]
    if kernel.shape[1] != k:
        raise QmtganError(f"the sub-pixel rewrite needs a square kernel, got {kernel.shape[:2]}")
    out_ch, in_ch = kernel.shape[2], kernel.shape[3]
    pad = max(k - stride, 0) // 2
    taps = {a: [(t, (a + pad - t) // stride) for t in range(k) if (a + pad - t) % stride == 0]
            for a in range(stride)}
    radius = max(abs(d) for phase in taps.values() for _, d in phase)
    phases = np.zeros((2 * radius + 1, 2 * radius + 1, in_ch, stride * stride * out_ch), kernel.dtype)
    for a in range(stride):
        for ty, dy in taps[a]:
            for b in range(stride):
                first = (a * stride + b) * out_ch
                for tx, dx in taps[b]:
                    phases[dy + radius, dx + radius, :, first:first + out_ch] = kernel[ty, tx].T
    return phases


def _gather_index(k: int, stride: int) -> np.ndarray:
    """(2r+1, 2r+1, stride^2) index of the kernel tap (row-major in k x k; k * k = no tap) that
    `phase_kernel` puts at each offset and phase: its rearrangement as a gather."""
    codes = np.arange(1, k * k + 1, dtype=np.float64).reshape(k, k, 1, 1)
    index = phase_kernel(codes, stride)[:, :, 0, :].astype(np.int32) - 1
    index[index < 0] = k * k
    return index


@keras.saving.register_keras_serializable(package="qmtgan")
class SubpixelConv2DTranspose(layers.Conv2DTranspose):
    """Conv2DTranspose ('same', equal strides, channels last) by sub-pixel convolution."""

    def build(self, input_shape):
        super().build(input_shape)
        self._index = _gather_index(self.kernel_size[0], self.strides[0])

    def call(self, inputs):
        import tensorflow as tf

        k, s = self.kernel_size[0], self.strides[0]
        taps = tf.reshape(self.kernel, (k * k, self.filters, -1))
        taps = tf.concat([taps, tf.zeros_like(taps[:1])], axis=0)     # the no-tap zero
        g = tf.gather(taps, self._index)                                # (n, n, s*s, out, in)
        n = self._index.shape[0]
        kernel = tf.reshape(tf.transpose(g, (0, 1, 4, 2, 3)), (n, n, -1, s * s * self.filters))
        y = tf.nn.depth_to_space(tf.nn.conv2d(inputs, kernel, 1, "SAME"), s)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y


def _convertible(layer) -> bool:
    return (type(layer) is layers.Conv2DTranspose and layer.strides[0] == layer.strides[1] > 1
            and layer.padding == "same" and layer.data_format == "channels_last"
            and layer.kernel_size[0] == layer.kernel_size[1] and tuple(layer.dilation_rate) == (1, 1)
            and layer.output_padding is None)


def _clone(model: keras.Model, swap) -> keras.Model:
    def clone_layer(layer):
        return (swap(layer) or type(layer)).from_config(layer.get_config())

    twin = keras.models.clone_model(model, clone_function=clone_layer)
    twin.set_weights(model.get_weights())
    return twin


def with_subpixel_deconvs(model: keras.Model) -> keras.Model:
    """A copy of ``model``, weights included, whose eligible transposed convolutions are
    sub-pixel ones (``model`` itself when it has none)."""
    if not any(_convertible(layer) for layer in model.layers):
        return model
    return _clone(model, lambda layer: SubpixelConv2DTranspose if _convertible(layer) else None)


def with_standard_deconvs(model: keras.Model) -> keras.Model:
    """The inverse of `with_subpixel_deconvs`: a copy with standard Conv2DTranspose layers."""
    if not any(isinstance(layer, SubpixelConv2DTranspose) for layer in model.layers):
        return model
    return _clone(model, lambda layer: layers.Conv2DTranspose
                  if isinstance(layer, SubpixelConv2DTranspose) else None)
