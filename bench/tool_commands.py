"""`qmtgan bench <tool>`: the single-purpose benchmarks (not tests), beside the harness.

    train-step  seconds and peak RSS of a GAN training step and a forward pass
    full-tile   a streamed decode of a full 10980 x 10980 Sentinel-2 tile
    width       the share of the CPU's peak each float runtime reaches as the generator widens
    soak        one bundle decoding one scene N times in one process (leaks, drift)
    demo-stages the demo's own stage times, and the CPU it ran on
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from qmtgan.options import (bundle_option, list_option, out_option, pair_option, patch_size_option,
                            threads_option)


@click.command("train-step")
@patch_size_option()
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@out_option("Also write the records here (JSON).", required=False)
def train_step(patch_size: int, steps: int, warmup: int, out: Path | None) -> None:
    """Seconds per GAN training step and per generator forward pass of the paper generator, the
    demo generator's training step in steps/s and percent of peak, and the peak RSS of each,
    every measurement in a fresh process."""
    from qmtgan.bench.train_step import run

    run(patch_size, steps, warmup, out)


@click.command("full-tile")
@bundle_option()
@pair_option(help="The pair whose scene is tiled, with mirroring, up to --size.")
@click.option("--size", type=click.IntRange(min=1), default=10980, show_default=True, help="Side in px.")
@threads_option()
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=Path("results/cache"),
              show_default=True, help="Where the mosaic is made once and kept.")
@out_option("Report folder.")
def full_tile(bundle: Path, pair_dir: Path, size: int, threads: int | None, cache: Path, out: Path) -> None:
    """Decode a full-size Sentinel-2 tile with a bundle, streaming: wall time, decode rate, peak
    RSS and the SNR of the written GeoTIFF."""
    from qmtgan.bench.full_tile import run

    click.echo(json.dumps(run(bundle, pair_dir, size, threads, cache, out)))


@click.command("width")
@pair_option(help="The scene whose tiles are timed.")
@list_option("--generators", default=("demo", "ngf8", "paper"), help="Generators by width.")
@list_option("--runtimes", default=("tflite", "onnxruntime", "tvm"), help="Float runtimes.")
@list_option("--threads", convert=int, default=(1, 2), help="Thread counts.")
@patch_size_option("The tile side.")
@click.option("--tiles", "tile_count", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--min-time", type=click.FloatRange(min=0), default=2.0, show_default=True, help="Seconds.")
@out_option("Report folder.")
def width(pair_dir: Path, generators: list[str], runtimes: list[str], threads: list[int], patch_size: int,
          tile_count: int, runs: int, min_time: float, out: Path) -> None:
    """The fraction of the CPU's peak each float runtime reaches as the generator gets wider."""
    from qmtgan.bench.width import markdown, run

    click.echo(markdown(run(pair_dir, generators, runtimes, threads, patch_size, tile_count, runs, min_time,
                            out)))


@click.command("soak")
@bundle_option()
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="12-band GeoTIFF decoded on every pass.")
@click.option("--passes", type=click.IntRange(min=1), default=50, show_default=True)
@out_option("Report folder.")
def soak(bundle: Path, reference: Path, passes: int, out: Path) -> None:
    """Decode one scene N times in one process with one bundle: each pass's time and RSS."""
    from qmtgan.bench.soak import run

    click.echo(json.dumps(run(bundle, reference, passes, out)))


@click.command("demo-stages")
@click.option("--report", "report_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path("runs/demo/report.json"), show_default=True, help="A demo's report.json.")
@out_option("Report folder.")
def demo_stages(report_path: Path, out: Path) -> None:
    """The demo's stage times (as `qmtgan demo` measured them) and the CPU it ran on."""
    from qmtgan.bench.demo_stages import run

    click.echo(run(report_path, out))


TOOLS = (train_step, full_tile, width, soak, demo_stages)
