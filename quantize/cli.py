"""`qmtgan quantize report | sweep`: the paper's Table 2 accounting and the PTQ sweep."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qmtgan.options import (list_option, methods_option, model_option, out_option, pair_option,
                            rounding_option)
from qmtgan.quantize.grids import GRID_METHODS
from qmtgan.quantize.methods import METHODS


@click.group()
def quantize() -> None:
    """Post-training quantization: the paper's Table 2 accounting and the full sweep."""


@quantize.command("report")
@click.option("--paper-config", is_flag=True, required=True,
              help="The paper generator and data set (441 patches of 512x512x12); trains nothing.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a Markdown table.")
def report(paper_config: bool, as_json: bool) -> None:
    """Print the accounting columns of the paper's Table 2 (Eq. 1 bpp, memory, ratio)."""
    from qmtgan.quantize.paper_table import markdown, paper_config_rows

    rows = paper_config_rows()
    click.echo(json.dumps(rows, indent=1) if as_json else markdown(rows))


@quantize.command("sweep")
@model_option(multiple=True, help="A trained run, with one --pair each to average over pairs.")
@pair_option(multiple=True)
@out_option("Report folder.")
@methods_option(METHODS)
@list_option("--bits", "bits_list", convert=int, default=(2, 4, 6, 8, 16, 32), help="Bit widths.")
@click.option("--peer", "peers", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A trained peer generator's run folder (adds its float row); repeatable.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of stochastic rounding.")
@rounding_option()
def sweep(
    model_dirs: tuple[Path, ...],
    pair_dirs: tuple[Path, ...],
    out: Path,
    methods: list[str],
    bits_list: list[int],
    peers: tuple[str, ...],
    seed: int,
    rounding: str,
) -> None:
    """Methods x bit widths on trained models: Table 2, Figure 2, Figure 3 (metrics averaged over
    the (model, pair) couples, as the paper averages its three data sets)."""
    from qmtgan.quantize.methods import check_bits, get_method
    from qmtgan.quantize.sweep import best_row, run_sweep

    names = methods
    for m in names:
        get_method(m)
    widths = [check_bits(b) for b in bits_list]
    rows = run_sweep(list(model_dirs), list(pair_dirs), out, names, widths, seed, list(peers), rounding)
    best = best_row(rows)
    click.echo(f"{len(rows)} configurations; smallest distance to float: {best.policy.label} "
               f"(SNR {best.snr_db:.2f} dB, {best.paper['bpp']:.4f} bpp tile); report in {out}")


@quantize.command("finetune")
@model_option()
@pair_option()
@out_option("Run folder for the fine-tuned generator (`encode --model` reads it).")
@click.option("--method", type=click.Choice(sorted(GRID_METHODS)), default="symmetric", show_default=True)
@click.option("--bits", type=click.IntRange(2, 16), default=4, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def finetune_cmd(model_dir: Path, pair_dir: Path, out: Path, method: str, bits: int, epochs: int, lr: float,
                 seed: int) -> None:
    """Quantization-aware fine-tuning: train a few epochs through fake-quantized weights
    (straight-through estimator), then write an ordinary run folder."""
    from qmtgan.quantize.finetune import finetune
    from qmtgan.quantize.policy import Policy

    r = finetune(model_dir, pair_dir, out, Policy(method, bits=bits), epochs, lr, seed)
    click.echo(f"{out}: {method} {bits}-bit SNR {r['quantized_snr_before_db']:.2f} dB after PTQ, "
               f"{r['quantized_snr_after_db']:.2f} dB after {epochs} epochs of fine-tuning")


COMMANDS = [quantize]
