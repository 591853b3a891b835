"""Data-aware rounding: choose each weight's rounding (its level below or above) for the scene.

The encoder holds the scene it compresses, so it can round for it, as AdaRound (Nagel et al.,
ICML 2020) does for a layer's output: every quantized weight w between levels l0 <= w < l1 of
its tensor's grid becomes l0 + h(V) (l1 - l0), with h a rectified sigmoid of a free variable V
that starts at w's own fraction. The V are trained on the scene's patches to minimize the
generator's output error, plus a term that pushes every h to 0 or 1 ever harder (its exponent
falls from 20 to 2); the weights themselves never move. Each code is then the level h rounds
to. The result is measured on the whole scene and kept only where it beats nearest rounding.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

from qmtgan.quantize import grids
from qmtgan.quantize.finetune import SceneFit
from qmtgan.quantize.methods import QTensor
from qmtgan.quantize.model import QuantizedModel, quantize_tensors
from qmtgan.quantize.policy import Policy

log = logging.getLogger(__name__)

# The rectified sigmoid's stretch (AdaRound's zeta and gamma) and the regularizer's schedule.
ZETA, GAMMA = 1.1, -0.1
BETA_START, BETA_END, WARMUP = 20.0, 2.0, 0.2


def _rest(w: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index of the level below, that level, the gap to the next) for every weight."""
    below = np.clip(np.searchsorted(table, w.ravel(), side="right") - 1, 0, table.size - 2).reshape(w.shape)
    low = table[below]
    gap = np.maximum(table[below + 1] - low, np.float32(1e-12))
    return below, low, gap


def adaround(fit: SceneFit, policy: Policy, epochs: int = 20, learning_rate: float = 3e-3,
             weight: float = 1.0, seed: int = 0, progress: bool = True) -> tuple[QuantizedModel, dict]:
    """``policy``'s quantized model with its codes chosen for ``fit``'s scene, and a record of
    the SNR with nearest rounding and with the chosen rounding (the better is kept)."""
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from qmtgan.train.dataset import training_dataset

    grids.check_grid_method(policy.method, "data-aware rounding")
    nearest = quantize_tensors(fit.tensors, policy, seed)
    nearest_snr = fit.snr_db(nearest.dequantized())
    by_path = {}
    for (info, w), entry in zip(fit.tensors, nearest.entries):
        table = grids.levels(entry.q) if entry.quantized else np.zeros(0)
        if table.size >= 2:
            below, low, gap = _rest(w, table)
            by_path[info.name] = (below, low, gap, np.clip((w - low) / gap, 0.0, 1.0))
    trainable = fit.generator.trainable_variables
    rounding = {}
    for v in trainable:
        if v.path in by_path:
            frac = by_path[v.path][3]
            p = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)  # h(V) = frac at the start
            rounding[v.path] = tf.Variable(np.log(p / (1 - p)).astype(np.float32), name=v.path + "/round")
    free = list(rounding.values())
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(free)
    beta = tf.Variable(BETA_START, trainable=False)
    lows = {k: tf.constant(val[1]) for k, val in by_path.items()}
    gaps = {k: tf.constant(val[2]) for k, val in by_path.items()}
    count = sum(int(np.prod(v.shape)) for v in free)
    first = next(iter(training_dataset(fit.patches, seed, 1, 1, False)))
    base = float(tf.reduce_mean(tf.square(first[1] - fit.generator(first[0], training=False))))
    scale = tf.constant(weight * base / count)  # the push to 0/1 weighs about `weight` of the error

    def soft(v_path):
        return tf.clip_by_value(tf.sigmoid(rounding[v_path]) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    @tf.function
    def step(ref, tgt):
        with tf.GradientTape() as tape:
            values, reg = [], 0.0
            for v in trainable:
                if v.path in rounding:
                    h = soft(v.path)
                    values.append(lows[v.path] + h * gaps[v.path])
                    reg += tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta))
                else:
                    values.append(tf.convert_to_tensor(v))
            error = tf.reduce_mean(tf.square(tgt - fit.forward(values, ref)))
            loss = error + scale * reg
        optimizer.apply_gradients(zip(tape.gradient(loss, free), free))
        return error

    steps = fit.patches.trainable.size
    batches = iter(training_dataset(fit.patches, seed, 1, epochs, False))
    total, t0 = epochs * steps, time.perf_counter()
    with tqdm(total=total, unit="step", desc="adaround", disable=not progress) as bar:
        for i in range(total):
            annealed = max(0.0, (i / total - WARMUP) / (1 - WARMUP))
            beta.assign(BETA_END + (BETA_START - BETA_END) * (1 - annealed) if i >= WARMUP * total else 0.0)
            error = float(step(*next(batches)))
            bar.set_postfix(l2=f"{error:.5f}")
            bar.update(1)
    chosen_entries = []
    for (info, _), entry in zip(fit.tensors, nearest.entries):
        if info.name not in rounding:
            chosen_entries.append(entry)
            continue
        up = soft(info.name).numpy() >= 0.5
        codes = (by_path[info.name][0] + up).astype(np.uint32)
        chosen_entries.append(replace(entry, q=QTensor(codes, entry.q.side, entry.q.bits, entry.q.method,
                                                       entry.q.channel_axis)))
    chosen = QuantizedModel(policy, chosen_entries, nearest.seed)
    chosen_snr = fit.snr_db(chosen.dequantized())
    record = {"policy": policy.to_dict(), "epochs": epochs, "wall_s": time.perf_counter() - t0,
              "nearest_snr_db": nearest_snr, "adaround_snr_db": chosen_snr,
              "changed_fraction": float(np.mean([np.mean(c.q.codes != n.q.codes) for c, n in
                                                 zip(chosen_entries, nearest.entries) if n.quantized]))}
    log.info(f"{policy.label}: SNR {nearest_snr:.2f} dB with nearest rounding, {chosen_snr:.2f} dB with "
             f"data-aware rounding ({record['changed_fraction']:.1%} of the codes changed, "
             f"{record['wall_s']:.0f} s)")
    return (chosen if chosen_snr > nearest_snr else nearest), record
