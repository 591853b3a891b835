"""Quantization-aware fine-tuning: a few epochs of training through fake-quantized weights.

Every quantized tensor is held on the grid its PTQ method chose for the trained weights (the
tensor's own levels: a uniform grid, a Lloyd-Max codebook or a piecewise-linear one). The
forward pass uses each weight's nearest level, the backward pass passes the gradient straight
through to the float weight (the straight-through estimator), so the float weights move to where
their quantized values serve the scene best. The result is an ordinary run folder: `encode`
quantizes it with the same method and width, which puts every weight back on a level.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from qmtgan.quantize import grids
from qmtgan.quantize.methods import nearest_level
from qmtgan.quantize.model import quantize_tensors
from qmtgan.quantize.policy import FLOAT_LAYERS, Policy, generator_tensors
from qmtgan.runtime.errors import QmtganError

log = logging.getLogger(__name__)


def tensor_levels(tensors, policy: Policy) -> list[np.ndarray | None]:
    """Per tensor, the sorted levels its PTQ grid offers (None: kept in float32, and the spectral
    map, which fine-tuning leaves as it is and whose grid is per band)."""
    qmodel = quantize_tensors(tensors, policy)
    return [np.unique(grids.levels(e.q)) if e.quantized and e.info.layer not in FLOAT_LAYERS else None
            for e in qmodel.entries]


class SceneFit:
    """A trained generator with the pair it was fitted to: the patches to train on, and the
    scene's SNR for any weights (the generator's own weights are put back after)."""

    def __init__(self, run_dir: Path, reference, target):
        from qmtgan.train.dataset import make_patch_set
        from qmtgan.train.model_io import load_model

        self.generator, self.cfg, self.norm, self.meta = load_model(run_dir)
        self.reference, self.target = reference, target
        self.valid = reference.valid & target.valid
        self.patches = make_patch_set(reference, target, self.cfg.patch_size, normalization=self.norm)
        self.tensors = generator_tensors(self.generator)

    @classmethod
    def of_pair(cls, run_dir: Path, pair_dir: Path) -> "SceneFit":
        from qmtgan.train.pair import load_pair

        pair = load_pair(pair_dir)
        return cls(run_dir, pair.reference, pair.target)

    def snr_db(self, weights: list[np.ndarray]) -> float:
        from qmtgan.train.model_io import assign_weights
        from qmtgan.train.reconstruct import reconstruct_scene, scene_metrics

        own = [w for _, w in generator_tensors(self.generator)]
        assign_weights(self.generator, weights)
        p = self.patches
        recon = reconstruct_scene(self.generator, p.reference, p.grid, self.norm, self.valid)
        assign_weights(self.generator, own)
        return scene_metrics(self.target.data, recon, self.valid, self.patches.grid)["snr_db"]

    def forward(self, values: list, ref):
        """The generator's output for ``ref`` with ``values`` in place of its trainable
        variables (differentiable in them)."""
        import tensorflow as tf

        fixed = [tf.convert_to_tensor(v) for v in self.generator.non_trainable_variables]
        return self.generator.stateless_call(values, fixed, ref, training=True)[0]


def finetune(
    run_dir: Path,
    pair_dir: Path,
    out: Path,
    policy: Policy,
    epochs: int,
    learning_rate: float = 1e-4,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Fine-tune the run's generator through ``policy``'s fake quantization and write the
    result to ``out`` as a run folder; returns the SNR of the quantized model before and after."""
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from qmtgan.train.dataset import training_dataset
    from qmtgan.train.model_io import assign_weights, save_model
    from qmtgan.train.training import FIXED_LAYERS

    grids.check_grid_method(policy.method, "fine-tuning")
    if (out / "model.json").exists():
        raise QmtganError(f"{out} already holds a run; choose another output folder")
    fit = SceneFit.of_pair(run_dir, pair_dir)
    generator, cfg, norm, meta, patches = fit.generator, fit.cfg, fit.norm, fit.meta, fit.patches

    def quantized_snr() -> float:
        return fit.snr_db(quantize_tensors(generator_tensors(generator), policy, seed).dequantized())

    before = quantized_snr()
    tensors = generator_tensors(generator)
    levels = tensor_levels(tensors, policy)
    variables = [v for layer in generator.layers for v in layer.trainable_weights]
    by_path = {v.path: lv for v, lv in zip(variables, levels)}
    trainable = generator.trainable_variables
    tables = [None if by_path.get(v.path) is None else tf.constant(by_path[v.path]) for v in trainable]
    edges = [None if g is None else (g[1:] + g[:-1]) / 2 for g in tables]
    train_mask = [
        not v.path.startswith(FIXED_LAYERS) and v.path.split("/")[0] not in FLOAT_LAYERS for v in trainable
    ]
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build([v for v, t in zip(trainable, train_mask) if t])

    def fake_quantized(values):
        out = []
        for v, grid, edge in zip(values, tables, edges):
            if grid is None:
                out.append(v)
                continue
            flat = tf.reshape(v, [-1])
            q = tf.gather(grid, tf.searchsorted(edge, flat))
            out.append(v + tf.stop_gradient(tf.reshape(q, tf.shape(v)) - v))  # straight through
        return out

    @tf.function
    def step(ref, tgt):
        values = [tf.convert_to_tensor(v) for v in trainable]
        with tf.GradientTape() as tape:
            tape.watch(values)
            fake = fit.forward(fake_quantized(values), ref)
            loss = tf.reduce_mean(tf.square(tgt - fake))
        grads = tape.gradient(loss, values)
        optimizer.apply_gradients([(g, v) for g, v, t in zip(grads, trainable, train_mask) if t])
        return loss

    steps = patches.trainable.size
    batches = iter(training_dataset(patches, seed, 1, epochs, False))
    t0 = time.perf_counter()
    with tqdm(total=epochs * steps, unit="step", desc="finetune", disable=not progress) as bar:
        for epoch in range(1, epochs + 1):
            optimizer.learning_rate.assign(learning_rate * (1.0 - (epoch - 1) / epochs))
            for _ in range(steps):
                loss = float(step(*next(batches)))
                bar.set_postfix(epoch=epoch, l2=f"{loss:.5f}")
                bar.update(1)
    wall = time.perf_counter() - t0
    if policy.method == "kmeans":  # put on the grid it was tuned for, a tensor keeps it as its codebook
        tuned = [w for _, w in generator_tensors(generator)]
        assign_weights(generator, [w if lv is None else lv[nearest_level(w, lv)]
                                   for w, lv in zip(tuned, levels)])
    after = quantized_snr()
    own = ("schema", "generator", "bands", "normalization", "patch_size", "files")  # save_model writes these
    record = {k: v for k, v in meta.items() if k not in own}
    record["finetune"] = {"from": str(run_dir), "policy": policy.to_dict(), "epochs": epochs,
                          "learning_rate": learning_rate, "wall_s": wall, "quantized_snr_before_db": before,
                          "quantized_snr_after_db": after}
    save_model(out, generator, cfg, norm, record)
    log.info(f"{policy.label}: quantized SNR {before:.2f} dB before, {after:.2f} dB after {epochs} epochs "
             f"({wall:.0f} s)")
    return record["finetune"]
