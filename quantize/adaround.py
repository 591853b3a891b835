"""Data-aware rounding: choose each kernel weight's rounding (its level below or above) for the scene.

The encoder holds the scene it compresses, so it can round for it, layer by layer, as AdaRound
(Nagel et al., ICML 2020) does: every kernel weight w between levels l0 <= w < l1 of its
tensor's grid becomes l0 + h(V) (l1 - l0), with h a rectified sigmoid of a free variable V that
starts at w's own fraction. For one layer at a time, front to back, the V are trained so that
the layer's output, fed the quantized network's own input to it, matches the float layer's
output on the float network's input, plus a term that pushes every h to 0 or 1 ever harder (its
exponent falls from 20 to 2); the weights themselves never move. Each code is then the level h
rounds to, and later layers are fitted on the input the chosen codes give them. Training runs
on random crops of the layer's inputs over the scene's patches. The result is measured on the
whole scene and kept only where it beats nearest rounding.

Bias correction (Nagel et al., ICCV 2019, empirical form) runs in the same pass, with nearest or
chosen rounding: after a layer's kernel is fixed, the mean per-channel gap that remains between
its output and the float layer's over the held patches is added to its bias before the bias is
quantized, so the quantized network keeps each channel's mean; a layer keeps the corrected bias
only where the whole scene then measures better. (A channel that a per-channel
normalization follows loses any constant anyway; conv1 and the last deconv are where it acts.)
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

from qmtgan.quantize import grids
from qmtgan.quantize.finetune import SceneFit
from qmtgan.quantize.methods import QTensor, get_method
from qmtgan.quantize.model import QuantizedModel, quantize_tensors
from qmtgan.quantize.policy import FLOAT_LAYERS, Policy

log = logging.getLogger(__name__)

# The rectified sigmoid's stretch (AdaRound's zeta and gamma) and the regularizer's schedule.
ZETA, GAMMA = 1.1, -0.1
BETA_START, BETA_END, WARMUP = 20.0, 2.0, 0.2
MAX_PATCHES = 8   # patches whose layer inputs are held in memory
CROP = 64         # side of a training crop, in the layer's input pixels
BATCH = 8         # crops per step


def _rest(w: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index of the level below, that level, the gap to the next) for every weight."""
    below = np.clip(np.searchsorted(table, w.ravel(), side="right") - 1, 0, table.size - 2).reshape(w.shape)
    low = table[below]
    gap = np.maximum(table[below + 1] - low, np.float32(1e-12))
    return below, low, gap


def _layer_inputs(generator, layer, patches: np.ndarray) -> np.ndarray:
    """What ``layer`` receives for each patch, with the generator's current weights."""
    import keras

    prefix = keras.Model(generator.input, layer.input)
    return np.concatenate([np.asarray(prefix(patches[i:i + 1], training=False)) for i in range(len(patches))])


