"""The CLI's shared vocabulary: each option that more than one command takes is declared once
here and means the same thing everywhere.

  -o/--out     where the command writes (a file or a folder, per command)
  --model      a training run folder (train's output)
  --pair       a pair folder (prepare's output)
  --bundle     a deployment bundle (convert's output): its folder or its .tar.gz
  --threads    backend threads on the machine that runs the model (default: all its cores)
  --board      a board of `qmtgan targets list` (hardware; --target is a GeoTIFF)
  --shared     a shared generator's .qmtg (`qmtgan shared export`), held by both ends
  --patch-size the side of a training patch, which is also the decoding tile (the paper's: 512)
  --methods    quantization methods by name (`symmetric`, `kmeans`, `pwl`, ...)
  lists        repeat the option or separate values with commas: --bits 4,8 == --bits 4 --bits 8
  KEY=VALUE    options that map a name to a value (bench --host BOARD=user@addr)

docs/cli.md lists every option that more than one command takes, with its commands and where a
flag differs between them (`python -m qmtgan.cli_doc` makes it; a test keeps it current).

A renamed option keeps its old name, hidden, for one release: it still works and prints a
deprecation notice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)


def out_option(help: str, required: bool = True, default: Path | None = None, **kwargs) -> Callable:
    return click.option("-o", "--out", type=click.Path(path_type=Path), required=required and default is None,
                        default=default, show_default=default is not None, help=help, **kwargs)


def model_option(
    multiple: bool = False, required: bool = True, help: str = "A training run folder."
) -> Callable:
    return click.option("--model", "model_dirs" if multiple else "model_dir", type=FOLDER, multiple=multiple,
                        required=required, help=help + (" Repeatable." if multiple else ""))


def pair_option(
    multiple: bool = False, required: bool = True, help: str = "A pair folder (qmtgan prepare)."
) -> Callable:
    return click.option("--pair", "pair_dirs" if multiple else "pair_dir", type=FOLDER, multiple=multiple,
                        required=required, help=help + (" Repeatable." if multiple else ""))


def bundle_option(dest: str = "bundle") -> Callable:
    return click.option("--bundle", dest, type=click.Path(exists=True, path_type=Path), required=True,
                        help="A bundle folder or its .tar.gz.")


def threads_option() -> Callable:
    return click.option("--threads", type=click.IntRange(min=1), help="Backend threads (default: all cores).")


def shared_option(help: str = "") -> Callable:
    return click.option("--shared", "shared_path",
                        type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help=("A shared generator (.qmtg of `qmtgan shared export`) that both ends hold. "
                              + help).strip())


def patch_size_option(help: str = "") -> Callable:
    from qmtgan.runtime.tiling import PATCH_SIZE

    return click.option("--patch-size", type=click.IntRange(min=1), default=PATCH_SIZE, show_default=True,
                        help=help or None)


def timing_options(timeout_help: str = "Seconds one configuration may take.") -> Callable:
    """How each configuration is timed (bench, farm bench): --tiles, --warmup, --runs,
    --min-time, --timeout."""
    options = [
        click.option("--tiles", "tile_count", type=click.IntRange(min=1), default=4, show_default=True),
        click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True),
        click.option("--runs", type=click.IntRange(min=1), default=10, show_default=True),
        click.option("--min-time", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="Seconds."),
        click.option("--timeout", type=click.FloatRange(min=1), default=1800, show_default=True,
                     help=timeout_help),
    ]

    def decorate(f: Callable) -> Callable:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _split(values) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = (values,)
    return [item.strip() for value in values for item in str(value).split(",") if item.strip()]


def list_option(
    *decls: str, convert: Callable = str, default: tuple = (), help: str = "", **kwargs
) -> Callable:
    """A list option: repeatable, and each value may hold several separated by commas. The
    command receives a list (of `convert`ed items; the default's when the option is absent)."""

    def callback(ctx, param, value):
        items = _split(aliased(ctx, param.name, value))
        try:
            return [convert(item) for item in items]
        except ValueError as exc:
            raise click.BadParameter(f"'{','.join(items)}': {exc}", ctx, param) from exc

    return click.option(*decls, multiple=True, callback=callback, default=tuple(str(d) for d in default),
                        show_default=bool(default),
                        help=f"{help} Comma-separated or repeated.".strip(), **kwargs)


def methods_option(default: tuple[str, ...], help: str = "Quantization methods.") -> Callable:
    """--methods: names of quantize/methods.py's methods (the command checks them)."""
    return list_option("--methods", default=default, help=help)


def rounding_option() -> Callable:
    """--rounding: how the quantized generator is fitted to the scene it encodes."""
    return click.option(
        "--rounding", type=click.Choice(("nearest", "bias", "adaround")), default="nearest",
        show_default=True,
        help="Fit the quantized generator to the pair's scene, layer by layer, kept where the scene "
        "measures better (methods with one grid per tensor): bias = nearest codes, each bias corrected "
        "for its layer's mean error; adaround = each kernel weight's rounding chosen on the scene's "
        "patches, then the bias correction.")


def key_value_option(*decls: str, **kwargs) -> Callable:
    """A repeatable KEY=VALUE option; the command receives a dict."""

    def callback(ctx, param, value):
        pairs = {}
        for item in value:
            key, sep, val = item.partition("=")
            if not sep or not key or not val:
                raise click.BadParameter(f"takes KEY=VALUE, got '{item}'", ctx, param)
            pairs[key] = val
        return pairs

    return click.option(*decls, multiple=True, callback=callback, **kwargs)


def deprecated_alias(old: str, new: str, new_flag: str, **kwargs) -> Callable:
    """`old` as a hidden option that still works: its value goes to the option whose destination
    name is `new` (spelled `new_flag` on the command line) unless that was given too, with a
    notice on stderr."""

    def callback(ctx, param, value):
        if value in (None, ()):
            return
        click.echo(f"qmtgan: {old} is deprecated and goes away in the next release; use {new_flag}", err=True)
        ctx.meta.setdefault("qmtgan.aliases", {})[new] = value

    return click.option(old, expose_value=False, hidden=True, callback=callback, is_eager=True, **kwargs)


def aliased(ctx: click.Context, name: str, value):
    """The value of option `name`, or the one its deprecated alias gave when `name` itself was
    not given on the command line."""
    given = ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    if given and value not in (None, ()):
        return value
    return ctx.meta.get("qmtgan.aliases", {}).get(name, value)


def board_option(required: bool = True, help: str = "A board of `qmtgan targets list`.") -> Callable:
    """--board NAME; --target NAME is its deprecated alias (hardware only: --target elsewhere
    is a GeoTIFF). Required-ness is checked after the alias is read."""

    def decorator(f):
        def callback(ctx, param, value):
            value = aliased(ctx, "board", value)
            if required and not value:
                raise click.MissingParameter(ctx=ctx, param=param)
            return value

        f = click.option("--board", callback=callback, help=help)(f)
        return deprecated_alias("--target", "board", "--board")(f)

    return decorator
