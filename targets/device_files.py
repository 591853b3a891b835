"""What a board needs besides the bundle: the device runtime (the `qmtgan.runtime` subpackage
as a plain folder tree, numpy-only) and, for emulated or offline boards, the aarch64 wheels of
its libraries installed with pip's --platform/--target into a cache outside the repo."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

from qmtgan.runtime.atomic import atomic_dir
from qmtgan.runtime.backends import BACKENDS
from qmtgan.runtime.errors import QmtganError

# The board's libraries, at the host's versions so both sides run the same code: numpy, every
# backend's, the payload's code coders (runtime/entropy.py), and cloudpickle and psutil (what
# tvm.exec.rpc_server needs on the board).
BOARD_PACKAGES = (
    "numpy",
    "pyppmd",
    "zstandard",
    *dict.fromkeys(p for b in BACKENDS.values() for p in b.requires),
    "cloudpickle",
    "psutil",
)
# Every manylinux tag a Debian bookworm board (glibc 2.36) can load.
PIP_PLATFORMS = {"aarch64": ("manylinux2014_aarch64", *(f"manylinux_2_{v}_aarch64" for v in range(17, 37)))}


def cache_dir() -> Path:
    """QMTGAN_CACHE, else ~/.cache/qmtgan (never inside the repo)."""
    return Path(os.environ.get("QMTGAN_CACHE") or Path.home() / ".cache" / "qmtgan")


# What a board runs: the scene decoder (python -m qmtgan.runtime.stream), the measurement worker
# (python -m qmtgan.runtime.probe), bundles as a library, and the payload decoder.
DEVICE_ENTRY_POINTS = ("qmtgan.runtime.stream", "qmtgan.runtime.probe", "qmtgan.runtime.bundle",
                       "qmtgan.runtime.decode")


def _runtime_imports(path: Path) -> set[str]:
    """The qmtgan.runtime modules a runtime file imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("qmtgan.runtime.")}
        elif isinstance(node, ast.ImportFrom) and node.module == "qmtgan.runtime":
            found |= {f"qmtgan.runtime.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qmtgan.runtime."):
            found.add(node.module)
    return found


def device_modules(entry_points: tuple[str, ...] = DEVICE_ENTRY_POINTS) -> list[str]:
    """The runtime's file names the entry points need: their imports, followed to the end."""
    import qmtgan.runtime

    folder = Path(qmtgan.runtime.__file__).parent
    needed, todo = set(), list(entry_points)
    while todo:
        module = todo.pop()
        name = module.removeprefix("qmtgan.runtime.").split(".")[0] + ".py"
        if name in needed:
            continue
        if not (folder / name).is_file():
            raise QmtganError(f"the device runtime imports {module}, which is not a module of qmtgan.runtime")
        needed.add(name)
        todo += sorted(_runtime_imports(folder / name))
    return sorted(needed | {"__init__.py"})


def stage_runtime(dest: Path) -> Path:
    """dest/qmtgan/{__init__.py, runtime/<what the board's entry points import>}: importable
    with PYTHONPATH=dest on any board."""
    import qmtgan
    import qmtgan.runtime

    pkg = dest / "qmtgan"
    (pkg / "runtime").mkdir(parents=True, exist_ok=True)
    shutil.copy2(qmtgan.__file__, pkg / "__init__.py")
    folder = Path(qmtgan.runtime.__file__).parent
    for name in device_modules():
        shutil.copy2(folder / name, pkg / "runtime" / name)
    return dest


def pinned_requirements(packages=BOARD_PACKAGES) -> list[str]:
    """Each package at this machine's version (unpinned when it is not installed here)."""
    from qmtgan.runtime.probe import package_versions

    found = package_versions(packages)
    return [f"{name}=={found[name]}" if name in found else name for name in packages]


def board_site_packages(arch: str, python_version: str = "3.11") -> Path:
    """The board's Python libraries for `arch` (built once, cached): pip --platform --target."""
    if arch not in PIP_PLATFORMS:
        raise QmtganError(
            f"no wheel platform known for architecture '{arch}' (known: {', '.join(PIP_PLATFORMS)})"
        )
    reqs = pinned_requirements()
    key = "-".join(r.replace("==", "-") for r in reqs)
    dest = cache_dir() / "wheels" / f"{arch}-py{python_version}" / "site-packages"
    stamp = dest / ".qmtgan-requirements"
    if stamp.is_file() and stamp.read_text() == key:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    with atomic_dir(dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp", "--target", str(tmp)]
        for p in PIP_PLATFORMS[arch]:
            cmd += ["--platform", p]
        proc = subprocess.run(cmd + reqs, capture_output=True, text=True)
        if proc.returncode != 0:
            raise QmtganError(f"pip could not fetch the {arch} wheels {reqs}:\n{proc.stderr.strip()[-2000:]}")
        (tmp / ".qmtgan-requirements").write_text(key)
    return dest
