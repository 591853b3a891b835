"""Generators by name: `build_generator(GeneratorConfig(name=...))`."""

from __future__ import annotations

from typing import Callable

import keras

from qmtgan.runtime.errors import QmtganError
from qmtgan.train.models.config import GeneratorConfig
from qmtgan.train.models.multitempgan import build_multitempgan
from qmtgan.train.models.peers import PEER_NGF, build_linknet, build_resnet, build_unet

BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "multitempgan": build_multitempgan, "unet": build_unet, "linknet": build_linknet,
    "resnet": build_resnet,
}


def default_config(name: str, **overrides: int | str | None) -> GeneratorConfig:
    """The paper-sized configuration of generator ``name`` with ``overrides`` applied."""
    if name not in BUILDERS:
        raise QmtganError(f"unknown generator '{name}' (choose from {', '.join(BUILDERS)})")
    base = {"ngf": PEER_NGF.get(name, 20)}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return GeneratorConfig(name=name, **base)


def build_generator(cfg: GeneratorConfig, batch_size: int | None = 1) -> keras.Model:
    if cfg.name not in BUILDERS:
        raise QmtganError(f"unknown generator '{cfg.name}' (choose from {', '.join(BUILDERS)})")
    return BUILDERS[cfg.name](cfg, batch_size=batch_size)
