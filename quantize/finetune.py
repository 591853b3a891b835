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

from qmtgan.quantize.model import quantize_tensors
from qmtgan.quantize.policy import FLOAT_LAYERS, Policy, generator_tensors
from qmtgan.runtime.dequant import dequantize
from qmtgan.runtime.errors import QmtganError

log = logging.getLogger(__name__)

# Methods whose grid is one set of levels per tensor (per-channel grids are not handled here).
QAT_METHODS = ("symmetric", "asymmetric", "linear", "mse", "kmeans", "pwl")


def tensor_levels(tensors, policy: Policy) -> list[np.ndarray | None]:
    """Per tensor, the sorted levels its PTQ grid offers (None: kept in float32)."""
    qmodel = quantize_tensors(tensors, policy)
    out = []
    for entry in qmodel.entries:
        if not entry.quantized:
            out.append(None)
            continue
        bits = entry.bits
        codes = np.arange(1 << bits, dtype=np.uint32)
        if entry.q.method == "kmeans":
            codes = codes[: entry.q.side.size]
        out.append(np.unique(dequantize(entry.q.method, codes, entry.q.side, bits)).astype(np.float32))
    return out


def finetune(run_dir: Path, pair_dir: Path, out: Path, policy: Policy, epochs: int,
             learning_rate: float = 1e-4, seed: int = 0, progress: bool = True) -> dict:
    """Fine-tune the run's generator through ``policy``'s fake quantization and write the
    result to ``out`` as a run folder; returns the SNR of the quantized model before and after."""
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from qmtgan.train.dataset import make_patch_set, training_dataset
    from qmtgan.train.model_io import assign_weights, load_model, save_model
    from qmtgan.train.pair import load_pair
    from qmtgan.train.reconstruct import reconstruct_scene, scene_metrics
    from qmtgan.train.training import FIXED_LAYERS

    if policy.method not in QAT_METHODS:
        raise QmtganError(f"fine-tuning needs a per-tensor grid: --method one of {', '.join(QAT_METHODS)}, "
                          f"not {policy.method}")
    if (out / "model.json").exists():
        raise QmtganError(f"{out} already holds a run; choose another output folder")
    generator, cfg, norm, meta = load_model(run_dir)
    pair = load_pair(pair_dir)
    patches = make_patch_set(pair.reference, pair.target, cfg.patch_size, normalization=norm)

    def quantized_snr() -> float:
        tensors = generator_tensors(generator)
        float_weights = [w for _, w in tensors]
        assign_weights(generator, quantize_tensors(tensors, policy, seed).dequantized())
        recon = reconstruct_scene(generator, patches.reference, patches.grid, norm, pair.valid)
        assign_weights(generator, float_weights)
        return scene_metrics(pair.target.data, recon, pair.valid, patches.grid)["snr_db"]

    before = quantized_snr()
    tensors = generator_tensors(generator)
    levels = tensor_levels(tensors, policy)
    variables = [v for layer in generator.layers for v in layer.trainable_weights]
    by_path = {v.path: lv for v, lv in zip(variables, levels)}
    trainable = generator.trainable_variables
    grids = [None if by_path.get(v.path) is None else tf.constant(by_path[v.path]) for v in trainable]
    edges = [None if g is None else (g[1:] + g[:-1]) / 2 for g in grids]
    train_mask = [not v.path.startswith(FIXED_LAYERS) and v.path.split("/")[0] not in FLOAT_LAYERS
                  for v in trainable]
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build([v for v, t in zip(trainable, train_mask) if t])

    def fake_quantized(values):
        out = []
        for v, grid, edge in zip(values, grids, edges):
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
            fake, _ = generator.stateless_call(
                fake_quantized(values),
                [tf.convert_to_tensor(v) for v in generator.non_trainable_variables],
                ref,
                training=True,
            )
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
    after = quantized_snr()
    record = {
        k: v
        for k, v in meta.items()
        if k not in ("schema", "generator", "bands", "normalization", "patch_size", "files")
    }
    record["finetune"] = {
        "from": str(run_dir),
        "policy": policy.to_dict(),
        "epochs": epochs,
        "learning_rate": learning_rate,
        "wall_s": wall,
        "quantized_snr_before_db": before,
        "quantized_snr_after_db": after,
    }
    save_model(out, generator, cfg, norm, record)
    log.info(
        f"{policy.label}: quantized SNR {before:.2f} dB before, {after:.2f} dB after {epochs} epochs "
        f"({wall:.0f} s)"
    )
    return record["finetune"]
