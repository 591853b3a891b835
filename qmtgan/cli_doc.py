"""docs/cli.md, made from the command tree itself: every option that more than one command
takes, the commands that take it, and any flag whose meaning differs between commands (a
clash, named openly). `python -m qmtgan.cli_doc > docs/cli.md` writes it; a test keeps the
file equal to what this prints."""

from __future__ import annotations

from collections import defaultdict

import click


def _commands(group: click.Group, prefix: str = "qmtgan") -> list[tuple[str, click.Command]]:
    out = []
    for name in sorted(group.commands):
        command = group.commands[name]
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            if command.invoke_without_command:  # a command in its own right, with subcommands
                out.append((path, command))
            out += _commands(command, path)
        else:
            out.append((path, command))
    return out


def _meaning(param: click.Option) -> str:
    """What a flag takes: its type, and whether it repeats."""
    kind = "flag" if param.is_flag else param.type.name
    return kind + (" (repeatable)" if param.multiple else "")


def markdown(group: click.Group) -> str:
    users: dict[str, list[str]] = defaultdict(list)
    meanings: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, command in _commands(group):
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or param.name == "help":
                continue
            flag = max(param.opts, key=len)
            users[flag].append(path)
            meanings[flag][_meaning(param)].append(path)
    shared = sorted(flag for flag, paths in users.items() if len(paths) > 1)
    lines = ["# The command line's shared options", "",
             "Made by `python -m qmtgan.cli_doc` from the commands themselves; `qmtgan/options.py` "
             "declares the shared options. Every option below is taken by more than one command.", "",
             "| option | takes | commands |", "|---|---|---|"]
    for flag in shared:
        kinds = "; ".join(sorted(meanings[flag]))
        lines.append(f"| `{flag}` | {kinds} | {', '.join(f'`{p}`' for p in users[flag])} |")
    clashes = [flag for flag in shared if len(meanings[flag]) > 1]
    lines += ["", "## Where a shared flag differs", "",
              "A flag that takes one value in one command and several (or another kind) in another:", ""]
    if not clashes:
        lines.append("None: every shared flag takes the same kind of value everywhere.")
    for flag in clashes:
        parts = "; ".join(f"{kind} in {', '.join(f'`{p}`' for p in paths)}" for kind, paths in
                          sorted(meanings[flag].items()))
        lines.append(f"- `{flag}`: {parts}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from qmtgan.cli import _register, main

    _register()
    print(markdown(main), end="")
