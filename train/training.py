"""The pix2pix training loop: adversarial + lambda * L1, Adam(2e-4, beta1=0.5), batch 1.

For compression the generator is fitted to the one scene it encodes, so "validation" is the
reconstruction of that scene: SNR (dB, in DN on valid pixels) after every `val_every` epochs.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from qmtgan import __version__
from qmtgan.runtime.atomic import write_text_atomic
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.scene import Scene
from qmtgan.train.checkpoint import latest_checkpoint, restore_checkpoint, save_checkpoint
from qmtgan.train.dataset import make_patch_set, training_dataset
from qmtgan.train.model_io import assign_weights, load_model, save_model
from qmtgan.train.models.config import GeneratorConfig
from qmtgan.train.models.fixed_input import with_layer_as_input
from qmtgan.train.models.subpixel import with_subpixel_deconvs
from qmtgan.train.reconstruct import reconstruct_scene, scene_metrics


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    lambda_l1: float = 100.0
    learning_rate: float = 2e-4
    beta1: float = 0.5
    seed: int = 0
    ndf: int = 32            # discriminator width (see models/discriminator.py)
    d_layers: int = 3
    adversarial: bool = True  # False: L1 only (the generator step alone, several times cheaper)
    flips: bool = False       # random mirror flips: off, the model is fitted to this one scene
    val_every: int = 1
    decay_from: float = 1.0   # fraction of the epochs after which the learning rate falls
                              # linearly to 0 (pix2pix: 0.5); 1.0 keeps it constant
    loss: str = "l1"          # pixel loss: l1 (pix2pix) or l2 (the squared error SNR measures)
    init: str = ""            # run folder whose generator weights start this one (warm start)
    norm_clip: float = 0.1    # percent of each band's values clipped at either end by the
                              # normalization (0: none; see runtime/normalization.py)

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.val_every <= 0:
            raise QmtganError("epochs and val_every must be positive")
        if self.loss not in LOSSES:
            raise QmtganError(f"loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")
        if not 0.0 <= self.decay_from <= 1.0:
            raise QmtganError(f"decay_from must be in [0, 1], got {self.decay_from}")

    def learning_rate_at(self, epoch: int) -> float:
        """pix2pix's schedule: constant, then linear decay to 0 over the last epochs."""
        start = self.decay_from * self.epochs
        if epoch <= start:
            return self.learning_rate
        return self.learning_rate * max(0.0, 1.0 - (epoch - start) / (self.epochs - start + 1))


LOSSES = ("l1", "l2")
SPECTRAL = "spectral"
FIXED_LAYERS = (f"{SPECTRAL}/",)
LOG_FIELDS = ["epoch", "g_loss", "g_adv", "g_l1", "d_loss", "val_snr_db", "epoch_s"]


def _build(gcfg: GeneratorConfig, tcfg: TrainConfig):
    import keras

    from qmtgan.train.models.discriminator import build_patchgan
    from qmtgan.train.models.registry import build_generator

    keras.utils.set_random_seed(tcfg.seed)
    # trained in the sub-pixel form of its transposed convolutions (same weights, fewer
    # multiplies) and saved in the standard form
    generator = with_subpixel_deconvs(build_generator(gcfg))
    discriminator = build_patchgan(gcfg.bands, gcfg.patch_size, tcfg.ndf, tcfg.d_layers)
    g_opt = keras.optimizers.Adam(tcfg.learning_rate, beta_1=tcfg.beta1)
    d_opt = keras.optimizers.Adam(tcfg.learning_rate, beta_1=tcfg.beta1)
    g_opt.build(generator.trainable_variables)
    d_opt.build(discriminator.trainable_variables)
    return generator, discriminator, g_opt, d_opt


