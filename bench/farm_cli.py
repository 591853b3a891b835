"""`qmtgan farm`: a board farm behind a TVM RPC tracker (up, status) and the bench matrix
spread over its boards (bench)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import click

from qmtgan.options import FOLDER, key_value_option, list_option, out_option, pair_option, timing_options


@click.group()
def farm() -> None:
    """A board farm behind one TVM RPC tracker."""


@farm.command("up")
@key_value_option(
    "--slots",
    "boards",
    required=True,
    help="BOARD=COUNT: that many RPC servers of a local or emulated board (repeatable).",
)
@click.option(
    "--listen",
    "host",
    default="127.0.0.1",
    show_default=True,
    help="Address the tracker and servers listen on.",
)
@click.option("--tracker-port", "port", type=click.IntRange(1, 65535), default=9190, show_default=True)
@click.option(
    "--for",
    "seconds",
    type=click.FloatRange(min=0),
    help="Stop after this many seconds (default: on Ctrl-C or SIGTERM).",
)
def up(boards: dict[str, str], host: str, port: int, seconds: float | None) -> None:
    """Start a tracker and register the boards' servers with it, each under its board's name
    as the device key; stop them all on exit."""
    from qmtgan.bench.farm import Farm
    from qmtgan.runtime.errors import QmtganError

    slots = {}
    for name, count in boards.items():
        if not count.isdigit() or int(count) < 1:
            raise QmtganError(f"--slots {name}={count}: the count must be a positive integer")
        slots[name] = int(count)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    with Farm(slots, host, port) as f:
        click.echo(
            f"tracker {f.tracker}: " + ", ".join(f"{n} x{c}" for n, c in slots.items()) + " registered",
            err=True,
        )
        end = time.monotonic() + seconds if seconds is not None else None
        try:
            while not stop and (end is None or time.monotonic() < end):
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass


@farm.command("status")
@click.option("--tracker", required=True, help="host:port of the tracker.")
def status(tracker: str) -> None:
    """Free boards per device key."""
    from qmtgan.bench.farm import free_boards

    for key, free in sorted(free_boards(tracker).items()):
        click.echo(f"{key}: {free} free")


@farm.command("bench")
@click.option("--tracker", required=True, help="host:port of the tracker.")
@click.option("--key", required=True, help="Device key (a board name: `qmtgan farm up` registers them so).")
@click.option(
    "--bundles",
    "bundle_folders",
    multiple=True,
    type=FOLDER,
    required=True,
    help="A bundle folder, or a folder of bundles (repeatable); the TVM modules built for the "
    "key's board are benchmarked.",
)
@pair_option(help="The scene whose tiles are benchmarked.")
@list_option("--threads", convert=int, help="Thread counts (default: each board's default).")
@click.option(
    "--max-boards",
    "board_count",
    type=click.IntRange(min=1),
    help="At most this many boards (default: every free one).",
)
@timing_options("Seconds a board's session may last.")
@out_option("Report folder.", default=Path("results/farm"))
def farm_bench_cmd(
    tracker: str,
    key: str,
    bundle_folders: tuple[Path, ...],
    pair_dir: Path,
    threads: list[int],
    board_count: int | None,
    tile_count: int,
    warmup: int,
    runs: int,
    min_time: float,
    timeout: float,
    out: Path,
) -> None:
    """The matrix (TVM bundles x thread counts) spread over every free board of KEY: each
    board takes the next configuration when it is done with one; one report row per board."""
    from qmtgan.bench.cli import _bundle_dirs
    from qmtgan.bench.farm import farm_bench
    from qmtgan.bench.farm_report import write_farm_report
    from qmtgan.bench.records import Config, Timing
    from qmtgan.runtime.bundle import load_bundle
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.runtime.tileset import sample_tiles
    from qmtgan.targets.registry import board
    from qmtgan.train.pair import load_pair

    arch = board(key).arch
    bundles = [load_bundle(b) for b in _bundle_dirs(bundle_folders, [])]
    modules = [b for b in bundles if b.manifest.backend == "tvm" and b.manifest.elf_machine == arch]
    if not modules:
        raise QmtganError(f"no TVM module built for {key} ({arch}) in {', '.join(map(str, bundle_folders))}")
    tiles_sizes = {b.tile for b in modules}
    if len(tiles_sizes) > 1:
        raise QmtganError(
            f"the modules use different tile sizes {sorted(tiles_sizes)}; bench one size at a time"
        )
    pair = load_pair(pair_dir)
    tiles = sample_tiles(pair.reference.data, pair.target.data, tiles_sizes.pop(), tile_count)
    configs = [
        Config(b.path.name, str(b.path), "tvm", b.manifest.precision, key, "rpc", t)
        for b in modules
        for t in (threads or [None])
    ]
    t0 = time.perf_counter()
    records = farm_bench(tracker, key, configs, tiles, Timing(warmup, runs, min_time, timeout), board_count)
    report = write_farm_report(
        out,
        records,
        {
            "tracker": tracker,
            "key": key,
            "tile": tiles.tile,
            "tiles": len(tiles),
            "wall_s": time.perf_counter() - t0,
            "pair": str(pair_dir),
        },
    )
    click.echo(report.read_text())
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise QmtganError(f"{len(failed)} of {len(records)} configurations failed (see {report})")


COMMANDS = [farm]
