"""The Debian arm64 sysroot an emulated board runs in (qemu user mode, `-L <sysroot>`).

Built once per Debian suite, without binfmt_misc and without chroot:

    debootstrap --foreign --arch arm64 --variant=minbase --include=<python3.11 and its libs> SUITE DIR MIRROR

unpacks the essential packages and downloads the rest (with their dependencies) into
DIR/var/cache/apt/archives; the packages debootstrap left for its second stage (listed in
DIR/debootstrap/base) are then unpacked with dpkg-deb. No maintainer script ever runs: the
sysroot only has to provide files (the dynamic loader, glibc, libstdc++, Python 3.11 and its
standard library). The host's /proc, /sys, /dev and /tmp are used inside the guest: the
sysroot has none of its own (qemu looks a path up in the sysroot first, then on the host).

Cached under cache_dir()/sysroot/<suite>-arm64, built in a temporary sibling that is renamed
only when complete, with a stamp file naming the recipe: a half-built sysroot is never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from qmtgan.runtime.atomic import atomic_dir
from qmtgan.runtime.errors import QmtganError
from qmtgan.targets.device_files import cache_dir
from qmtgan.targets.registry import Board, require_tool

DEBOOTSTRAP = "debootstrap"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Python of each Debian suite (the board's wheels are fetched for this version).
SUITE_PYTHON = {"bookworm": "3.11"}
# Packages unpacked on top of minbase: Python and every library its standard library loads.
# debootstrap resolves their dependencies; most libraries are already essential.
PYTHON_PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11",
                   "libssl3", "libffi8", "zlib1g", "libexpat1", "libbz2-1.0", "liblzma5", "libsqlite3-0",
                   "libstdc++6", "libgcc-s1", "libncursesw6", "libtinfo6", "libreadline8", "libuuid1",
                   "libdb5.3", "libcrypt1")
RECIPE_VERSION = 1
STAMP = ".qmtgan-sysroot"
# Left out of the sysroot so the guest sees the host's (qemu tries the sysroot first).
HOST_DIRS = ("proc", "sys", "dev", "tmp", "run")


def suite_python(board: Board) -> str:
    suite = board.reach.suite
    if suite not in SUITE_PYTHON:
        raise QmtganError(f"board {board.name}: no Python version known for Debian suite '{suite}' "
                          f"(known: {', '.join(SUITE_PYTHON)})")
    return SUITE_PYTHON[suite]


def sysroot_dir(board: Board) -> Path:
    return cache_dir() / "sysroot" / f"{board.reach.suite}-arm64"


def sysroot_python(board: Board) -> Path:
    """The guest Python inside the sysroot (a host path of an aarch64 executable)."""
    return sysroot_dir(board) / "usr" / "bin" / f"python{suite_python(board)}"


def qemu_binary(board: Board) -> str:
    return require_tool(board.reach.qemu,
                        board.reach.qemu_apt_package, f"the emulated board {board.name}")


def debian_mirror(suite: str) -> str:
    """The Debian mirror this machine's apt uses for `suite` (QMTGAN_DEBIAN_MIRROR overrides),
    else deb.debian.org. Only entries that list the suite count: an Ubuntu host's mirror is not
    a Debian one."""
    if os.environ.get("QMTGAN_DEBIAN_MIRROR"):
        return os.environ["QMTGAN_DEBIAN_MIRROR"]
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if f.suffix == ".sources":  # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and suite in fields.get("Suites", "").split():
                    for uri in fields.get("URIs", "").split():
                        if uri.rstrip("/").endswith("/debian"):
                            return uri.rstrip("/")
        else:  # one-line format: deb [options] URI SUITE COMPONENTS...
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    if words[1].rstrip("/").endswith("/debian"):
                        return words[1].rstrip("/")
    return DEFAULT_MIRROR


def _recipe(suite: str) -> str:
    return f"recipe {RECIPE_VERSION}; debian {suite} arm64 minbase; {' '.join(PYTHON_PACKAGES)}\n"


@contextlib.contextmanager
def _lock(path: Path):
    """One builder at a time (a second process waits, then finds the finished sysroot)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_ready(dest: Path, recipe: str) -> bool:
    stamp = dest / STAMP
    return stamp.is_file() and stamp.read_text() == recipe


