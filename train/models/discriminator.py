"""PatchGAN discriminator on concat(reference, target-or-generated).

The paper does not give its widths. The stock pix2pix PatchGAN (ndf=64 plus a stride-1
512-wide layer, 14.5 GMAC at 512x512) makes a GAN step several times dearer than the generator step on
a 2-core CPU, so the default here is ndf=32 with `layers` stride-2 4x4 convolutions and a
1-channel 4x4 output: a 62x62 grid of real/fake logits at 512x512 (receptive field 46 px).
"""

from __future__ import annotations

import keras
from keras import layers

from qmtgan.train.models.layers import batch1_norm, conv_init


def build_patchgan(bands: int, patch_size: int, ndf: int = 32, n_layers: int = 3,
                   batch_size: int | None = 1) -> keras.Model:
    ref = keras.Input((patch_size, patch_size, bands), batch_size=batch_size, name="reference")
    tgt = keras.Input((patch_size, patch_size, bands), batch_size=batch_size, name="target")
    x = layers.Concatenate(name="pair")([ref, tgt])
    for i in range(n_layers):
        width = ndf * min(2**i, 8)
        x = layers.Conv2D(width, 4, strides=2, padding="same", kernel_initializer=conv_init(),
                          use_bias=i == 0, name=f"d_conv{i + 1}")(x)
        if i > 0:
            x = batch1_norm(width, f"d_conv{i + 1}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"d_conv{i + 1}_lrelu")(x)
    logits = layers.Conv2D(1, 4, strides=1, padding="valid", kernel_initializer=conv_init(),
                           name="d_logits")(x)
    return keras.Model([ref, tgt], logits, name="patchgan")