def _crops(rng: np.random.Generator, fp: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BATCH random crops (even offsets, so a stride-2 grid stays aligned) at the same places of
    the float and the quantized input."""
    n, h, w = fp.shape[:3]
    ch, cw = min(CROP, h), min(CROP, w)
    idx = rng.integers(0, n, BATCH)
    ys = 2 * rng.integers(0, (h - ch) // 2 + 1, BATCH)
    xs = 2 * rng.integers(0, (w - cw) // 2 + 1, BATCH)
    def take(a: np.ndarray) -> np.ndarray:
        return np.stack([a[i, y:y + ch, x:x + cw] for i, y, x in zip(idx, ys, xs)])

    return take(fp), take(q)


def _round_layer(layer, own: list[np.ndarray], quantized_rest: list[np.ndarray], rest, x_fp: np.ndarray,
                 x_q: np.ndarray, steps: int, learning_rate: float, weight: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Whether each of ``layer``'s kernel weights rounds up, fitted on its inputs: ``own`` are
    the layer's float tensors (kernel first), ``quantized_rest`` its other tensors as stored."""
    import keras
    import tensorflow as tf

    below, low, gap = rest
    kernel = own[0]
    frac = np.clip((kernel - low) / gap, 0.0, 1.0)
    p = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)  # h(V) = frac at the start
    v = tf.Variable(np.log(p / (1 - p)).astype(np.float32))
    low_t, gap_t = tf.constant(low), tf.constant(gap)
    own = [tf.constant(w) for w in own]
    quantized_rest = [tf.constant(w) for w in quantized_rest]
    beta = tf.Variable(BETA_START, trainable=False)
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build([v])

    def soft():
        return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def error(fp, q, h):
        target = layer.stateless_call(own, [], fp)[0]
        got = layer.stateless_call([low_t + h * gap_t] + quantized_rest, [], q)[0]
        return tf.reduce_mean(tf.square(target - got))

    probe = _crops(rng, x_fp, x_q)
    start = float(error(*probe, soft()))
    scale = tf.constant(weight * max(start, 1e-12) / kernel.size)  # the push to 0/1 weighs ~`weight` of it

    @tf.function
    def step(fp, q, regularize):
        with tf.GradientTape() as tape:
            h = soft()
            reg = tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta))
            loss = error(fp, q, h) + regularize * scale * reg
        optimizer.apply_gradients([(tape.gradient(loss, v), v)])

    for i in range(steps):
        annealed = max(0.0, (i / steps - WARMUP) / (1 - WARMUP))
        beta.assign(BETA_END + (BETA_START - BETA_END) * (1 - annealed))
        step(*_crops(rng, x_fp, x_q), tf.constant(1.0 if i >= WARMUP * steps else 0.0))
    return soft().numpy() >= 0.5


def _mean_gap(layer, own: list[np.ndarray], quantized: list[np.ndarray], x_fp: np.ndarray,
              x_q: np.ndarray) -> np.ndarray:
    """Per output channel, the float layer's mean output minus the quantized layer's over the
    held patches (one patch at a time)."""
    total = 0.0
    for fp, q in zip(x_fp, x_q):
        gap = np.asarray(layer.stateless_call(own, [], fp[None])[0]) - \
            np.asarray(layer.stateless_call(quantized, [], q[None])[0])
        total = total + gap.reshape(-1, gap.shape[-1]).mean(axis=0)
    return (total / len(x_fp)).astype(np.float32)


