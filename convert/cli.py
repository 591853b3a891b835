"""`qmtgan convert`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qmtgan.convert.build import FORMATS


def artifact_table(records: list[dict]) -> str:
    lines = ["| artifact | backend | precision | target | size (KB) | SNR vs float (dB) | SNR vs target (dB) | ms / tile |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in records:
        size = f"{r['size_bytes'] / 1024:.0f}" if r.get("size_bytes") else "-"
        if r["mean_tile_s"] != r["mean_tile_s"]:  # NaN: built for another architecture
            measured = "not run here | (aarch64 module) | -"
        else:
            measured = f"{r['snr_vs_float_db']:.2f} | {r['snr_vs_target_db']:.2f} | {r['mean_tile_s'] * 1000:.1f}"
        lines.append(f"| {r['name']} | {r['backend']} | {r.get('precision', 'fp32')} | "
                     f"{r.get('target', 'host-x86_64')} | {size} | {measured} |")
    return "\n".join(lines)


@click.command()
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--pair", "pair_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Scene used for calibration and for the SNRs stored in every manifest.")
@click.option("--payload", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Deploy the .qmtg payload's dequantized weights instead of the float ones.")
@click.option("--formats", default=",".join(FORMATS), show_default=True, help="Comma-separated.")
@click.option("--tile", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--int8-threshold", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="dB of SNR full int8 may lose against float before falling back to 16x8.")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Folder for the bundles.")
def convert(model_dir: Path, pair_dir: Path, payload: Path | None, formats: str, tile: int,
            int8_threshold: float, out: Path) -> None:
    """Export TFLite (fp32/fp16/dynamic/int8/16x8) and ONNX deployment bundles, each measured."""
    from qmtgan.convert.build import build_bundles
    from qmtgan.runtime.atomic import write_text_atomic
    from qmtgan.runtime.errors import QmtganError

    names = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown:
        raise QmtganError(f"unknown format(s) {unknown} (choose from {', '.join(FORMATS)})")
    records = build_bundles(model_dir, pair_dir, out, names, tile, payload, int8_threshold, log=click.echo)
    table = artifact_table(records)
    write_text_atomic(out / "artifacts.md", table + "\n")
    write_text_atomic(out / "artifacts.json", json.dumps(records, indent=1))
    click.echo(table)


COMMANDS = [convert]
