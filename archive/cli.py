"""`qmtgan encode-batch`: many pairs on a Ray cluster, catalogued as STAC."""

from __future__ import annotations

from pathlib import Path

import click

from qmtgan.options import list_option, out_option, patch_size_option
from qmtgan.quantize.methods import METHODS


@click.command("encode-batch")
@click.argument("pair_list", type=click.Path(exists=True, path_type=Path))
@out_option(
    "Archive folder: pairs/ID/ (payload, preview COG, bundles, report, STAC item), catalog.json, batch.json."
)
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--method", type=click.Choice(list(METHODS)), default="symmetric", show_default=True)
@click.option("--bits", type=click.IntRange(2, 16), default=8, show_default=True)
@click.option(
    "--ngf",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="First-layer width (the demo's generator: 4; the paper's: 20).",
)
@click.option("--depth", type=click.IntRange(min=1), default=5, show_default=True)
@patch_size_option()
@list_option("--formats", help="Deployment bundles to build for each pair (qmtgan convert's formats).")
@click.option("--tile", type=click.IntRange(min=1), default=512, show_default=True, help="Bundle tile.")
@click.option("--address", help="Join this Ray cluster (host:port, or 'auto'); default: start a local one.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Pairs at once on the local Ray instance (ignored with --address: the cluster decides).",
)
@click.option("--cpus-per-pair", type=click.FloatRange(min=0.01), default=1.0, show_default=True)
@click.option("--gpus-per-pair", type=click.FloatRange(min=0.0), default=0.0, show_default=True)
def encode_batch(
    pair_list: Path,
    out: Path,
    epochs: int,
    seed: int,
    method: str,
    bits: int,
    ngf: int,
    depth: int,
    patch_size: int,
    formats: list[str],
    tile: int,
    address: str | None,
    workers: int,
    cpus_per_pair: float,
    gpus_per_pair: float,
) -> None:
    """Encode every pair of PAIR_LIST (a CSV with id, reference, target, target_datetime
    [, reference_datetime]; a STAC ItemCollection with 'reference' and 'target' assets; or an
    OSCD-layout folder), each as a Ray task; finished pairs are skipped, failed ones recorded."""
    from qmtgan.archive.batch import run_batch
    from qmtgan.archive.job import BatchSettings
    from qmtgan.archive.pairs import read_pair_list
    from qmtgan.convert.formats import FORMATS
    from qmtgan.runtime.errors import QmtganError

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise QmtganError(f"unknown format {', '.join(unknown)} (formats: {', '.join(FORMATS)})")
    jobs = read_pair_list(pair_list)
    settings = BatchSettings(
        epochs=epochs,
        seed=seed,
        method=method,
        bits=bits,
        ngf=ngf,
        depth=depth,
        patch_size=patch_size,
        formats=tuple(formats),
        tile=tile,
    )
    s = run_batch(jobs, out, settings, workers, address, cpus_per_pair, gpus_per_pair)
    rate = f", {s['pairs_per_hour']:.1f} pairs/h" if s["pairs_per_hour"] else ""
    click.echo(
        f"{s['pairs']} pairs: {s['encoded']} encoded, {s['skipped']} already finished, {s['failed']} failed "
        f"in {s['wall_s']:.0f} s{rate}; catalogue {s['catalogue']}"
    )
    for pair_id, error in s["errors"].items():
        click.echo(f"  {pair_id}: {error}", err=True)
    if s["failed"]:
        raise SystemExit(2)


COMMANDS = [encode_batch]
