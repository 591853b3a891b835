"""`qmtgan run`: the device side. Imports numpy, the bundle's backend and (for GeoTIFF I/O)
rasterio; never TensorFlow."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from qmtgan.options import bundle_option, out_option, shared_option, threads_option

overviews_option = click.option("--overviews", is_flag=True,
                                help="Also build GeoTIFF overviews (2x, 4x, ... averaged) for viewers.")
compress_option = click.option("--compress", type=click.Choice(["zstd", "deflate"]), default="zstd",
                               show_default=True,
                               help="Codec of the written GeoTIFF (deflate: readable by any GDAL/libtiff).")


@click.command()
@bundle_option()
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="12-band GeoTIFF (or band-first .npy).")
@click.option("--target", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The true target, to print SNR / PSNR / LMSE of the written scene.")
@click.option("--overlap", type=click.IntRange(min=0), default=0, show_default=True,
              help="0: the encoder's patch grid (what the generator was fitted to); >0: overlapping "
                   "tiles, cross-faded over this many pixels.")
@threads_option()
@click.option(
    "--payload",
    "payload_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A hybrid .qmtg of the same generator: its coded residual is added to the bundle's prediction.",
)
@overviews_option
@compress_option
@out_option("out.tif (or .npy without rasterio)")
def run(bundle: Path, reference: Path, target: Path | None, overlap: int, threads: int | None,
        payload_path: Path | None, overviews: bool, compress: str,
        out: Path) -> None:
    """Decode a scene with a deployment bundle, streaming: the reference is read, run and
    written tile by tile, so memory does not grow with the scene. With --payload, plus the
    hybrid payload's residual."""

    from qmtgan.runtime.bundle import load_bundle
    from qmtgan.runtime.decode import hybrid_residual
    from qmtgan.runtime.raster import streaming_gdal
    from qmtgan.runtime.stream import SceneReader, compare, decode_scene

    b = load_bundle(bundle)
    residual = None
    if payload_path is not None:  # checked before the scene runs
        with SceneReader(reference) as ref:
            residual = hybrid_residual(payload_path, ref, b.manifest.generator)
    msg = decode_scene(b, reference, out, overlap, threads, overviews, compress, residual, progress=True)
    written = Path(msg["output"])
    if target is not None:
        start = time.perf_counter()
        with streaming_gdal(threads), SceneReader(target) as truth, SceneReader(written) as decoded:
            msg.update(compare(truth, decoded))
        msg["compare_s"] = round(time.perf_counter() - start, 3)
    click.echo(json.dumps(msg))


@click.command()
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The reference the payload was made against (12-band GeoTIFF, or band-first .npy).")
@click.argument("payload", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@shared_option("Needed by a payload made against one (encode --shared).")
@overviews_option
@compress_option
@out_option("target_hat.tif")
def decode(reference: Path, payload: Path, shared_path: Path | None, overviews: bool, compress: str,
           out: Path) -> None:
    """Rebuild the georeferenced target from REFERENCE and a .qmtg PAYLOAD (numpy only),
    streaming tile by tile."""
    from qmtgan.runtime.decode import decode_streaming
    from qmtgan.runtime.raster import SceneWriter, streaming_gdal
    from qmtgan.runtime.shared import SharedModel
    from qmtgan.runtime.stream import SceneReader

    shared = SharedModel.read(shared_path) if shared_path else None
    with streaming_gdal(), SceneReader(reference) as ref:
        with SceneWriter(out, ref.band_count, *ref.shape, ref.crs, ref.transform, overviews,
                         compress) as writer:
            decode_streaming(payload, ref, writer, progress=True, shared=shared)
    click.echo(f"wrote {writer.path}")


COMMANDS = [run, decode]