def fit_to_scene(fit: SceneFit, policy: Policy, steps: int = 500, learning_rate: float = 1e-2,
             weight: float = 0.01, seed: int = 0, progress: bool = True, rounding: bool = True,
             bias_correction: bool = True) -> tuple[QuantizedModel, dict]:
    """``policy``'s quantized model fitted to ``fit``'s scene layer by layer: each kernel's codes
    chosen (``rounding``, ``steps`` each) and each bias corrected (``bias_correction``), and a
    record of the SNR with nearest rounding and with the data-aware model (the better is kept)."""
    from tqdm import tqdm

    from qmtgan.train.model_io import assign_weights

    grids.check_grid_method(policy.method, "data-aware rounding")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    nearest = quantize_tensors(fit.tensors, policy, seed)
    nearest_snr = fit.snr_db(nearest.dequantized())
    generator = fit.generator
    own = [w for _, w in fit.tensors]
    current = nearest.dequantized()
    entries = list(nearest.entries)
    index = {info.name: i for i, (info, _) in enumerate(fit.tensors)}
    chosen_layers = [layer for layer in generator.layers
                     if layer.name not in FLOAT_LAYERS and getattr(layer, "kernel", None) is not None
                     and entries[index[layer.kernel.path]].quantized]
    held = fit.patches.trainable  # spread over the scene when there are more than MAX_PATCHES
    spread = np.linspace(0, held.size - 1, min(held.size, MAX_PATCHES)).astype(int)
    sample = fit.patches.reference[held[spread]]
    corrected, current_snr = 0, nearest_snr  # the scene's SNR with `current` (None: not measured)
    try:
        for layer in tqdm(chosen_layers, unit="layer", desc="fit to scene", disable=not progress):
            k = index[layer.kernel.path]
            table = grids.levels(entries[k].q)
            if table.size < 2:
                continue
            assign_weights(generator, own)
            x_fp = _layer_inputs(generator, layer, sample)
            assign_weights(generator, current)
            x_q = _layer_inputs(generator, layer, sample)
            others = [index[w.path] for w in layer.trainable_weights[1:]]
            if rounding:
                rest = _rest(own[k], table)
                up = _round_layer(layer, [own[i] for i in [k] + others], [current[i] for i in others], rest,
                                  x_fp, x_q, steps, learning_rate, weight, rng)
                codes = (rest[0] + up).astype(np.uint32)
                q = entries[k].q
                entries[k] = replace(entries[k], q=QTensor(codes, q.side, q.bits, q.method, q.channel_axis))
                current[k] = table[codes]
                current_snr = None
            if bias_correction and others and layer.trainable_weights[1].path.endswith("bias"):
                b, group = others[0], [k] + others
                gap = _mean_gap(layer, [own[i] for i in group], [current[i] for i in group], x_fp, x_q)
                entry, value = _requantized(entries[b], own[b] + gap, policy, rng)
                # kept where the whole scene measures better: the held patches are a sample, and
                # re-quantizing the bias costs too
                trial = [value if i == b else w for i, w in enumerate(current)]
                before = fit.snr_db(current) if current_snr is None else current_snr
                after = fit.snr_db(trial)
                if after > before:
                    entries[b], current = entry, trial
                    corrected += 1
                current_snr = max(before, after)
    finally:
        assign_weights(generator, own)
    chosen = QuantizedModel(policy, entries, nearest.seed)
    chosen_snr = fit.snr_db(chosen.dequantized())
    changed = [np.mean(c.q.codes != n.q.codes) for c, n in zip(entries, nearest.entries)
               if n.quantized and n.info.is_conv and n.info.layer not in FLOAT_LAYERS]
    record = {"policy": policy.to_dict(), "rounding": rounding, "bias_correction": bias_correction,
              "steps_per_layer": steps if rounding else 0, "wall_s": time.perf_counter() - t0,
              "nearest_snr_db": nearest_snr, "fitted_snr_db": chosen_snr,
              "changed_fraction": float(np.mean(changed)) if changed else 0.0, "biases_corrected": corrected}
    log.info(f"{policy.label}: SNR {nearest_snr:.2f} dB with nearest rounding, {chosen_snr:.2f} dB "
             f"fitted to the scene ({record['changed_fraction']:.1%} of the kernel codes changed, "
             f"{record['wall_s']:.0f} s)")
    return (chosen if chosen_snr > nearest_snr else nearest), record


def fitted_model(run_dir, reference, target, policy: Policy, rounding: str,
                 seed: int = 0) -> tuple[QuantizedModel, dict]:
    """``policy``'s model of the run fitted to the scene as ``rounding`` (bias or adaround: see
    qmtgan/options.py's rounding_option) says, and its record."""
    if rounding not in ("bias", "adaround"):
        raise ValueError(f"no scene fitting called {rounding}")
    return fit_to_scene(SceneFit(run_dir, reference, target), policy, seed=seed,
                        rounding=rounding == "adaround")


def _requantized(entry, value: np.ndarray, policy: Policy, rng: np.random.Generator):
    """``entry`` holding ``value`` instead (on a grid of its own width and method, or as float32),
    and what it dequantizes to."""
    value = np.asarray(value, np.float32)
    if not entry.quantized:
        return replace(entry, value=value), value
    method = get_method(policy.method_for(entry.info))
    q = method.quantize(value, entry.bits, rng, entry.info.channel_axis)
    return replace(entry, q=q), method.dequantize(q)
