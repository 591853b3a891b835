"""`qmtgan demo` and `qmtgan bench ...`."""

from __future__ import annotations

import click

from qmtgan.bench.demo import demo


@click.group()
def bench() -> None:
    """Benchmarks (numbers for notes and reports, never timed tests)."""


@bench.command("train-step", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train_step(args: tuple[str, ...]) -> None:
    """Time a 512x512 GAN step and generator forward pass (see --help of the script)."""
    from qmtgan.bench.train_step import main

    main(list(args))


COMMANDS = [demo, bench]
