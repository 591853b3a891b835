"""A generator shared across pairs: trained once on other pairs, deployed once to both ends, so
that a pair's payload carries no weights.

What differs between pairs (season, sun, atmosphere) is left to each pair's own linear
predictor (a 3x3 spatial-spectral least-squares map of the reference onto the target, whose
coefficients the payload carries). The shared generator's input is that prediction, normalized
per pair, and its output is the prediction plus a learned correction (residual "reference"):
it learns what a linear map misses on every pair, not what changed on one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.linear import apply_linear
from qmtgan.runtime.linear_coding import CodedLinear
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.scene import Scene
from qmtgan.train.dataset import PatchSet, make_patch_set, training_dataset
from qmtgan.train.linear_fit import fit_linear
from qmtgan.train.models.config import GeneratorConfig
from qmtgan.train.presets import REAL_TRAIN

if TYPE_CHECKING:  # the training loop imports Keras: only when a generator is trained
    from qmtgan.train.training import TrainConfig

# The per-pair base every shared generator refines: a 3x3 neighbourhood absorbs a sub-pixel
# misregistration between the dates.
BASE_KERNEL = 3
SHARED_SCHEMA = "qmtgan.shared/1"
# Trained as a per-pair generator is on real scenes: the squared error, a decaying rate, no
# discriminator, and each pair's normalization clipped at 0.1 % of every band at either end.
SHARED_TRAIN = REAL_TRAIN
SHARED_EPOCHS = 30


def linear_base(reference: Scene, target: Scene, seed: int = 0) -> tuple[CodedLinear, np.ndarray]:
    """The pair's linear predictor: (its coefficients as the payload stores them, its prediction
    in DN from those, 0 on nodata)."""
    valid = reference.valid & target.valid
    coded = CodedLinear.code(fit_linear(reference.data, target.data, valid, kernel=BASE_KERNEL, seed=seed))
    return coded, apply_linear(coded.coef, reference.data, valid)


def base_normalization(base: np.ndarray, target: np.ndarray, valid: np.ndarray) -> Normalization:
    """The per-pair map to [-1, 1]: the bands' outliers clipped, so that saturated pixels do not
    squeeze the content (the gate keeps the base where a clipped pixel costs more); fitted on
    the base and the target, carried in the payload, so its bounds are whole DN."""
    clip = SHARED_TRAIN["norm_clip"]
    return Normalization.fit([base, target], valid, clip_percent=clip).outward_to_integers()


def _pair_patches(reference: Scene, target: Scene, patch_size: int, seed: int) -> PatchSet:
    _, base = linear_base(reference, target, seed)
    valid = reference.valid & target.valid
    base_scene = Scene(np.where(valid, base, 0.0).astype(np.float32), reference.crs, reference.transform)
    norm = base_normalization(base, target.data, valid)
    return make_patch_set(base_scene, target, patch_size, normalization=norm)


def _merge(sets: list[PatchSet]) -> PatchSet:
    """One patch set over every pair (the grid and normalization of the first stand for all:
    training only reads the patches)."""
    offsets = np.cumsum([0] + [s.count for s in sets[:-1]])
    return PatchSet(np.concatenate([s.reference for s in sets]), np.concatenate([s.target for s in sets]),
                    sets[0].grid, sets[0].normalization,
                    np.concatenate([s.trainable + o for s, o in zip(sets, offsets)]))


def train_shared(pairs: dict[str, tuple[Scene, Scene]], run_dir: Path, gcfg: GeneratorConfig,
                 tcfg: TrainConfig, progress: bool = True) -> dict:
    """Fit one generator to the patches of every pair (name -> (reference, target)) and write
    run_dir/{generator.keras, model.json}; model.json names the pairs it was trained on."""
    from tqdm import tqdm

    from qmtgan.train.model_io import save_model
    from qmtgan.train.training import _build, _versions, make_train_step

    if gcfg.residual != "reference":
        raise QmtganError("a shared generator refines each pair's linear prediction: it needs "
                          f"--residual reference, not {gcfg.residual}")
    if not pairs:
        raise QmtganError("a shared generator needs at least one training pair")
    t0 = time.perf_counter()
    merged = _merge([_pair_patches(r, t, gcfg.patch_size, tcfg.seed) for r, t in pairs.values()])
    generator, discriminator, g_opt, d_opt = _build(gcfg, tcfg)
    step = make_train_step(generator, discriminator, g_opt, d_opt, tcfg)
    steps = merged.trainable.size
    batches = iter(training_dataset(merged, tcfg.seed, 1, tcfg.epochs, tcfg.flips))
    history = []
    with tqdm(total=tcfg.epochs * steps, unit="step", desc="train shared", disable=not progress,
              dynamic_ncols=True) as bar:
        for epoch in range(1, tcfg.epochs + 1):
            for opt in (g_opt, d_opt):
                opt.learning_rate.assign(tcfg.learning_rate_at(epoch))
            total = 0.0
            for _ in range(steps):
                loss = float(step(*next(batches))["g_l1"])
                total += loss
                bar.set_postfix(epoch=epoch, loss=f"{loss:.5f}")
                bar.update(1)
            history.append({"epoch": epoch, "pixel_loss": total / steps})
    wall = time.perf_counter() - t0
    record = {"shared": {"schema": SHARED_SCHEMA, "pairs": sorted(pairs), "base_kernel": BASE_KERNEL,
                         "normalization": "per pair (in each payload)"},
              "training": {"config": asdict(tcfg), "epochs_done": tcfg.epochs, "wall_s": wall,
                           "final": history[-1], "patches": int(steps), "history": history},
              "data": {}, "versions": _versions()}
    save_model(Path(run_dir), generator, gcfg, merged.normalization, record)
    return record


def shared_train_config(epochs: int = SHARED_EPOCHS, seed: int = 0) -> TrainConfig:
    from qmtgan.train.training import TrainConfig

    return TrainConfig(epochs=epochs, seed=seed, **SHARED_TRAIN)


def shared_config(**overrides) -> GeneratorConfig:
    """The shared generator's default: the paper's width and depth (its size costs no bits, it
    is deployed once), refining the base (residual "reference")."""
    from qmtgan.train.models.registry import default_config

    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(default_config("multitempgan"), residual="reference", **given)