def make_train_step(generator, discriminator, g_opt, d_opt, tcfg: TrainConfig, given_base: bool = False):
    """One training step, step(ref, tgt), or with ``given_base`` step(ref, tgt, base): the fixed
    spectral map's output for that patch computed beforehand (`spectral_bases`)."""
    import tensorflow as tf

    # The linear residual's spectral map is fitted by least squares before training and kept:
    # gradient steps only move it away from that optimum while the U-Net learns the rest.
    g_vars = [v for v in generator.trainable_variables if not v.path.startswith(FIXED_LAYERS)]
    model = with_layer_as_input(generator, SPECTRAL) if given_base else generator
    bce = lambda labels, logits: tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))

    @tf.function
    def step(ref, tgt, base=None):
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = model([ref, base] if given_base else ref, training=True)
            err = tgt - fake
            pixel = tf.reduce_mean(tf.abs(err)) if tcfg.loss == "l1" else tf.reduce_mean(tf.square(err))
            if tcfg.adversarial:
                d_real = discriminator([ref, tgt], training=True)
                d_fake = discriminator([ref, fake], training=True)
                g_adv = bce(tf.ones_like(d_fake), d_fake)
                d_loss = 0.5 * (bce(tf.ones_like(d_real), d_real) + bce(tf.zeros_like(d_fake), d_fake))
            else:
                g_adv = d_loss = tf.constant(0.0)
            g_loss = g_adv + tcfg.lambda_l1 * pixel
        g_opt.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))
        if tcfg.adversarial:
            d_opt.apply_gradients(zip(d_tape.gradient(d_loss, discriminator.trainable_variables),
                                      discriminator.trainable_variables))
        # the log keeps one column, g_l1, for the pixel loss, L1 or L2
        return {"g_loss": g_loss, "g_adv": g_adv, "g_l1": pixel, "d_loss": d_loss}

    return step


def caches_spectral_base(gcfg: GeneratorConfig, tcfg: TrainConfig) -> bool:
    """Whether training computes the fixed spectral map once per patch instead of every step:
    with a linear residual, unless patches are mirrored (a mirrored patch's base is not the
    mirrored base: the map is a 3x3 convolution)."""
    return gcfg.residual == "linear" and not tcfg.flips


def spectral_bases(generator, reference: np.ndarray) -> np.ndarray:
    """The spectral map's output for every (n, p, p, bands) reference patch."""
    layer = generator.get_layer(SPECTRAL)
    return np.concatenate([np.asarray(layer(reference[i : i + 1])) for i in range(len(reference))])


def _initialize(generator, gcfg: GeneratorConfig, tcfg: TrainConfig, patches) -> None:
    """Warm start from another run's generator (same configuration: a revisit of the same
    place); then fit a linear residual's spectral map to this pair by robust least squares, so
    that training starts from the linear predictor of these two dates."""
    if tcfg.init:
        previous, cfg, _, _ = load_model(tcfg.init)
        if replace(cfg, patch_size=gcfg.patch_size) != gcfg:
            raise QmtganError(
                f"--init {tcfg.init}: its generator {cfg.to_dict()} is not this one {gcfg.to_dict()}"
            )
        assign_weights(generator, [np.asarray(v.numpy()) for layer in previous.layers
                                   for v in layer.trainable_weights])
    if gcfg.residual == "linear":
        from qmtgan.train.linear_fit import fit_linear

        # nodata (DN 0) maps to -1; leaving out every pixel at -1 also drops a few clipped ones
        valid = np.all(patches.reference > -1.0, axis=-1) & np.all(patches.target > -1.0, axis=-1)
        ref = patches.reference[patches.trainable].transpose(3, 0, 1, 2)
        tgt = patches.target[patches.trainable].transpose(3, 0, 1, 2)
        k, bands = gcfg.spectral_kernel, gcfg.bands
        # zero padding inside each patch, like the layer's 'same' padding
        coef = fit_linear(ref, tgt, valid[patches.trainable], kernel=k, pad="constant", seed=tcfg.seed)
        layer = generator.get_layer("spectral")
        layer.kernel.assign(coef[:, :-1].reshape(bands, k, k, bands).transpose(1, 2, 3, 0))
        layer.bias.assign(coef[:, -1])


def _write_log(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, LOG_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in LOG_FIELDS})
    write_text_atomic(path, buf.getvalue())


