"""Small building blocks shared by the generators and the discriminator."""

from __future__ import annotations

import keras
from keras import layers


def batch1_norm(channels: int, name: str) -> layers.Layer:
    """pix2pix batch norm as the seed runs it: batch size 1, batch statistics at train and
    test time. With one image per batch that is exactly per-image, per-channel normalization
    (GroupNormalization with one group per channel): gamma and beta are its only parameters,
    and there are no running statistics for the decoder to need."""
    return layers.GroupNormalization(groups=channels, epsilon=1e-3, name=name)


def conv_init() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(0.0, 0.02)  # pix2pix / DCGAN initialization
