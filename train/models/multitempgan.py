"""The MultiTempGAN generator: pix2pix U-Net cut to `depth` down and `depth` up layers.

Paper configuration (ngf=20, depth=5, 5x5 kernels, 12 bands): widths 20-40-80-160-160 down
and 160-80-40-20-12 up, stride 2 everywhere, biases on all ten layers, norm (gamma, beta) on
all layers but conv1 and the last deconv, LeakyReLU(0.2) down, ReLU up, skip concatenations
(deconv2.. take the mirrored encoder output), tanh output: 2,560,252 parameters in 36 tensors.

With a residual (not in the paper) the tanh output is a change added to the normalized
reference, or to a k x k "spectral" convolution of it (stride 1: the only full-resolution
path), and clipped to [-1, 1]; the last deconv
then starts at zero, so an untrained generator returns exactly that base prediction.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from qmtgan.train.models.config import GeneratorConfig
from qmtgan.train.models.layers import ResidualOutput, batch1_norm, conv_init


def down_widths(cfg: GeneratorConfig) -> list[int]:
    return [cfg.ngf * min(2**i, 8) for i in range(cfg.depth)]


def build_multitempgan(cfg: GeneratorConfig, batch_size: int | None = 1) -> keras.Model:
    widths = down_widths(cfg)
    up_widths = widths[-2::-1] + [cfg.bands]
    inp = keras.Input((cfg.patch_size, cfg.patch_size, cfg.bands), batch_size=batch_size,
                      name="reference")
    x, skips = inp, []
    for i, w in enumerate(widths, start=1):
        x = layers.Conv2D(w, cfg.kernel, strides=2, padding="same", kernel_initializer=conv_init(),
                          name=f"conv{i}")(x)
        if i > 1:
            x = batch1_norm(w, f"conv{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"conv{i}_lrelu")(x)
        skips.append(x)
    for i, w in enumerate(up_widths, start=1):
        if i > 1:  # deconv_i takes the mirrored encoder output too
            x = layers.Concatenate(name=f"skip{i}")([x, skips[cfg.depth - i]])
        last = i == cfg.depth
        init = "zeros" if (last and cfg.residual != "none") else conv_init()
        x = layers.Conv2DTranspose(w, cfg.kernel, strides=2, padding="same",
                                   kernel_initializer=init, name=f"deconv{i}")(x)
        if i < cfg.depth:
            x = batch1_norm(w, f"deconv{i}_bn")(x)
            x = layers.ReLU(name=f"deconv{i}_relu")(x)
    if cfg.residual == "none":
        out = layers.Activation("tanh", name="target")(x)
    else:
        base = inp if cfg.residual == "reference" else layers.Conv2D(
            cfg.bands, cfg.spectral_kernel, padding="same", name="spectral")(inp)
        out = ResidualOutput(name="target")([base, x])
    model = keras.Model(inp, out, name="multitempgan")
    if cfg.residual == "linear":  # start as the identity map; training fits it to the pair
        identity = np.zeros((cfg.spectral_kernel,) * 2 + (cfg.bands, cfg.bands), np.float32)
        identity[cfg.spectral_kernel // 2, cfg.spectral_kernel // 2] = np.eye(cfg.bands)
        model.get_layer("spectral").kernel.assign(identity)
    return model
