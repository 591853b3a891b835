"""Boards are data: one TOML per board under targets/boards/ (TVM target as a JSON-dict
form, cross compiler and the apt package that provides it)."""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from qmtgan.runtime.errors import QmtganError

BOARDS_DIR = Path(__file__).with_name("boards")


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    arch: str
    cross_compiler: str
    apt_package: str
    tvm_target: dict

    def compiler(self) -> str | None:
        """The cross compiler's path (None for a native build); a clear error when missing."""
        if not self.cross_compiler:
            return None
        path = shutil.which(self.cross_compiler)
        if path is None:
            raise QmtganError(f"board {self.name} needs {self.cross_compiler}: "
                              f"apt-get install {self.apt_package}")
        return path


def boards() -> dict[str, Board]:
    out = {}
    for f in sorted(BOARDS_DIR.glob("*.toml")):
        d = tomllib.loads(f.read_text())
        out[d["name"]] = Board(d["name"], d["description"], d["arch"], d["cross_compiler"], d["apt_package"],
                               dict(d["tvm_target"]))
    return out


def board(name: str) -> Board:
    known = boards()
    if name not in known:
        raise QmtganError(f"unknown target '{name}' (known: {', '.join(known)})")
    return known[name]
