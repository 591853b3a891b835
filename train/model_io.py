"""A trained model on disk: generator.keras (Keras format, no pickle) + model.json with
everything later stages need (architecture, band order, normalization, patch size, data
identity, training record) and the sha256 of the weights file."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from qmtgan.runtime.atomic import atomic_file, write_text_atomic
from qmtgan.runtime.digest import load_record, sha256_file, verify_files
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.scene import BAND_ORDER
from qmtgan.train.models import layers as _custom_layers  # noqa: F401  (registers them for loading)
from qmtgan.train.models.config import GeneratorConfig
from qmtgan.train.models.subpixel import with_standard_deconvs

MODEL_SCHEMA = "qmtgan.model/1"
GENERATOR_FILE = "generator.keras"


def save_model(run_dir: Path, generator: keras.Model, cfg: GeneratorConfig,
               norm: Normalization, record: dict) -> Path:
    """Writes the generator in its standard form (a trainer's sub-pixel layers converted back)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(run_dir / GENERATOR_FILE) as tmp:
        with_standard_deconvs(generator).save(tmp.with_suffix(".keras"))
        tmp.with_suffix(".keras").rename(tmp)  # Keras insists on the suffix
    meta = {"schema": MODEL_SCHEMA, "generator": cfg.to_dict(), "bands": list(BAND_ORDER),
            "normalization": norm.to_dict(), "patch_size": cfg.patch_size,
            "files": {GENERATOR_FILE: sha256_file(run_dir / GENERATOR_FILE)}, **record}
    write_text_atomic(run_dir / "model.json", json.dumps(meta, indent=2))
    return run_dir


def load_model_meta(run_dir: str | Path) -> dict:
    return load_record(Path(run_dir) / "model.json", MODEL_SCHEMA, "a trained model")


def load_model(run_dir: str | Path) -> tuple[keras.Model, GeneratorConfig, Normalization, dict]:
    run_dir = Path(run_dir)
    meta = load_model_meta(run_dir)
    verify_files(run_dir, meta["files"])
    weights = run_dir / GENERATOR_FILE
    if meta["bands"] != list(BAND_ORDER):
        raise QmtganError(f"{run_dir}: model band order {meta['bands']} != {list(BAND_ORDER)}")
    generator = keras.saving.load_model(weights, compile=False, safe_mode=True)
    return generator, GeneratorConfig.from_dict(meta["generator"]), \
        Normalization.from_dict(meta["normalization"]), meta


def assign_weights(generator, weights: list[np.ndarray]) -> None:
    """Write tensors (in generator_tensors order) into the generator's variables."""
    variables = [v for layer in generator.layers for v in layer.trainable_weights]
    if len(variables) != len(weights):
        raise ValueError(f"generator has {len(variables)} tensors, got {len(weights)}")
    for var, w in zip(variables, weights):
        var.assign(w)
