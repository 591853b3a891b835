"""`qmtgan encode`, `qmtgan baselines` and `qmtgan shared train | export`: rate-distortion, the
stage that puts a payload and a residual within a bit budget (decoding: `qmtgan decode`,
runtime/cli.py)."""

from __future__ import annotations

from pathlib import Path

import click

from qmtgan.options import (list_option, methods_option, model_option, out_option, pair_option,
                            patch_size_option, rounding_option, shared_option)
from qmtgan.quantize.methods import METHODS
from qmtgan.quantize.policy import MODES
from qmtgan.train.shared import SHARED_EPOCHS

BITS = click.IntRange(2, 32)


def policy_options(f):
    f = click.option("--method", type=click.Choice(list(METHODS)), default="symmetric", show_default=True)(f)
    f = click.option("--mode", type=click.Choice(MODES), default="uniform", show_default=True)(f)
    f = click.option("--bits", type=BITS, default=8, show_default=True)(f)
    f = click.option("--conv-bits", type=BITS, default=8, show_default=True)(f)
    f = click.option("--nonconv-bits", type=BITS, default=6, show_default=True)(f)
    f = click.option("--critical-bits", type=BITS, default=16, show_default=True)(f)
    f = click.option("--critical", default="conv1,deconv5", show_default=True, help="LWPQ critical layers.")(
        f
    )
    return f


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(f"{text} is not positive")
    return value


