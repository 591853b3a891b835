"""Run a command on an emulated board: qemu user mode over the board's cached Debian sysroot.

    argv[0] == "python3"  the sysroot's Python, with the board's aarch64 wheels (numpy, TVM,
                          LiteRT, ...) on PYTHONPATH before any paths the caller adds
    any other argv[0]     a host path of an aarch64 executable (e.g. a cross-compiled program),
                          its shared libraries taken from the sysroot

qemu 7.2 shows the guest the host's x86 /proc/cpuinfo, on which the cpuinfo library inside
LiteRT's XNNPACK crashes. The command therefore runs in a private mount namespace
(`unshare -m`; `unshare -m -r` for a non-root user) in which an ARM-format cpuinfo generated
from the board's data (CPU part of its `mcpu`, `num-cores`) is bind-mounted over /proc/cpuinfo.
The guest environment is clean: only what is passed here, never the host's PYTHONPATH or
LD_LIBRARY_PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from qmtgan.runtime.atomic import write_text_atomic
from qmtgan.runtime.errors import QmtganError
from qmtgan.targets.device_files import board_site_packages, cache_dir
from qmtgan.targets.registry import Board
from qmtgan.targets.registry import require_tool
from qmtgan.targets.sysroot import ensure_sysroot, qemu_binary, suite_python, sysroot_python

# ARM's MIDR part numbers of the cores the boards use (what /proc/cpuinfo shows as "CPU part").
ARM_CPU_PARTS = {"cortex-a53": 0xD03, "cortex-a55": 0xD05, "cortex-a57": 0xD07, "cortex-a72": 0xD08,
                 "cortex-a73": 0xD09, "cortex-a76": 0xD0B, "cortex-a78": 0xD41, "cortex-a78ae": 0xD42}
PYTHON_NAMES = ("python3",)
# The host environment the wrapper itself needs; the guest gets these plus the -E variables.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_unshare_argv: list[str] | None = None


def guest_cpuinfo(board: Board) -> str:
    """An aarch64 /proc/cpuinfo for the board's CPU and core count."""
    cpu = board.reach.cpu or board.tvm_target.get("mcpu", "")
    if cpu not in ARM_CPU_PARTS:
        raise QmtganError(f"board {board.name}: no ARM CPU part number known for '{cpu}' "
                          f"(known: {', '.join(ARM_CPU_PARTS)})")
    cores = int(board.tvm_target.get("num-cores", 4))
    block = (
        "BogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {ARM_CPU_PARTS[cpu]:#05x}\n"
        "CPU revision\t: 3\n\n"
    )
    return "".join(f"processor\t: {n}\n{block}" for n in range(cores))


def cpuinfo_file(board: Board) -> Path:
    path = cache_dir() / "sysroot" / f"cpuinfo-{board.name}"
    text = guest_cpuinfo(board)
    if not path.is_file() or path.read_text() != text:
        write_text_atomic(path, text)
    return path


def _unshare() -> list[str]:
    """`unshare -m` (root) or `unshare -m -r` (a user namespace), whichever works here; probed once."""
    global _unshare_argv
    if _unshare_argv is None:
        unshare = require_tool("unshare", "util-linux", "the emulated board")
        tried = [[unshare, "-m"], [unshare, "-m", "-r"]] if os.geteuid() == 0 else [[unshare, "-m", "-r"]]
        errors = []
        for argv in tried:
            proc = subprocess.run([*argv, "true"], capture_output=True, text=True)
            if proc.returncode == 0:
                _unshare_argv = argv
                break
            errors.append(f"{' '.join(argv)}: {proc.stderr.strip()}")
        else:
            raise QmtganError(
                "the emulated board needs a private mount namespace to show the guest an ARM "
                "/proc/cpuinfo, and none could be made here (" + "; ".join(errors) + "): run as "
                "root or allow unprivileged user namespaces"
            )
    return _unshare_argv


def _require_qemu(board: Board) -> None:
    if board.reach.method != "qemu":
        raise QmtganError(f"board {board.name} is not emulated (reach.method is "
                          f"'{board.reach.method}', not 'qemu')")


def guest_command(board: Board, argv, env: dict[str, str] | None = None) -> list[str]:
    """The qemu command line that runs `argv` on the board's CPU with its sysroot (building the
    sysroot and fetching the board's wheels on first use); no ARM cpuinfo, no clean host
    environment (emulated_argv adds both). `env`: guest environment variables; its PYTHONPATH
    (os.pathsep-separated host paths) comes after the board's site-packages."""
    _require_qemu(board)
    argv = [str(a) for a in argv]
    if not argv:
        raise QmtganError("no command given to run on the emulated board")
    qemu = qemu_binary(board)
    sysroot = ensure_sysroot(board)
    env = {k: str(v) for k, v in (env or {}).items()}
    if argv[0] in (*PYTHON_NAMES, board.python):
        exe = sysroot_python(board)
        extra = [p for p in env.pop("PYTHONPATH", "").split(os.pathsep) if p]
        site = board_site_packages(board.arch, suite_python(board))
        env = {"PYTHONPATH": os.pathsep.join([str(site), *extra]), "PYTHONNOUSERSITE": "1", **env}
    else:
        exe = Path(argv[0]).resolve()
        if not exe.is_file():
            raise QmtganError(f"{argv[0]}: no such executable on this host (give the host path of an "
                              f"aarch64 program, or python3)")
    guest = [qemu, "-L", str(sysroot), "-cpu", board.reach.cpu or "max"]
    for key, value in env.items():
        guest += ["-E", f"{key}={value}"]
    return [*guest, str(exe), *argv[1:]]


def emulated_argv(board: Board, argv, env: dict[str, str] | None = None) -> list[str]:
    """The host command line that runs `argv` on the emulated board: guest_command in a mount
    namespace of its own where /proc/cpuinfo is the board's, with a clean host environment."""
    guest = guest_command(board, argv, env)
    bind = 'mount --bind "$1" /proc/cpuinfo && shift && exec "$@"'
    host_env = [f"PATH={HOST_PATH}", f"HOME={os.path.expanduser('~')}", "LC_ALL=C.UTF-8"]
    return [shutil.which("env") or "env", "-i", *host_env, *_unshare(), "sh", "-c", bind, "qmtgan-emulate",
            str(cpuinfo_file(board)), *guest]


def guest_python_launcher(board: Board, path: Path, env: dict[str, str] | None = None) -> Path:
    """A host script at `path` that runs the board's python under qemu with `args`: what a
    guest program execs to start another guest python (qemu's user mode cannot exec an
    aarch64 binary by itself where the host has no binfmt handler for it)."""
    import shlex

    command = " ".join(shlex.quote(a) for a in guest_command(board, ["python3"], env))
    path.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    path.chmod(0o755)
    return path


def run_emulated(board: Board, argv, env: dict[str, str] | None = None, timeout: float | None = None,
                 cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run `argv` on the emulated board (in `cwd`); its output captured as text."""
    argv = [str(a) for a in argv]
    if (
        cwd is not None
        and argv
        and argv[0] not in (*PYTHON_NAMES, board.python)
        and not os.path.isabs(argv[0])
    ):
        argv[0] = os.path.join(cwd, argv[0])  # a relative program path is relative to cwd
    return subprocess.run(
        emulated_argv(board, argv, env), capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