def train(reference: Scene, target: Scene, run_dir: str | Path, gcfg: GeneratorConfig,
          tcfg: TrainConfig, data_identity: dict, resume: bool = False,
          progress: bool = True, stop_after: int | None = None,
          on_step: Callable[[], None] | None = None) -> dict:
    """Train and write run_dir/{generator.keras, model.json, train_log.csv, checkpoints/}.

    ``stop_after`` ends the process's work after that many epochs of this call (used to
    interrupt a run deliberately); the run stays resumable. ``on_step`` is called after every
    step (a caller's own progress display)."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    latest = latest_checkpoint(ckpt_root) if ckpt_root.exists() else None
    if latest is not None and not resume:
        raise QmtganError(f"{run_dir} already holds a training run ({latest.name}); "
                          "pass --resume to continue it or choose another output folder")
    patches = make_patch_set(reference, target, gcfg.patch_size, clip_percent=tcfg.norm_clip)
    valid = reference.valid & target.valid
    generator, discriminator, g_opt, d_opt = _build(gcfg, tcfg)
    if latest is None:
        _initialize(generator, gcfg, tcfg, patches)
    models = {"generator": generator, "discriminator": discriminator}
    optimizers = {"g_opt": g_opt, "d_opt": d_opt}
    history: list[dict] = []
    start_epoch, wall_before = 1, 0.0
    if latest is not None:
        state = restore_checkpoint(latest, models, optimizers)
        if state.get("generator") != gcfg.to_dict() or state.get("train") != asdict(tcfg):
            raise QmtganError(f"{latest}: checkpoint was made with another configuration; "
                              "resume with the same options")
        history, start_epoch, wall_before = state["history"], state["epoch"] + 1, state["wall_s"]
    given_base = caches_spectral_base(gcfg, tcfg)
    step = make_train_step(generator, discriminator, g_opt, d_opt, tcfg, given_base)
    bases = spectral_bases(generator, patches.reference) if given_base else None
    steps = patches.trainable.size
    t0 = time.perf_counter()
    bar = tqdm(total=tcfg.epochs * steps, initial=(start_epoch - 1) * steps, unit="step",
               desc="train", disable=not progress, dynamic_ncols=True)
    done_here = 0
    batches = iter(training_dataset(patches, tcfg.seed, start_epoch, tcfg.epochs, tcfg.flips, bases))
    for epoch in range(start_epoch, tcfg.epochs + 1):
        if stop_after is not None and done_here >= stop_after:
            break
        te = time.perf_counter()
        for opt in (g_opt, d_opt):
            opt.learning_rate.assign(tcfg.learning_rate_at(epoch))
        sums: dict[str, float] = {}
        for _ in range(steps):
            losses = {k: float(v) for k, v in step(*next(batches)).items()}
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(epoch=epoch, l1=f"{losses['g_l1']:.4f}", d=f"{losses['d_loss']:.3f}")
            bar.update(1)
            if on_step is not None:
                on_step()
        row = {"epoch": epoch, **{k: v / steps for k, v in sums.items()}}
        if epoch % tcfg.val_every == 0 or epoch == tcfg.epochs:
            recon = reconstruct_scene(generator, patches.reference, patches.grid,
                                      patches.normalization, valid)
            row["val_snr_db"] = scene_metrics(target.data, recon, valid, patches.grid)["snr_db"]
            bar.write(f"epoch {epoch}: L1 {row['g_l1']:.4f}  SNR {row['val_snr_db']:.2f} dB")
        row["epoch_s"] = time.perf_counter() - te
        history.append(row)
        wall = wall_before + time.perf_counter() - t0
        save_checkpoint(ckpt_root, epoch, models, optimizers,
                        {"history": history, "wall_s": wall, "generator": gcfg.to_dict(),
                         "train": asdict(tcfg)})
        _write_log(run_dir / "train_log.csv", history)
        done_here += 1
    bar.close()
    finished = bool(history) and history[-1]["epoch"] == tcfg.epochs
    result = {"epochs_done": history[-1]["epoch"] if history else 0, "finished": finished,
              "history": history, "wall_s": wall_before + time.perf_counter() - t0}
    if finished:
        from qmtgan.train.device import training_device

        record = {"training": {"config": asdict(tcfg), "epochs_done": tcfg.epochs,
                               "wall_s": result["wall_s"], "final": history[-1],
                               "patches": int(steps), "device": training_device()},
                  "data": data_identity, "versions": _versions()}
        save_model(run_dir, generator, gcfg, patches.normalization, record)
    return result


def _versions() -> dict:
    import keras
    import tensorflow as tf

    return {"qmtgan": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}

