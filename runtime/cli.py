"""`qmtgan run`: the device side. Imports numpy, the bundle's backend and (for GeoTIFF I/O)
rasterio; never TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qmtgan.options import out_option

@click.command()
@click.option("--bundle", type=click.Path(exists=True, path_type=Path), required=True,
              help="A bundle folder or its .tar.gz.")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="12-band GeoTIFF (or band-first .npy).")
@click.option("--target", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The true target, to print SNR / LMSE.")
@click.option("--overlap", type=click.IntRange(min=0), default=0, show_default=True,
              help="0: the encoder's patch grid (what the generator was fitted to); >0: overlapping "
                   "tiles, cross-faded over this many pixels.")
@click.option("--threads", type=click.IntRange(min=1), help="Backend threads (default: all cores).")
@click.option("--payload", "payload_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A hybrid .qmtg of the same generator: its coded residual is added to the bundle's prediction.")
@out_option("out.tif (or .npy without rasterio)")
def run(bundle: Path, reference: Path, target: Path | None, overlap: int, threads: int | None,
        payload_path: Path | None, out: Path) -> None:
    """Decode a whole scene with a deployment bundle: tiled, overlapping, blended; with --payload,
    plus the hybrid payload's residual."""
    import numpy as np

    from qmtgan.runtime import metrics
    from qmtgan.runtime.bundle import load_bundle
    from qmtgan.runtime.infer import run_scene
    from qmtgan.runtime.raster import read_reference, write_scene
    from qmtgan.runtime.scene import Scene

    b = load_bundle(bundle)
    ref = read_reference(reference)
    residual = None
    if payload_path is not None:  # checked before the scene runs
        from qmtgan.runtime.decode import hybrid_residual

        residual = hybrid_residual(payload_path, ref, b.manifest["generator"])
    pred, lat = run_scene(b.backend(threads), ref.data, b.normalization, b.tile, overlap, progress=True)
    valid = ref.valid
    pred[:, ~valid] = 0
    if residual is not None:
        from qmtgan.runtime.residual import add_residual

        pred = add_residual(pred, residual, valid)
    written = write_scene(out, Scene(pred, ref.crs, ref.transform), valid=valid)
    msg = {"bundle": b.manifest["name"], "tiles": len(lat), "mean_tile_ms": 1000 * float(np.mean(lat)), "output": str(written)}
    if target is not None:
        tgt = read_reference(target)
        v = valid & tgt.valid
        msg.update(snr_db=metrics.snr_db(tgt.data, pred, v), lmse=metrics.lmse(tgt.data, pred, v))
    click.echo(json.dumps(msg))


@click.command()
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The reference the payload was made against (12-band GeoTIFF, or band-first .npy).")
@click.argument("payload", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@out_option("target_hat.tif")
def decode(reference: Path, payload: Path, out: Path) -> None:
    """Rebuild the georeferenced target from REFERENCE and a .qmtg PAYLOAD (numpy only)."""
    from qmtgan.runtime.decode import decode_payload
    from qmtgan.runtime.raster import read_reference, write_scene
    from qmtgan.runtime.scene import Scene

    ref = read_reference(reference)
    pred = decode_payload(payload, ref, progress=True)
    written = write_scene(out, Scene(pred, ref.crs, ref.transform), valid=ref.valid)
    click.echo(f"wrote {written}")


COMMANDS = [run, decode]
