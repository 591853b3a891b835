"""`qmtgan demo` (the main job on the sample scene) and `qmtgan real` (the codec against the
classical methods on real pairs)."""

from __future__ import annotations

from pathlib import Path

import click

from qmtgan.demo.config import DEMO_EPOCHS
from qmtgan.options import list_option, methods_option, out_option
from qmtgan.train.shared import SHARED_EPOCHS


@click.command()
@out_option("Folder for the demo's runs and report.", default=Path("runs/demo"))
@click.option("--epochs", type=click.IntRange(min=1), default=DEMO_EPOCHS, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out: Path, epochs: int, seed: int) -> None:
    """The main job on the real Sentinel-2 sample; writes OUT/report.md."""
    from qmtgan.demo.pipeline import run_demo
    from qmtgan.convert.report import artifact_table

    r = run_demo(out, epochs, seed)
    m = r["reconstruction"]
    q = r["quantization"]
    click.echo(f"\nSNR {m['snr_db']:.2f} dB (reference-as-target baseline "
               f"{r['baseline_reference_as_target_snr_db']:.2f} dB), LMSE {m['lmse']:.4f}, "
               f"wall time {r['timings']['total_s']:.0f} s")
    for label in ("symmetric 8", "symmetric 6"):
        click.echo(f"{label}: SNR {q[label]['snr_db']:.2f} dB, LMSE {q[label]['lmse']:.4f}, "
                   f"{q[label]['bpp_tile']:.4f} bpp (tile) vs float {q['float32']['bpp_tile']:.4f}")
    click.echo("\n" + artifact_table(r["artifacts"]))
    click.echo(f"report: {out / 'report.md'}  (JSON: {out / 'report.json'}, previews: {out / 'preview'})")


@click.command()
@click.option("--pairs", "root", type=click.Path(path_type=Path), default=Path("../shared/data/oscd"),
              show_default=True, help="Folder of real pairs: CITY/imgs_1 (reference), CITY/imgs_2 (target).")
@list_option("--cities", help="Only these places (default: every pair found).")
@click.option("--epochs", type=click.IntRange(min=1), default=DEMO_EPOCHS, show_default=True)
@list_option("--rates", convert=float, default=(0.05, 0.11, 0.15, 0.45), help="Total bits per sample.")
@list_option("--bits", convert=int, default=(4, 8), help="Generator bit widths.")
@methods_option(("symmetric", "kmeans", "pwl"), "Generator payload methods, each at every --bits.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--int8/--no-int8", default=True, show_default=True,
              help="Also build each pair's int8 bundles and measure their loss against float.")
@click.option("--shared-epochs", type=click.IntRange(min=0), default=SHARED_EPOCHS, show_default=True,
              help="Epochs of each leave-one-city-out shared generator (0: no shared stage; it needs "
                   "2 pairs).")
@click.option("--shared-ngf", type=click.IntRange(min=1), default=8, show_default=True,
              help="First-layer width of each shared generator (the paper's is 20).")
@out_option("Report folder.", default=Path("results/real"))
def real(root: Path, cities: list[str], epochs: int, rates: list[float], bits: list[int], methods: list[str],
         seed: int, int8: bool, shared_epochs: int, shared_ngf: int, out: Path) -> None:
    """The codec against the classical methods on real Sentinel-2 pairs: per pair and mean, at
    each scene's size and projected to the paper's, PTQ of each pair's generator, and a shared
    generator on the city it never saw; writes OUT/real.md (+ JSON, PNG, rd/, sweep/)."""
    from qmtgan.demo.real_pairs import run_real
    from qmtgan.quantize.methods import get_method

    for m in methods:
        get_method(m)
    run_real(root, out, epochs, tuple(rates), tuple(bits), cities or None, seed, int8, shared_epochs,
             shared_ngf, tuple(methods))
    click.echo((out / "real.md").read_text())


COMMANDS = [demo, real]
