"""The `qmtgan` command: one group, each stage contributes its subcommands."""

from __future__ import annotations

import errno
import os

import click

from qmtgan import __version__
from qmtgan.runtime.errors import QmtganError


class _Group(click.Group):
    """Turns a QmtganError (or a full disk) anywhere below into one clear message and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except QmtganError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # a full disk mid-write: the write's temporary is already gone (runtime/atomic.py)
            raise click.ClickException(f"no space left on the device writing {exc.filename or 'output'}; "
                                       "nothing was written under its final name") from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qmtgan")
@click.option("-v", "--verbose", count=True, help="More detail (-vv also lets TensorFlow speak).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def main(verbose: int = 0, quiet: bool = False) -> None:
    """qmtgan: train, quantize, convert, run and benchmark MultiTempGAN compression of
    multitemporal Sentinel-2 images."""
    from qmtgan import logs, memory, quiet_import

    logs.configure(-1 if quiet else verbose)
    if verbose >= 2:  # asked for on the command line: wins over an inherited TF_CPP_MIN_LOG_LEVEL
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        quiet_import.install()  # TensorFlow's start-up banners, printed from C++ at import
    os.environ.setdefault("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".cache", "qmtgan", "keras"))
    memory.install()


def _register() -> None:
    from qmtgan.archive.cli import COMMANDS as archive_commands
    from qmtgan.bench.cli import COMMANDS as bench_commands
    from qmtgan.convert.cli import COMMANDS as convert_commands
    from qmtgan.demo.cli import COMMANDS as demo_commands
    from qmtgan.quantize.cli import COMMANDS as quantize_commands
    from qmtgan.rd.cli import COMMANDS as rd_commands
    from qmtgan.runtime.cli import COMMANDS as runtime_commands
    from qmtgan.targets.cli import COMMANDS as target_commands
    from qmtgan.train.cli import COMMANDS as train_commands

    for command in [*train_commands, *quantize_commands, *rd_commands, *convert_commands, *runtime_commands,
                    *target_commands, *demo_commands, *bench_commands, *archive_commands]:
        main.add_command(command)


_register()
