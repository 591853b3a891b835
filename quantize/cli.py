"""`qmtgan quantize report | sweep` and `qmtgan encode` (decoding: `qmtgan decode`, runtime/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qmtgan.quantize.methods import METHODS
from qmtgan.quantize.policy import MODES

BITS = click.IntRange(2, 32)


@click.group()
def quantize() -> None:
    """Post-training quantization: the seed's Table 2 accounting and the full sweep."""


@quantize.command("report")
@click.option("--paper-config", is_flag=True, required=True,
              help="The paper generator and data set (441 patches of 512x512x12); trains nothing.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a Markdown table.")
def report(paper_config: bool, as_json: bool) -> None:
    """Print the accounting columns of the seed's Table 2 (Eq. 1 bpp, memory, ratio)."""
    from qmtgan.quantize.paper_table import markdown, paper_config_rows

    rows = paper_config_rows()
    click.echo(json.dumps(rows, indent=1) if as_json else markdown(rows))


@quantize.command("sweep")
@click.option("--model", "model_dirs", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              multiple=True, help="A trained run; repeat with one --pair each to average over pairs.")
@click.option("--pair", "pair_dirs", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              multiple=True)
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Report folder.")
@click.option("--methods", default=",".join(METHODS), show_default=True, help="Comma-separated.")
@click.option("--bits", "bits_list", default="2,4,6,8,16,32", show_default=True, help="Comma-separated.")
@click.option("--peer", "peers", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A trained peer generator's run folder (adds its float row); repeatable.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of stochastic rounding.")
def sweep(model_dirs: tuple[Path, ...], pair_dirs: tuple[Path, ...], out: Path, methods: str, bits_list: str,
          peers: tuple[str, ...], seed: int) -> None:
    """Methods x bit widths on trained models: Table 2, Figure 2, Figure 3 (metrics averaged over
    the (model, pair) couples, as the seed averages its three data sets)."""
    from qmtgan.quantize.methods import check_bits, get_method
    from qmtgan.quantize.sweep import best_row, run_sweep
    from qmtgan.runtime.errors import QmtganError

    names = [m.strip() for m in methods.split(",") if m.strip()]
    for m in names:
        get_method(m)
    try:
        widths = [check_bits(int(b)) for b in bits_list.split(",") if b.strip()]
    except ValueError as exc:
        raise QmtganError(f"--bits must be comma-separated integers: {exc}") from exc
    rows = run_sweep(list(model_dirs), list(pair_dirs), out, names, widths, seed, list(peers), log=click.echo)
    best = best_row(rows)
    click.echo(f"{len(rows)} configurations; smallest distance to float: {best.policy.label} "
               f"(SNR {best.snr_db:.2f} dB, {best.paper['bpp']:.4f} bpp tile); report in {out}")


def policy_options(f):
    f = click.option("--method", type=click.Choice(list(METHODS)), default="symmetric", show_default=True)(f)
    f = click.option("--mode", type=click.Choice(MODES), default="uniform", show_default=True)(f)
    f = click.option("--bits", type=BITS, default=8, show_default=True)(f)
    f = click.option("--conv-bits", type=BITS, default=8, show_default=True)(f)
    f = click.option("--nonconv-bits", type=BITS, default=6, show_default=True)(f)
    f = click.option("--critical-bits", type=BITS, default=16, show_default=True)(f)
    f = click.option("--critical", default="conv1,deconv5", show_default=True, help="LWPQ critical layers.")(f)
    return f


@click.command()
@click.option("--reference", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--target", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A trained run; without it a generator is trained first (see --epochs).")
@click.option("--epochs", type=click.IntRange(min=1), default=150, show_default=True)
@policy_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="The .qmtg payload.")
def encode(reference: Path, target: Path, model_dir: Path | None, epochs: int, method: str, mode: str,
           bits: int, conv_bits: int, nonconv_bits: int, critical_bits: int, critical: str, seed: int,
           out: Path) -> None:
    """Compress TARGET given REFERENCE into a .qmtg payload (the quantized generator)."""
    from qmtgan.quantize.encode import encode_pair
    from qmtgan.quantize.policy import Policy

    policy = Policy(method, mode, bits, conv_bits, nonconv_bits, critical_bits,
                    tuple(c for c in critical.split(",") if c))
    r = encode_pair(reference, target, out, policy, model_dir, epochs, seed)
    click.echo(f"{out}: {r['file_bytes']:,} bytes = {r['bpp_file']:.5f} bpp on disk "
               f"(Eq. 1: {r['bpp_eq1']:.5f}; header {r['header_bytes']:,} bytes), {policy.label}")


COMMANDS = [quantize, encode]