@click.command()
@click.option("--reference", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--target", type=click.Path(exists=True, path_type=Path), required=True)
@model_option(multiple=True, required=False,
              help="A trained run (--bpp chooses among several); without it a generator is trained first.")
@click.option("--epochs", type=click.IntRange(min=1), default=150, show_default=True)
@policy_options
@click.option(
    "--bpp",
    "budget",
    type=click.FloatRange(min=0, min_open=True),
    help="Rate control: the run and bit widths with the best measured SNR whose generator payload fits "
    "this many bits per sample (H x W x bands) on disk, among the uniform widths of --method and a "
    "per-layer allocation from measured sensitivities (printed); a hybrid residual comes on top.",
)
@click.option(
    "--residual-bpp",
    type=click.FloatRange(min=0, min_open=True),
    help="Hybrid: add the JPEG2000-coded residual of the prediction at this rate (bits per sample).",
)
@click.option(
    "--snr-floor", type=float, help="Hybrid: the smallest residual that brings the SNR to this many dB."
)
@click.option(
    "--max-loss",
    type=click.FloatRange(min=0),
    help="Per-layer allocation: the narrowest widths of --method whose measured single-layer SNR drops "
    "add up to at most this many dB (printed layer by layer); needs one --model.",
)
@rounding_option()
@shared_option("The payload then holds no weights: the pair's linear base, a per-block gate and, with "
               "--bpp, the coded residual, the whole payload within --bpp.")
@click.option("--seed", type=int, default=0, show_default=True)
@out_option("The .qmtg payload.")
def encode(
    reference: Path,
    target: Path,
    model_dirs: tuple[Path, ...],
    epochs: int,
    method: str,
    mode: str,
    bits: int,
    conv_bits: int,
    nonconv_bits: int,
    critical_bits: int,
    critical: str,
    budget: float | None,
    residual_bpp: float | None,
    snr_floor: float | None,
    max_loss: float | None,
    rounding: str,
    shared_path: Path | None,
    seed: int,
    out: Path,
) -> None:
    """Compress TARGET given REFERENCE into a .qmtg payload: the quantized generator, and with
    --residual-bpp / --snr-floor the coded residual of its prediction too (hybrid). With
    --shared, against a shared generator instead (no weights in the payload)."""
    from qmtgan.rd.encode import encode_allocated, encode_pair, encode_rate_controlled, encode_shared
    from qmtgan.quantize.policy import Policy
    from qmtgan.runtime.errors import QmtganError

    chooses = (budget, residual_bpp, snr_floor, shared_path)
    if rounding != "nearest" and any(x is not None for x in chooses):
        raise QmtganError(f"--rounding {rounding} applies to one --model at one --method and --bits or "
                          "--max-loss: not with --bpp, --residual-bpp, --snr-floor or --shared")
    if shared_path is not None:
        if model_dirs or residual_bpp is not None or snr_floor is not None or max_loss is not None:
            raise QmtganError("--shared encodes against the shared generator: --model, --residual-bpp, "
                              "--snr-floor and --max-loss do not apply (--bpp bounds the whole payload)")
        r = encode_shared(reference, target, out, shared_path, budget)
        click.echo(f"{out}: {r['file_bytes']:,} bytes = {r['bpp_file']:.5f} bpp on disk, {r['label']}: "
                   f"SNR {r['snr_db']:.2f} dB")
        return
    if residual_bpp is not None and snr_floor is not None:
        raise QmtganError("give --residual-bpp or --snr-floor, not both")
    if max_loss is not None:
        if len(model_dirs) != 1 or budget is not None or residual_bpp is not None or snr_floor is not None:
            raise QmtganError("--max-loss allocates the widths of one --model: --bpp, --residual-bpp and "
                              "--snr-floor do not apply")
        r = encode_allocated(reference, target, out, model_dirs[0], method, max_loss, seed, rounding)
        click.echo(f"{out}: {r['file_bytes']:,} bytes = {r['bpp_file']:.5f} bpp on disk, {r['label']}: "
                   f"SNR {r['snr_db']:.2f} dB")
        _echo_fitted(r)
        return
    if budget is not None or residual_bpp is not None or snr_floor is not None:
        if not model_dirs:
            raise QmtganError("--bpp, --residual-bpp and --snr-floor choose among trained runs: give --model")
        r = encode_rate_controlled(
            reference,
            target,
            out,
            list(model_dirs),
            budget,
            bits if budget is None else None,
            residual_bpp,
            snr_floor,
            seed,
            method,
        )
        click.echo(f"{out}: {r['file_bytes']:,} bytes = {r['bpp_file']:.5f} bpp on disk, {r['label']}: "
                   f"SNR {r['snr_db']:.2f} dB")
        return
    if len(model_dirs) > 1:
        raise QmtganError("several --model runs need --bpp to choose among them")
    policy = Policy(method, mode, bits, conv_bits, nonconv_bits, critical_bits,
                    tuple(c for c in critical.split(",") if c))
    run = model_dirs[0] if model_dirs else None
    r = encode_pair(reference, target, out, policy, run, epochs, seed, rounding)
    click.echo(f"{out}: {r['file_bytes']:,} bytes = {r['bpp_file']:.5f} bpp on disk "
               f"(Eq. 1: {r['bpp_eq1']:.5f}; header {r['header_bytes']:,} bytes), {policy.label}")
    _echo_fitted(r)


def _echo_fitted(r: dict) -> None:
    if "rounding" in r:
        click.echo(f"rounding: SNR {r['rounding']['nearest_snr_db']:.2f} dB nearest, "
                   f"{r['rounding']['fitted_snr_db']:.2f} dB fitted to the scene "
                   "(the better is in the payload)")


@click.command()
@pair_option(multiple=True, help="A pair folder, reported per pair and averaged.")
@model_option(
    multiple=True, required=False, help="A trained run; each is scored on the pair it was trained on."
)
@list_option("--rates", convert=positive_float, default=(0.02, 0.05, 0.11, 0.15),
             help="Bits per sample of the JPEG2000 and hybrid points.")
@list_option(
    "--bits", "bits_list", convert=int, default=(4, 8, 32), help="Generator bit widths (32 = float32)."
)
@methods_option(("symmetric",), "Quantization methods of the generator payloads.")
@out_option("Report folder.")
def baselines(
    pair_dirs: tuple[Path, ...],
    model_dirs: tuple[Path, ...],
    rates: list[float],
    bits_list: list[int],
    methods: list[str],
    out: Path,
) -> None:
    """Rate-distortion against what a user would fly instead: the reference, gain + offset, linear
    predictors (1x1 and 3x3), JPEG2000 of the target, and each predictor + JPEG2000 of its residual; with
    --model the generators (quantized and hybrid) on the same axes. Writes rd.md, rd.json, rd.png."""
    from qmtgan.quantize.methods import check_bits, get_method
    from qmtgan.rd.workflow import rd_report

    widths = tuple(check_bits(b) for b in bits_list)
    for m in methods:
        get_method(m)
    doc = rd_report(list(pair_dirs), list(model_dirs), rates, widths, out, methods=tuple(methods))
    click.echo(f"{len(doc['points'])} points on {len(doc['pairs'])} pair(s); report in {out / 'rd.md'}")
    for line in doc["context"].get("verdict", []):
        click.echo(line)


@click.group()
def shared() -> None:
    """A generator shared across pairs: trained once on other pairs, held by both ends, so that a
    pair's payload carries no weights (encode --shared, decode --shared)."""


@shared.command("train")
@pair_option(multiple=True, help="A pair folder to train on.")
@click.option("--ngf", type=click.IntRange(min=1), help="First-layer width (default: the paper's).")
@click.option("--depth", type=click.IntRange(min=1), help="Down/up layers (default: the paper's).")
@patch_size_option("Training patch side (a multiple of 2^depth); decoding runs on tiles of this size.")
@click.option("--epochs", type=click.IntRange(min=1), default=SHARED_EPOCHS, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@out_option("Run folder.")
def shared_train(pair_dirs: tuple[Path, ...], ngf: int | None, depth: int | None, patch_size: int,
                 epochs: int, seed: int, out: Path) -> None:
    """Train one generator on every --pair: it refines each pair's own linear prediction."""
    from qmtgan.train.pair import load_pair
    from qmtgan.train.shared import shared_config, shared_train_config, train_shared

    pairs = {}
    for d in pair_dirs:
        pair = load_pair(d)
        pairs[Path(d).name] = (pair.reference, pair.target)
    gcfg = shared_config(ngf=ngf, depth=depth, patch_size=patch_size)
    record = train_shared(pairs, out, gcfg, shared_train_config(epochs, seed))
    click.echo(f"trained on {len(pairs)} pair(s), {record['training']['patches']} patches, "
               f"{record['training']['wall_s']:.0f} s; run in {out} (next: qmtgan shared export)")


@shared.command("export")
@model_option(help="A run of `qmtgan shared train`.")
@out_option("The shared generator's .qmtg.")
def shared_export(model_dir: Path, out: Path) -> None:
    """Write the float .qmtg of a shared generator: the file both ends hold."""
    from qmtgan.rd.shared_codec import export_shared

    r = export_shared(model_dir, out)
    click.echo(f"{out}: {r['bytes']:,} bytes, trained on {', '.join(r['trained_on'])}")


COMMANDS = [encode, baselines, shared]
