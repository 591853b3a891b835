"""Small building blocks shared by the generators and the discriminator."""

from __future__ import annotations

import keras
from keras import layers


def batch1_norm(channels: int, name: str) -> layers.Layer:
    """pix2pix batch norm as the paper runs it: batch size 1, batch statistics at train and
    test time. With one image per batch that is exactly per-image, per-channel normalization
    (GroupNormalization with one group per channel): gamma and beta are its only parameters,
    and there are no running statistics for the decoder to need."""
    return layers.GroupNormalization(groups=channels, epsilon=1e-3, name=name)


def conv_init() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(0.0, 0.02)  # pix2pix / DCGAN initialization


@keras.saving.register_keras_serializable(package="qmtgan")
class ResidualOutput(layers.Layer):
    """clip(base + tanh(x), -1, 1): a bounded change added to a prediction in the normalized
    range, clipped back to the range the decoder maps to DN."""

    def call(self, inputs):
        base, x = inputs
        return keras.ops.clip(base + keras.ops.tanh(x), -1.0, 1.0)
