"""`qmtgan bench`: the benchmark harness and its single-purpose benchmarks."""

from __future__ import annotations

from pathlib import Path

import click

from qmtgan.bench.farm_cli import COMMANDS as FARM_COMMANDS
from qmtgan.bench.tool_commands import TOOLS
from qmtgan.options import (FOLDER, aliased, deprecated_alias, key_value_option, list_option, model_option,
                            out_option, pair_option, timing_options)


def _bundle_dirs(folders: tuple[Path, ...], only: list[str]) -> list[Path]:
    found = []
    for folder in folders:
        if (folder / "manifest.json").is_file():  # a bundle named directly is always kept
            found.append(folder)
            continue
        found += [p for p in sorted(folder.iterdir()) if p.is_dir() and (p / "manifest.json").is_file()
                  and (not only or p.name in only)]
    return found


@click.group(invoke_without_command=True)
@click.option("--bundles", "bundle_folders", multiple=True, type=FOLDER,
              help="A bundle folder, or a folder of bundles (repeatable).")
@list_option("--only", help="Bundle names to keep from folders of bundles (e.g. onnx,tflite-int8).")
@model_option(required=False, help="The trained run: the Keras float baseline of every benchmark.")
@pair_option(required=False, help="The scene whose tiles are benchmarked.")
@list_option("--boards", "board_names", default=("host-x86_64",),
             help="Boards of `qmtgan targets list` to run on (host, emulated, or over ssh with --host).")
@deprecated_alias("--targets", "board_names", "--boards")
@key_value_option("--host", "hosts", help="BOARD=user@addr: reach that board over ssh (repeatable).")
@click.option("--port", type=int, help="ssh port.")
@click.option("--identity", type=click.Path(exists=True, dir_okay=False), help="ssh private key.")
@click.option("--ssh-option", "ssh_options", multiple=True, help="Extra `ssh -o` options (repeatable).")
@click.option("--python", help="The boards' python (default: each board's reach.python).")
@click.option("--workdir", help="Folder on ssh boards (default: each board's reach.workdir).")
@list_option("--threads", convert=int, help="Thread counts (default: each board's default).")
@click.option("--rpc", "rpc_server", help="host:port of a TVM RPC server (python -m tvm.exec.rpc_server).")
@click.option("--rpc-tracker", help="host:port of a TVM RPC tracker.")
@click.option("--rpc-key", help="Device key to request from the tracker.")
@click.option(
    "--rpc-board", default="host-x86_64", show_default=True, help="The board behind the RPC server."
)
@deprecated_alias("--rpc-target", "rpc_board", "--rpc-board")
@timing_options()
@click.option(
    "--native",
    is_flag=True,
    help="Also run every TVM module with the C++ runner qmtg-run (built with CMake).",
)
@click.option("--keep-outputs", is_flag=True, help="Save every configuration's predicted tiles (.npy).")
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run the whole matrix this many times (a soak); the report compares each pass with the first.",
)
@out_option("Report folder.", default=Path("results/bench"))
@click.pass_context
def bench(
    ctx,
    bundle_folders,
    only,
    model_dir,
    pair_dir,
    board_names,
    hosts,
    port,
    identity,
    ssh_options,
    python,
    workdir,
    threads,
    rpc_server,
    rpc_tracker,
    rpc_key,
    rpc_board,
    tile_count,
    warmup,
    runs,
    min_time,
    timeout,
    native,
    keep_outputs,
    repeat,
    out,
) -> None:
    """Latency, memory and SNR of bundles x boards x threads (and TVM RPC), each configuration
    in a fresh process, against the Keras float baseline measured in the same run; or, named
    after the options, one of the single-purpose benchmarks below."""
    if ctx.invoked_subcommand:
        return
    from qmtgan.bench.harness import Plan, run_bench
    from qmtgan.bench.records import Timing
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.targets.devices import ssh_destination
    from qmtgan.targets.registry import board

    if not (bundle_folders and model_dir and pair_dir):
        raise QmtganError("qmtgan bench needs --bundles, --model and --pair (see --help)")
    rpc_board = aliased(ctx, "rpc_board", rpc_board)
    targets = board_names
    for name in targets:
        board(name)  # unknown board: one clear error before anything runs
    host_map = {board(name).name: ssh_destination(addr) for name, addr in hosts.items()}
    bundles = _bundle_dirs(bundle_folders, only)
    if not bundles:
        raise QmtganError(f"no bundle (a folder with manifest.json) in {', '.join(map(str, bundle_folders))}")
    threads = threads or [None]
    rpc = {}
    if rpc_server or rpc_tracker:
        rpc = {"server": rpc_server, "tracker": rpc_tracker, "key": rpc_key, "target": board(rpc_board).name}
    plan = Plan(
        bundles,
        targets,
        threads,
        host_map,
        {"port": port, "identity": identity, "options": ssh_options, "python": python, "workdir": workdir},
        rpc,
        threads,
        native,
    )
    records = run_bench(plan, model_dir, pair_dir, tile_count, Timing(warmup, runs, min_time, timeout), out,
                        keep_outputs, repeat)
    click.echo((out / "bench.md").read_text())
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise QmtganError(f"{len(failed)} of {len(records)} configurations failed (see {out / 'bench.md'})")


for tool in TOOLS:
    bench.add_command(tool)
COMMANDS = [bench, *FARM_COMMANDS]
