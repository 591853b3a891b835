"""Boards are data: one TOML per board under targets/boards/ (TVM target in JSON-dict form,
cross compiler and the apt package that provides it, CMake toolchain file, TFLite defaults,
memory budget, and how to reach the board)."""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from qmtgan.runtime.errors import QmtganError

TARGETS_DIR = Path(__file__).parent
BOARDS_DIR = TARGETS_DIR / "boards"
REACH_METHODS = ("local", "qemu", "ssh")


@dataclass(frozen=True)
class TFLiteDefaults:
    threads: int = 0          # 0: all cores
    xnnpack: bool = True


@dataclass(frozen=True)
class Reach:
    """How qmtgan gets at the board: run locally, under qemu user mode, or over ssh."""
    method: str = "local"
    host: str = ""                           # ssh: user@address
    python: str = "python3"
    workdir: str = "qmtgan"                  # ssh: folder under the remote home
    qemu: str = "qemu-aarch64-static"        # qemu: the emulator binary
    qemu_apt_package: str = "qemu-user-static"
    cpu: str = ""                            # qemu: -cpu (default: the TVM target's mcpu, else max)
    suite: str = "bookworm"                  # qemu: the Debian sysroot's suite


@dataclass(frozen=True)
class Peak:
    """Theoretical fp32 peak: cores x SIMD lanes x FMA pipes x 2 x GHz (bench/machine.py)."""
    cores: int
    fp32_lanes: int
    fma_pipes: int
    ghz: float


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    arch: str
    cross_compiler: str
    apt_package: str
    tvm_target: dict                   # TVM's own JSON-dict target, checked by TVM
    cmake_toolchain: str = ""          # relative to targets/; "" for a native build
    memory_budget_mb: int = 0          # 0: no budget
    tflite: TFLiteDefaults = TFLiteDefaults()
    reach: Reach = Reach()
    cuda_arch: str = ""
    peak: Peak | None = None

    def compiler(self) -> str | None:
        """The cross compiler's path (None for a native build); a clear error when missing."""
        if not self.cross_compiler:
            return None
        return require_tool(self.cross_compiler, self.apt_package, f"board {self.name}")

    def toolchain_file(self) -> Path | None:
        return TARGETS_DIR / self.cmake_toolchain if self.cmake_toolchain else None

    @property
    def tflite_threads(self) -> int | None:
        return self.tflite.threads or None

    @property
    def python(self) -> str:
        return self.reach.python


def require_tool(name: str, apt_package: str, needed_for: str) -> str:
    """A host tool's path (also looked for in the sbin folders, absent from a user's PATH), or
    one clear error naming the apt package that provides it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if path is None:
        raise QmtganError(f"{needed_for} needs {name}: apt-get install {apt_package}")
    return path


# The sections of a board file and the record each becomes; every key and its type come from
# the record's fields, so a typo or a wrong type is refused by name instead of ignored.
SECTIONS = {"tflite": TFLiteDefaults, "reach": Reach, "peak": Peak}
TYPES = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float), "dict": (dict,)}


def _record(path: Path, cls: type, table: dict, section: str = ""):
    """`cls` built from a TOML table, with unknown keys, wrong types and missing keys refused."""
    known = {f.name: f for f in fields(cls)}
    where = f"{section}." if section else ""
    values = {}
    for key, value in table.items():
        if key not in known:
            raise QmtganError(f"{path}: unknown key '{where}{key}' (known: {', '.join(known)})")
        if key in SECTIONS and not section:
            if not isinstance(value, dict):
                raise QmtganError(f"{path}: '{key}' must be a table, got {value!r}")
            values[key] = _record(path, SECTIONS[key], value, key)
            continue
        kind = str(known[key].type).split(" |")[0]
        allowed = TYPES[kind]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise QmtganError(f"{path}: '{where}{key}' must be {kind}, got {value!r}")
        values[key] = value
    missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING]
    if missing:
        raise QmtganError(f"{path}: missing key '{where}{missing[0]}'")
    return cls(**values)


def _load(path: Path) -> Board:
    try:
        d = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise QmtganError(f"{path}: not a valid board TOML ({exc})") from exc
    b = _record(path, Board, d)
    if b.reach.method not in REACH_METHODS:
        raise QmtganError(f"{path}: reach.method must be one of {REACH_METHODS}, found {b.reach.method!r}")
    return b


def boards() -> dict[str, Board]:
    return {b.name: b for b in map(_load, sorted(BOARDS_DIR.glob("*.toml")))}


def board(name: str) -> Board:
    known = boards()
    if name not in known:
        raise QmtganError(f"unknown target '{name}' (known: {', '.join(known)})")
    return known[name]
