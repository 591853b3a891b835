"""`qmtgan targets list | show NAME | emulate | build-runner`, and `qmtgan flash`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from qmtgan.options import aliased, board_option, deprecated_alias, out_option


@click.group()
def targets() -> None:
    """The board registry (targets/boards/*.toml)."""


@targets.command("list")
def list_boards() -> None:
    """One line per board."""
    from qmtgan.targets.registry import boards

    for b in boards().values():
        click.echo(f"{b.name:18s} {b.arch:8s} {b.tvm_target.get('mcpu', ''):14s} {b.description}")


@targets.command("show")
@click.argument("name")
def show(name: str) -> None:
    """A board's record as JSON (TVM target, cross compiler, apt package)."""
    from qmtgan.targets.registry import board

    click.echo(json.dumps(asdict(board(name)), indent=2))


@targets.command(
    "emulate", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def emulate(name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND on an emulated board (qemu user mode over a cached Debian arm64 sysroot,
    built on first use): `python3` is the board's Python with its aarch64 libraries, any
    other command the host path of an aarch64 program. Exits with the command's exit code.

    Example: qmtgan targets emulate qemu-aarch64 -- python3 -c "import platform; print(platform.machine())"
    """
    import subprocess

    from qmtgan.targets.emulate import emulated_argv
    from qmtgan.targets.registry import board

    argv = list(command[1:] if command[:1] == ("--",) else command)  # `--` ends qmtgan's own options
    code = subprocess.run(emulated_argv(board(name), argv)).returncode
    raise SystemExit(code if code >= 0 else 128 - code)  # killed by a signal: as a shell reports it


@targets.command("build-runner")
@board_option()
@out_option("CMake build folder; self-contained (qmtg-run + lib/), copy it to the board.", required=False)
@deprecated_alias("--output", "out", "-o/--out")
@click.pass_context
def build_runner_cmd(ctx: click.Context, board: str, out: Path | None) -> None:
    """Build the C++ runner qmtg-run for a board with CMake (cross-compiled for aarch64 boards)."""
    from qmtgan.targets.native import build_runner
    from qmtgan.targets.registry import board as board_named

    out = aliased(ctx, "out", out)
    if out is None:
        raise click.MissingParameter(ctx=ctx, param_hint="'-o' / '--out'")
    click.echo(str(build_runner(board_named(board), Path(out))))


from qmtgan.targets.flash import flash  # noqa: E402 - the group above is the module's main part

COMMANDS = [targets, flash]
