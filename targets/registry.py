"""Boards are data: one TOML per board under targets/boards/ (TVM target in JSON-dict form,
cross compiler and the apt package that provides it, CMake toolchain file, TFLite defaults,
memory budget, and how to reach the board)."""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from qmtgan.runtime.errors import QmtganError

TARGETS_DIR = Path(__file__).parent
BOARDS_DIR = TARGETS_DIR / "boards"
REACH_METHODS = ("local", "qemu", "ssh")


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    arch: str
    cross_compiler: str
    apt_package: str
    tvm_target: dict
    cmake_toolchain: str = ""          # relative to targets/; "" for a native build
    memory_budget_mb: int = 0          # 0: no budget
    tflite: dict = field(default_factory=lambda: {"threads": 0, "xnnpack": True})
    reach: dict = field(default_factory=lambda: {"method": "local"})
    cuda_arch: str = ""
    peak: dict = field(default_factory=dict)   # cores, fp32_lanes, fma_pipes, ghz (bench/machine.py)

    def compiler(self) -> str | None:
        """The cross compiler's path (None for a native build); a clear error when missing."""
        if not self.cross_compiler:
            return None
        return require_tool(self.cross_compiler, self.apt_package, f"board {self.name}")

    def toolchain_file(self) -> Path | None:
        return TARGETS_DIR / self.cmake_toolchain if self.cmake_toolchain else None

    @property
    def tflite_threads(self) -> int | None:
        return int(self.tflite.get("threads", 0)) or None

    @property
    def python(self) -> str:
        return self.reach.get("python", "python3")


def require_tool(name: str, apt_package: str, needed_for: str) -> str:
    """A host tool's path (also looked for in the sbin folders, absent from a user's PATH), or
    one clear error naming the apt package that provides it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if path is None:
        raise QmtganError(f"{needed_for} needs {name}: apt-get install {apt_package}")
    return path


# Every key a board file may hold, with its type: anything else is a typo that would otherwise
# be ignored silently. tvm_target is TVM's own JSON-dict target and is checked by TVM.
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "": {"name": (str,), "description": (str,), "arch": (str,), "cross_compiler": (str,), "apt_package": (str,),
         "cmake_toolchain": (str,), "memory_budget_mb": (int,), "cuda_arch": (str,), "tflite": (dict,),
         "reach": (dict,), "peak": (dict,), "tvm_target": (dict,)},
    "tflite": {"threads": (int,), "xnnpack": (bool,)},
    "reach": {"method": (str,), "host": (str,), "python": (str,), "workdir": (str,), "qemu": (str,),
              "qemu_apt_package": (str,), "cpu": (str,), "suite": (str,)},
    "peak": {"cores": (int,), "fp32_lanes": (int,), "fma_pipes": (int,), "ghz": (int, float)},
}


def _check_keys(path: Path, section: str, table: dict) -> None:
    known = SCHEMA[section]
    where = f"{section}." if section else ""
    for key, value in table.items():
        if key not in known:
            raise QmtganError(f"{path}: unknown key '{where}{key}' (known: {', '.join(known)})")
        if not isinstance(value, known[key]) or (isinstance(value, bool) and bool not in known[key]):
            raise QmtganError(f"{path}: '{where}{key}' must be {' or '.join(t.__name__ for t in known[key])}, "
                              f"got {value!r}")


def _load(path: Path) -> Board:
    try:
        d = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise QmtganError(f"{path}: not a valid board TOML ({exc})") from exc
    _check_keys(path, "", d)
    for section in ("tflite", "reach", "peak"):
        _check_keys(path, section, d.get(section, {}))
    try:
        b = Board(d["name"], d["description"], d["arch"], d["cross_compiler"], d["apt_package"],
                  dict(d["tvm_target"]), d.get("cmake_toolchain", ""), int(d.get("memory_budget_mb", 0)),
                  dict(d.get("tflite", {"threads": 0, "xnnpack": True})), dict(d.get("reach", {"method": "local"})),
                  d.get("cuda_arch", ""), dict(d.get("peak", {})))
    except KeyError as exc:
        raise QmtganError(f"{path}: missing key {exc}") from exc
    if b.reach.get("method") not in REACH_METHODS:
        raise QmtganError(f"{path}: reach.method must be one of {REACH_METHODS}, found {b.reach.get('method')!r}")
    return b


def boards() -> dict[str, Board]:
    return {b.name: b for b in map(_load, sorted(BOARDS_DIR.glob("*.toml")))}


def board(name: str) -> Board:
    known = boards()
    if name not in known:
        raise QmtganError(f"unknown target '{name}' (known: {', '.join(known)})")
    return known[name]
