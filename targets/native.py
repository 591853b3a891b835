"""Builds `qmtg-run` (native/, top-level CMakeLists.txt) for a board of targets/boards with CMake.

The TVM runtime and tvm-ffi come from the wheels, never from a TVM source build: for the host,
the apache-tvm / apache-tvm-ffi packages installed in this Python; for aarch64 boards, the
aarch64 wheels cached by `device_files.board_site_packages`. The build folder is self-contained
(qmtg-run + lib/libtvm_runtime.so + lib/libtvm_ffi.so, RPATH $ORIGIN/lib): copy it to the board.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

from qmtgan.runtime.errors import QmtganError
from qmtgan.targets.registry import TARGETS_DIR, Board, require_tool

SOURCE_DIR = TARGETS_DIR.parent          # the checkout: CMakeLists.txt + native/
RUNNER = "qmtg-run"
_STAMP = ".qmtgan-build.json"


def _host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _package_dir(name: str) -> Path:
    """A package's folder in this Python, without importing it (importing tvm is slow)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise QmtganError(f"the native runner needs the Python package '{name}' for its libraries "
                          "(pip install 'qmtgan[tvm]')")
    return Path(next(iter(spec.submodule_search_locations)))


def tvm_paths(board: Board) -> dict[str, Path]:
    """The CMake cache variables TVM_RUNTIME_LIB_DIR, TVM_FFI_LIB_DIR, TVM_FFI_INCLUDE_DIR for a board."""
    if not board.cross_compiler:
        if board.arch != _host_arch():
            raise QmtganError(f"board {board.name} is {board.arch} without a cross compiler, "
                              f"but this machine is {_host_arch()}")
        tvm_dir, ffi_dir = _package_dir("tvm"), _package_dir("tvm_ffi")
    else:
        from qmtgan.targets.device_files import board_site_packages

        site = board_site_packages(board.arch)
        tvm_dir, ffi_dir = site / "tvm", site / "tvm_ffi"
    paths = {"TVM_RUNTIME_LIB_DIR": tvm_dir / "lib", "TVM_FFI_LIB_DIR": ffi_dir / "lib",
             "TVM_FFI_INCLUDE_DIR": ffi_dir / "include"}
    for var, rel in (("TVM_RUNTIME_LIB_DIR", "libtvm_runtime.so"), ("TVM_FFI_LIB_DIR", "libtvm_ffi.so"),
                     ("TVM_FFI_INCLUDE_DIR", "tvm/ffi/function.h")):
        if not (paths[var] / rel).is_file():
            raise QmtganError(f"{paths[var] / rel} is missing: the {board.arch} apache-tvm / apache-tvm-ffi "
                              "wheels do not have the expected layout")
    return paths


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise QmtganError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{_tail(proc.stdout + proc.stderr)}")


def build_runner(board: Board, build_dir: Path, jobs: int | None = None) -> Path:
    """Configure and build qmtg-run for `board` in `build_dir`; returns the binary's path."""
    build_dir = Path(build_dir).resolve()
    cmake = require_tool("cmake", "cmake", "building the native runner")
    if board.cross_compiler:
        board.compiler()  # a clear error naming the apt package when missing
    else:
        require_tool("c++", board.apt_package or "g++", "building the native runner")
    if not (SOURCE_DIR / "CMakeLists.txt").is_file() or not (SOURCE_DIR / "native" / "qmtg_run.cc").is_file():
        raise QmtganError(f"the native runner's sources (CMakeLists.txt, native/) are not in {SOURCE_DIR}: "
                          "build from a source checkout of qmtgan")

    defines = {k: str(v) for k, v in tvm_paths(board).items()}
    defines["CMAKE_BUILD_TYPE"] = "Release"
    toolchain = board.toolchain_file()
    if toolchain is not None:
        defines["CMAKE_TOOLCHAIN_FILE"] = str(toolchain)
    # A folder configured for another board (or other libraries) is configured afresh:
    # CMake ignores a changed toolchain file in an existing cache.
    stamp = build_dir / _STAMP
    key = json.dumps({"board": board.name, **defines}, sort_keys=True)
    if stamp.is_file() and stamp.read_text() != key:
        (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
        shutil.rmtree(build_dir / "CMakeFiles", ignore_errors=True)
        stamp.unlink()
    build_dir.mkdir(parents=True, exist_ok=True)

    _run([cmake, "-S", str(SOURCE_DIR), "-B", str(build_dir), *(f"-D{k}={v}" for k, v in defines.items())],
         f"configuring {RUNNER} for {board.name}")
    stamp.write_text(key)
    _run([cmake, "--build", str(build_dir), "--parallel", str(jobs or os.cpu_count() or 1)],
         f"building {RUNNER} for {board.name}")
    binary = build_dir / RUNNER
    if not binary.is_file():
        raise QmtganError(f"the build for {board.name} finished but {binary} is missing")
    return binary
