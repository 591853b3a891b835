"""The model that gets deployed: the generator rebuilt for batch 1 and a fixed tile (a None
batch makes TFLite's TRANSPOSE_CONV dynamic and much slower), carrying either the trained
float weights or a .qmtg payload's dequantized ones (then the artifact is what the payload
describes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qmtgan.runtime.errors import QmtganError


def deployable_generator(run_dir: Path, tile: int, payload_path: Path | None = None):
    """(keras model at tile x tile, generator config, normalization, weights source)."""
    from dataclasses import replace

    from qmtgan.runtime import payload as fmt
    from qmtgan.train.model_io import assign_weights, load_model
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.models.registry import build_generator

    trained, cfg, norm, _ = load_model(run_dir)
    tile_cfg = replace(cfg, patch_size=tile)  # validates divisibility by 2^depth
    model = build_generator(tile_cfg, batch_size=1)
    weights = [np.asarray(v.numpy()) for layer in trained.layers for v in layer.trainable_weights]
    source = "float32 (trained)"
    if payload_path is not None:
        payload = fmt.read(payload_path)
        if "generator" not in payload.header:
            raise QmtganError(f"{payload_path}: carries no generator (made against a shared generator)")
        if GeneratorConfig.from_dict(payload.header["generator"]) != cfg:
            raise QmtganError(f"{payload_path}: made for another generator than {run_dir}")
        weights, source = (
            payload.weights(),
            f"dequantized from {Path(payload_path).name} ({payload.header['policy']['method']})",
        )
    assign_weights(model, weights)
    return model, tile_cfg, norm, source
