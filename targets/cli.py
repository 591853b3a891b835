"""`qmtgan targets list | show NAME`."""

from __future__ import annotations

import json
from dataclasses import asdict

import click


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


from qmtgan.targets.flash import flash  # noqa: E402 - the group above is the module's main part

COMMANDS = [targets, flash]