def ensure_sysroot(board: Board, log=None) -> Path:
    """The board's arm64 sysroot, built on first use (needs debootstrap and root)."""
    if board.reach.method != "qemu":
        raise QmtganError(f"board {board.name} is not emulated "
                          f"(reach.method is '{board.reach.method}', not 'qemu')")
    suite = board.reach.suite
    suite_python(board)  # an unknown suite fails before anything is downloaded
    dest = sysroot_dir(board)
    recipe = _recipe(suite)
    if _is_ready(dest, recipe):
        return dest
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    debootstrap = require_tool(DEBOOTSTRAP, "debootstrap", "building the arm64 sysroot")
    qemu = qemu_binary(board)
    if os.geteuid() != 0:
        raise QmtganError(
            f"building the {suite} arm64 sysroot runs debootstrap, which needs root: run this once "
            f"as root (with QMTGAN_CACHE={cache_dir()}), then it is reused"
        )
    with _lock(dest.parent / f".{dest.name}.lock"):
        if _is_ready(dest, recipe):  # built by another process meanwhile
            return dest
        for stale in dest.parent.glob(f".{dest.name}.tmp-*"):  # left by a killed build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        mirror = debian_mirror(suite)
        log(f"building the Debian {suite} arm64 sysroot for {board.name} in {dest} from {mirror} "
            f"(first use only: downloads ~40 MB, 20 s to a few minutes)")
        t0 = time.perf_counter()
        with atomic_dir(dest) as tmp:
            _debootstrap(debootstrap, suite, tmp, mirror)
            log(f"  debootstrap done ({time.perf_counter() - t0:.0f} s); unpacking Python and its libraries")
            _unpack_second_stage(tmp)
            _tidy(tmp, suite_python(board))
            _check_python(qemu, board, tmp)
            (tmp / STAMP).write_text(recipe)
        log(f"  sysroot ready ({time.perf_counter() - t0:.0f} s)")
    return dest


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the builder dies, so a killed build leaves
    no debootstrap writing into the abandoned temporary."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _debootstrap(debootstrap: str, suite: str, target: Path, mirror: str) -> None:
    cmd = [debootstrap, "--foreign", "--arch", "arm64", "--variant=minbase",
           f"--include={','.join(PYTHON_PACKAGES)}", suite, str(target), mirror]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_die_with_parent)
    if proc.returncode != 0:
        log_file = target / "debootstrap" / "debootstrap.log"
        detail = log_file.read_text(errors="replace")[-2000:] if log_file.is_file() else ""
        raise QmtganError(
            f"debootstrap failed ({' '.join(cmd)}):\n{(proc.stdout + proc.stderr).strip()[-2000:]}"
            + (f"\n{detail}" if detail else "")
        )


def _unpack_second_stage(root: Path) -> None:
    """Unpack every downloaded package debootstrap's first stage left unpacked."""
    boot = root / "debootstrap"
    base = (boot / "base").read_text().split()
    debpaths = dict(
        line.split(None, 1) for line in (boot / "debpaths").read_text().splitlines() if line.strip()
    )
    missing = [p for p in base if p not in debpaths]
    if missing:
        raise QmtganError(f"debootstrap downloaded no package file for {missing}")
    for pkg in base:
        deb = root / debpaths[pkg].strip().lstrip("/")
        # tar keeps the merged-/usr symlinks (/lib -> usr/lib, ...) as debootstrap does
        data = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        tar = subprocess.run(["tar", "-x", "--keep-directory-symlink", "--no-same-owner", "-C", str(root)],
                             stdin=data.stdout, capture_output=True, text=True)
        data.stdout.close()
        if data.wait() != 0 or tar.returncode != 0:
            raise QmtganError(f"cannot unpack {deb.name} into the sysroot: {tar.stderr.strip()}")


def _tidy(root: Path, python_version: str) -> None:
    # Host folders: debootstrap may have made /proc a symlink to the host's /proc and /dev device
    # nodes; the guest must see the host's (and /proc/cpuinfo as bind-mounted by emulate.py).
    for name in HOST_DIRS:
        p = root / name
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
    shutil.rmtree(root / "debootstrap", ignore_errors=True)
    for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()
    for index in (root / "var" / "lib" / "apt" / "lists").glob("*_Packages"):  # ~45 MB, never read
        index.unlink()
    python3 = root / "usr" / "bin" / "python3"
    if not python3.exists():
        python3.symlink_to(f"python{python_version}")


def _check_python(qemu: str, board: Board, root: Path) -> None:
    python = root / "usr" / "bin" / f"python{suite_python(board)}"
    code = (
        "import ctypes, decimal, hashlib, lzma, bz2, sqlite3, ssl, zlib, platform; print(platform.machine())"
    )
    proc = subprocess.run(
        [
            qemu,
            "-L",
            str(root),
            "-cpu",
            board.reach.cpu or "max",
            "-E",
            "PYTHONNOUSERSITE=1",
            str(python),
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 or proc.stdout.strip() != "aarch64":
        raise QmtganError(
            f"the new sysroot's Python does not run under {qemu}:\n{proc.stderr.strip()[-2000:]}"
        )
