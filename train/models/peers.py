"""The paper's peer generators (Table 2 rows), sized near the budgets its bpp figures imply:
U-Net ~2.56 M, LinkNet ~2.58 M, ResNet ~2.88 M parameters at 12 bands (built: 2,461,386,
2,470,535 and 2,884,044: integer widths land within 5 %). All map a
(patch, patch, bands) reference to a tanh target of the same shape; `ngf` scales the width.
"""

from __future__ import annotations

import keras
from keras import layers

from qmtgan.train.models.config import GeneratorConfig
from qmtgan.train.models.layers import batch1_norm, conv_init

# The width that brings each peer to its budget at 12 bands (see tests/test_models.py).
PEER_NGF = {"unet": 18, "linknet": 22, "resnet": 32}


def _conv(x, width: int, name: str, kernel: int = 3, strides: int = 1, act: str | None = "relu"):
    x = layers.Conv2D(width, kernel, strides=strides, padding="same",
                      kernel_initializer=conv_init(), name=name)(x)
    x = batch1_norm(width, f"{name}_bn")(x)
    return layers.Activation(act, name=f"{name}_{act}")(x) if act else x


def _input(cfg: GeneratorConfig, batch_size: int | None) -> keras.KerasTensor:
    return keras.Input((cfg.patch_size, cfg.patch_size, cfg.bands), batch_size=batch_size,
                       name="reference")


def _head(x, cfg: GeneratorConfig, kernel: int = 3):
    x = layers.Conv2D(cfg.bands, kernel, padding="same", kernel_initializer=conv_init(),
                      name="head")(x)
    return layers.Activation("tanh", name="target")(x)


def build_unet(cfg: GeneratorConfig, batch_size: int | None = 1) -> keras.Model:
    """Ronneberger U-Net: two 3x3 conv blocks per level, max-pool down, 2x2 transposed conv
    up, skip concatenations; `depth - 1` levels below the top."""
    inp = _input(cfg, batch_size)
    x, skips = inp, []
    levels = cfg.depth - 1
    for i in range(levels):
        w = cfg.ngf * 2**i
        x = _conv(_conv(x, w, f"enc{i + 1}a"), w, f"enc{i + 1}b")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"pool{i + 1}")(x)
    w = cfg.ngf * 2**levels
    x = _conv(_conv(x, w, "bottom_a"), w, "bottom_b")
    for i in reversed(range(levels)):
        w = cfg.ngf * 2**i
        x = layers.Conv2DTranspose(w, 2, strides=2, kernel_initializer=conv_init(), name=f"up{i + 1}")(x)
        x = layers.Concatenate(name=f"skip{i + 1}")([x, skips[i]])
        x = _conv(_conv(x, w, f"dec{i + 1}a"), w, f"dec{i + 1}b")
    return keras.Model(inp, _head(x, cfg, kernel=1), name="unet")


def _res_block(x, width: int, strides: int, name: str):
    y = _conv(x, width, f"{name}a", strides=strides)
    y = _conv(y, width, f"{name}b", act=None)
    if strides != 1 or x.shape[-1] != width:
        x = _conv(x, width, f"{name}_proj", kernel=1, strides=strides, act=None)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))


def build_linknet(cfg: GeneratorConfig, batch_size: int | None = 1) -> keras.Model:
    """LinkNet: residual encoder blocks (stride 2) and decoder blocks (1x1 reduce, 3x3
    transposed conv, 1x1 expand) whose outputs are *added* to the encoder features."""
    inp = _input(cfg, batch_size)
    x = _conv(inp, cfg.ngf, "stem")
    skips, levels = [], cfg.depth - 1
    for i in range(levels):
        x = _res_block(x, cfg.ngf * 2 ** (i + 1), 2, f"enc{i + 1}")
        skips.append(x)
    for i in reversed(range(levels)):
        out_w = cfg.ngf * 2**i
        mid = max(x.shape[-1] // 4, 1)
        y = _conv(x, mid, f"dec{i + 1}_reduce", kernel=1)
        y = layers.Conv2DTranspose(mid, 3, strides=2, padding="same", kernel_initializer=conv_init(),
                                   name=f"dec{i + 1}_up")(y)
        y = _conv(y, out_w, f"dec{i + 1}_expand", kernel=1)
        x = layers.Add(name=f"link{i + 1}")([y, skips[i - 1]]) if i > 0 else y
    return keras.Model(inp, _head(x, cfg), name="linknet")


def build_resnet(cfg: GeneratorConfig, batch_size: int | None = 1, blocks: int = 9) -> keras.Model:
    """Johnson-style ResNet generator: 7x7 stem, two stride-2 downsamplings, `blocks`
    residual blocks, two transposed-conv upsamplings, 7x7 tanh head."""
    inp = _input(cfg, batch_size)
    x = _conv(inp, cfg.ngf, "stem", kernel=7)
    x = _conv(x, cfg.ngf * 2, "down1", strides=2)
    x = _conv(x, cfg.ngf * 4, "down2", strides=2)
    for i in range(blocks):
        x = _res_block(x, cfg.ngf * 4, 1, f"res{i + 1}")
    for i, w in enumerate((cfg.ngf * 2, cfg.ngf), start=1):
        x = layers.Conv2DTranspose(w, 3, strides=2, padding="same", kernel_initializer=conv_init(),
                                   name=f"up{i}")(x)
        x = layers.ReLU(name=f"up{i}_relu")(batch1_norm(w, f"up{i}_bn")(x))
    return keras.Model(inp, _head(x, cfg, kernel=7), name="resnet")
