"""`qmtgan convert`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.core import ParameterSource

from qmtgan.options import list_option, model_option, out_option, pair_option
from qmtgan.runtime.tiling import PATCH_SIZE

from qmtgan.convert.formats import FORMATS, REGISTRY, refuse_inapplicable
from qmtgan.convert.report import artifact_table

# The options only some formats use (each format in convert/formats.py lists its own).
OPTION_NAMES = sorted(set().union(*(f.options for f in REGISTRY.values())))


def selected_formats(selection: tuple[str, ...], formats: list[str]) -> list[str]:
    """Positional groups (tflite, onnx, tvm) or format names, and/or --formats; default: all."""
    from qmtgan.runtime.errors import QmtganError

    names = list(formats)
    for item in selection:
        group = [f for f in FORMATS if f == item or REGISTRY[f].family == item]
        if not group:
            raise QmtganError(
                f"unknown format or group '{item}' (groups: tflite, onnx, tvm; formats: {', '.join(FORMATS)})"
            )
        names += [f for f in group if f not in names]
    unknown = [f for f in names if f not in FORMATS]
    if unknown:
        raise QmtganError(f"unknown format(s) {unknown} (choose from {', '.join(FORMATS)})")
    return names or list(FORMATS)


@click.command()
@click.argument("selection", nargs=-1)
@model_option()
@pair_option(help="Scene used for calibration and for the SNRs stored in every manifest.")
@click.option("--payload", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Deploy the .qmtg payload's dequantized weights instead of the float ones.")
@list_option("--formats", help=f"Added to SELECTION (default, with neither: all of {', '.join(FORMATS)}).")
@click.option("--tile", type=click.IntRange(min=1), default=PATCH_SIZE, show_default=True)
@click.option("--int8-threshold", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="dB of SNR full int8 may lose against float before the worst layers stay float "
                   "(then, if that still loses more, 16x8).")
@click.option(
    "--explain-int8",
    is_flag=True,
    help="Write the int8 model's per-op error table (int8_layers.csv/.md/.png, TFLite's quantization "
    "debugger) beside the tflite-int8 bundle, in tflite-int8.reports/; the manifest names the worst ops.",
)
@click.option("--calibration-tiles", type=click.IntRange(min=1), default=32, show_default=True,
              help="Tiles of the scene's grid that calibrate the int8 formats (all of them if fewer).")
@out_option("Folder for the bundles.")
@click.option(
    "--tune",
    is_flag=True,
    help="MetaSchedule-tune the tvm-* modules (minutes to hours), reusing the board's tuning database. "
    "aarch64 boards need --rpc-tracker/--rpc-key, else their records are only applied.",
)
@click.option("--trials", type=click.IntRange(min=0), default=2000, show_default=True,
              help="The database's total trial budget with --tune: a later run with more spends only the "
                   "difference, seeded by the records (0: only apply the database).")
@click.option("--tuning-db", type=click.Path(file_okay=False, path_type=Path),
              help="Tuning database folder, one subfolder per board [default: $QMTGAN_CACHE/tvm-tuning, "
                   "else ~/.cache/qmtgan/tvm-tuning].")
@click.option(
    "--rpc-tracker",
    metavar="HOST:PORT",
    help="TVM RPC tracker the board's rpc_server registered with (--tune).",
)
@click.option("--rpc-key", help="The board's key at --rpc-tracker.")
def convert(
    selection: tuple[str, ...],
    model_dir: Path,
    pair_dir: Path,
    payload: Path | None,
    formats: list[str],
    tile: int,
    int8_threshold: float,
    out: Path,
    explain_int8: bool = False,
    calibration_tiles: int = 32,
    tune: bool = False,
    trials: int = 2000,
    tuning_db: Path | None = None,
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
) -> None:
    """Export deployment bundles, each measured: TFLite (fp32/fp16/dynamic/int8/16x8), ONNX (fp32,
    int8) and TVM modules for the boards. SELECTION: groups (tflite, onnx, tvm) or format names, e.g.
    `qmtgan convert tvm ...`."""
    from qmtgan.convert.build import build_bundles
    from qmtgan.runtime.atomic import write_text_atomic

    names = selected_formats(selection, formats)
    source = click.get_current_context().get_parameter_source
    refuse_inapplicable([o for o in OPTION_NAMES if source(o) is not ParameterSource.DEFAULT], names)
    tuning = None
    if tune:
        from qmtgan.convert.tvm_tune import TuningOptions

        tuning = TuningOptions(trials, **({"database_root": tuning_db} if tuning_db else {}),
                               rpc_tracker=rpc_tracker, rpc_key=rpc_key)
    records = build_bundles(model_dir, pair_dir, out, names, tile, payload, int8_threshold,
                            tuning=tuning, explain_int8=explain_int8, calibration_tiles=calibration_tiles)
    table = artifact_table(records)
    write_text_atomic(out / "artifacts.md", table + "\n")
    write_text_atomic(out / "artifacts.json", json.dumps(records, indent=1))
    click.echo(table)


COMMANDS = [convert]
