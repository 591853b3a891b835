"""`qmtgan flash`: put a deployment bundle on a board and prove it works there.

1. the bundle is verified here (sha256 of every file) and its module's architecture is checked
   against the board's;
2. the board answers (`uname -m` must be the board's architecture);
3. the bundle and the device runtime (qmtgan.runtime, numpy-only) are copied to
   <workdir>/bundles/<name> and <workdir>/runtime; the sha256 of every copied file is computed
   on the board and compared with this side's;
4. the runtime's Python requirements (numpy + the bundle's backend) are checked there and, if
   missing and allowed, installed into <workdir>/venv at this machine's versions;
5. a smoke decode of the bundle's own real scene tiles runs on the board
   (python3 -m qmtgan.runtime.probe): its SNR must match the manifest's within the tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from qmtgan.options import aliased, board_option, bundle_option, deprecated_alias
from qmtgan.runtime.bundle import MANIFEST, Bundle, load_bundle
from qmtgan.runtime.digest import sha256_file
from qmtgan.runtime.backends import BACKENDS
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.scratch import scratch_dir
from qmtgan.targets.device_files import pinned_requirements, stage_runtime
from qmtgan.runtime.probe import SMOKE_MISMATCH
from qmtgan.targets.devices import RUNTIME_DIR, Device, connect
from qmtgan.targets.registry import Board, board as board_named



def check_module_arch(bundle: Bundle, target: Board) -> None:
    built_for = bundle.manifest.elf_machine
    if built_for and built_for != target.arch:
        raise QmtganError(
            f"{bundle.path}: the module is built for {built_for}, board {target.name} is {target.arch}"
        )


def verify_on_device(device: Device, folder: str, digests: dict[str, str]) -> None:
    found = device.sha256([f"{folder}/{name}" for name in digests])
    bad = [name for name in digests if found[f"{folder}/{name}"] != digests[name]]
    if bad:
        raise QmtganError(f"{device.describe()}: checksum mismatch after copy in {folder}: {', '.join(bad)}")


def _has_requirements(device: Device, backend: str) -> bool:
    probe = " or ".join(f"find_spec({m!r})" for m in BACKENDS[backend].modules)
    code = (f"from importlib.util import find_spec; import sys; "
            f"sys.exit(0 if find_spec('numpy') and ({probe}) else 1)")
    return device.run(["python3", "-c", code], timeout=300).returncode == 0


def ensure_requirements(device: Device, backend: str, install: bool) -> str:
    """'present' or 'installed'; a clear error when missing and not installable."""
    if _has_requirements(device, backend):
        return "present"
    reqs = pinned_requirements(("numpy", *BACKENDS[backend].requires))
    if not install:
        raise QmtganError(f"{device.describe()}: {device.python} lacks the runtime's requirements {reqs} "
                          "(run flash with --install, or install them on the board)")
    steps = [
        [device.python, "-m", "venv", "venv"],
        ["venv/bin/python", "-m", "pip", "install", "--quiet", *reqs],
    ]
    for argv in steps:
        proc = device.run(argv, timeout=1800)
        if proc.returncode != 0:
            raise QmtganError(
                f"{device.describe()}: '{' '.join(argv)}' failed: {proc.stderr.strip()[-1000:]}"
            )
    device.python = "venv/bin/python"
    if not _has_requirements(device, backend):
        raise QmtganError(f"{device.describe()}: installed {reqs} but the backend still does not import")
    return "installed"


def smoke_decode(
    device: Device, folder: str, bundle: Bundle, tolerance_db: float, threads: int | None
) -> dict:
    smoke = bundle.manifest.smoke
    if not smoke:
        raise QmtganError(
            f"{bundle.path}: the manifest has no smoke test (bundle made before qmtgan 0.1; convert again)"
        )
    args = [
        "--warmup",
        "0",
        "--runs",
        "1",
        "--expect-snr",
        repr(smoke["snr_db"]),
        "--tolerance",
        str(tolerance_db),
    ]
    record = device.probe(folder, f"{folder}/{smoke['file']}", args, threads, timeout=3600,
                          ok_codes=(0, SMOKE_MISMATCH))
    if not record["smoke"]["ok"]:
        raise QmtganError(
            f"{device.describe()}: smoke decode SNR {record['smoke']['snr_db']:.4f} dB differs from "
            f"the manifest's {smoke['snr_db']:.4f} dB by more than {tolerance_db} dB"
        )
    return record


def flash_bundle(bundle_path: Path, target: Board, device: Device, install: bool = True,
                 tolerance_db: float = 0.05) -> dict:
    bundle = load_bundle(bundle_path)
    check_module_arch(bundle, target)
    arch = device.arch()
    if arch != target.arch:
        raise QmtganError(
            f"{device.describe()} reports architecture {arch}, board {target.name} is {target.arch}"
        )
    folder = f"bundles/{bundle.manifest.name}"
    with scratch_dir() as tmp:
        runtime = stage_runtime(Path(tmp) / "runtime")
        runtime_digests = {str(f.relative_to(runtime)): sha256_file(f) for f in sorted(runtime.rglob("*.py"))}
        device.put(bundle.path, folder)
        device.put(runtime, RUNTIME_DIR)
    verify_on_device(device, folder, {**bundle.manifest.files, MANIFEST: sha256_file(bundle.path / MANIFEST)})
    verify_on_device(device, RUNTIME_DIR, runtime_digests)
    requirements = ensure_requirements(device, bundle.manifest.backend, install)
    record = smoke_decode(device, folder, bundle, tolerance_db, target.tflite_threads)
    return {
        "board": target.name,
        "device": device.describe(),
        "arch": arch,
        "bundle": bundle.manifest.name,
        "folder": device.path(folder),
        "files_verified": len(bundle.manifest.files) + 1 + len(runtime_digests),
        "requirements": requirements,
        "smoke": record["smoke"],
        "smoke_latency_s": record["first_s"],
        "peak_rss_kb": record["peak_rss_kb"],
    }


@click.command()
@bundle_option("bundle_path")
@board_option()
@click.option("--host", help="user@addr of the board (ssh); default: the board's own reach record.")
@click.option("--port", type=int, help="ssh port.")
@click.option("--identity", type=click.Path(exists=True, dir_okay=False), help="ssh private key.")
@click.option("--ssh-option", "ssh_options", multiple=True, help="Extra `ssh -o` options (repeatable).")
@deprecated_alias("-o", "ssh_options", "--ssh-option", multiple=True)
@click.option("--workdir", help="Folder on the board (default: the board's reach.workdir, or a temp folder).")
@click.option("--python", "python", help="The board's python (default: the board's reach.python).")
@click.option("--install/--no-install", default=True, show_default=True,
              help="Install missing runtime requirements into <workdir>/venv.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="dB the board's smoke SNR may differ from the manifest's.")
@click.pass_context
def flash(
    ctx, bundle_path, board, host, port, identity, ssh_options, workdir, python, install, tolerance
) -> None:
    """Copy a bundle to a board, verify it there, and run its smoke decode."""
    ssh_options = aliased(ctx, "ssh_options", ssh_options)
    target = board_named(board)
    device = connect(target, host, workdir, python, port, identity, tuple(ssh_options))
    result = flash_bundle(bundle_path, target, device, install, tolerance)
    click.echo(json.dumps(result, indent=1))
