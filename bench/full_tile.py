"""Benchmark (not a test): decode a full-size Sentinel-2 tile (10980 x 10980 px x 12 bands)
with a bundle on this host, streaming, and record wall time, decode rate, peak RSS and the SNR
of the written GeoTIFF. The scene is the demo pair tiled with mirroring (`qmtgan prepare
--mosaic`), made once into a cache folder.

    qmtgan bench full-tile --bundle B --pair P [--size 10980] [--cache C] -o results/bench
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from qmtgan.bench.machine import describe_host
from qmtgan.runtime.atomic import write_text_atomic

CHILD = """
import resource, sys
from qmtgan.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    if exc.code:
        raise
print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def mosaic(pair: Path, size: int, cache: Path) -> Path:
    scene = cache / f"mosaic-{size}"
    if not (scene / "target.tif").exists():
        subprocess.run([sys.executable, "-m", "qmtgan", "prepare", "--mosaic", str(size), "--pair", str(pair),
                        "-o", str(scene)], check=True)
    return scene


def decode(bundle: Path, scene: Path, out: Path, threads: int | None) -> dict:
    """One streamed decode in a fresh process: its JSON line, wall seconds and peak RSS."""
    args = ["run", "--bundle", str(bundle), "--reference", str(scene / "reference.tif"),
            "--target", str(scene / "target.tif"), "-o", str(out)]
    if threads:
        args += ["--threads", str(threads)]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        from qmtgan.runtime.errors import QmtganError

        raise QmtganError(f"decode failed:\n{proc.stderr[-4000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    record["maxrss_mib"] = int(proc.stderr.strip().splitlines()[-1].split()[-1]) / 1024
    record["wall_s"] = wall
    return record


def run(bundle: Path, pair: Path, size: int, threads: int | None, cache: Path, out: Path) -> dict:
    """Decode the mosaic once with `bundle`; write full_tile.{json,md} into `out`."""
    scene = mosaic(pair, size, cache)
    decoded = cache / f"decoded-{size}.tif"
    try:
        record = decode(bundle, scene, decoded, threads)
        record["output_mb"] = decoded.stat().st_size / 2**20
    finally:
        decoded.unlink(missing_ok=True)
    pixels = size * size
    record.update(size=size, host=describe_host(), float32_scene_mib=pixels * 12 * 4 / 2**20)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "full_tile.json", json.dumps(record, indent=1))
    write_text_atomic(out / "full_tile.md", (
        f"# Full-tile decode ({size} x {size} px x 12 bands, streamed)\n\n"
        f"{record['host']['cpu']}, {record['host']['cpus']} CPUs. Decode: read, run, write (the MPix/s); "
        f"the SNR pass reads both scenes again afterwards.\n\n"
        f"| bundle | tiles | decode (s) | MPix/s | ms / tile | SNR pass (s) | peak RSS (MiB) | "
        f"one float32 copy (MiB) | SNR (dB) |\n"
        f"|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {record['bundle']} | {record['tiles']} | {record['decode_s']:.1f} | {record['mpix_per_s']:.2f} | "
        f"{record['mean_tile_ms']:.1f} | {record['compare_s']:.1f} | {record['maxrss_mib']:.0f} | "
        f"{record['float32_scene_mib']:.0f} | {record['snr_db']:.2f} |\n"))
    return record
