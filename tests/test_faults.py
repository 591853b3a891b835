"""Fault injection: a real process killed with SIGKILL during its writes (QMTGAN_KILL_BEFORE_RENAME
makes it kill itself with everything written but not yet renamed, the last moment a kill can
land), and a full disk (a small tmpfs in a private mount namespace). After each fault the
previous good state is intact, nothing half-written is taken for a good file, and a rerun
completes and removes what the killed process left."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import run_cli

pytestmark = pytest.mark.slow


def _cli_killed_at(pattern: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "QMTGAN_KILL_BEFORE_RENAME": pattern}
    return subprocess.run([sys.executable, "-m", "qmtgan", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=900)


def _digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes()
                                       for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_bundle_killed_while_written_leaves_the_previous_one(tiny_run, small_pair_dir, tmp_path):
    from qmtgan.runtime.bundle import load_bundle

    out = tmp_path / "bundles"
    args = ("convert", "onnx", "--model", tiny_run[0], "--pair", small_pair_dir, "--tile", "32", "-o", out)
    assert run_cli(*args).returncode == 0
    before = {p: _digest(out / p) for p in ("onnx", "onnx.tar.gz")}
    for pattern in ("onnx", "onnx.tar.gz"):  # the folder, then its archive
        proc = _cli_killed_at(pattern, *args)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert _digest(out / pattern) == before[pattern]  # the previous good one, untouched
        assert any(name.startswith(f".{pattern}.tmp-") for name in _leftovers(out))
        load_bundle(out / "onnx")  # still a complete, verified bundle
        load_bundle(out / "onnx.tar.gz")
    assert run_cli(*args).returncode == 0
    assert _leftovers(out) == []  # the rerun removed the killed writes' temporaries
    load_bundle(out / "onnx.tar.gz")


def test_a_payload_killed_while_written_leaves_the_previous_one(tiny_run, small_pair_dir, tmp_path):
    from qmtgan.runtime import payload as fmt

    dest = tmp_path / "x.qmtg"
    encode = lambda bits: ("encode", "--reference", small_pair_dir / "reference.tif", "--target",
                           small_pair_dir / "target.tif", "--model", tiny_run[0], "--method", "symmetric",
                           "--bits", str(bits), "-o", dest)
    assert run_cli(*encode(8)).returncode == 0
    before = _digest(dest)
    proc = _cli_killed_at("x.qmtg", *encode(4))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _digest(dest) == before  # still the 8-bit payload, and it still decodes
    assert {t["bits"] for t in fmt.read(dest).header["tensors"]} >= {8}
    assert [
        n for n in _leftovers(tmp_path) if n.startswith(".x.qmtg.tmp-")
    ]  # the killed write's, by name only
    assert run_cli(*encode(4)).returncode == 0
    assert _leftovers(tmp_path) == [] and _digest(dest) != before


def test_a_bench_report_killed_while_written_leaves_the_previous_one(
    tiny_bundles, tiny_run, small_pair_dir, tmp_path
):
    out, _ = tiny_bundles
    report = tmp_path / "bench"
    args = ("bench", "--bundles", out, "--only", "onnx", "--model", tiny_run[0], "--pair", small_pair_dir,
            "--tiles", "1", "--runs", "1", "--min-time", "0", "--threads", "1", "--out", report)
    assert run_cli(*args, "--repeat", "2").returncode == 0  # the matrix twice in one invocation (a soak)
    doc = json.loads((report / "bench.json").read_text())
    passes = [r["pass"] for r in doc["records"]]
    assert passes == sorted(passes) and passes.count(1) == passes.count(2) >= 1 and set(passes) == {1, 2}
    assert all(r["status"] == "ok" for r in doc["records"])
    assert "Repeat stability" in (report / "bench.md").read_text()
    before = _digest(report / "bench.json")
    proc = _cli_killed_at("bench.json", *args)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _digest(report / "bench.json") == before
    json.loads((report / "bench.json").read_text())
    assert run_cli(*args).returncode == 0 and _leftovers(report) == []


def _in_small_tmpfs(size: str, script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `script` (sh) with $D a fresh tmpfs of `size`, in a private mount namespace."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("a full-disk test needs root and unshare (util-linux) for a private tmpfs")
    mount = Path(tempfile.mkdtemp(prefix="small-", dir=tmp_path))
    return subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {mount} && "
                           f"D={mount}; export D; {script}"], capture_output=True, text=True, timeout=900)


def test_a_full_disk_is_one_clear_error_and_leaves_nothing(tiny_run, tiny_bundles, small_pair_dir, tmp_path):
    qmtgan = f"{sys.executable} -m qmtgan"
    # onnx and onnx-int8 bundles with their archives (about 0.3 MB) onto 200 kB: a write fails part
    # way; what is there is complete (every folder and archive loads and verifies), no temporary
    # (the BUNDLE.reports folders beside the bundles are diagnostics, not bundles)
    verify = (f"{sys.executable} -c 'import pathlib, sys; from qmtgan.runtime.bundle import load_bundle; "
              f"[load_bundle(p) for p in pathlib.Path(sys.argv[1]).iterdir() "
              f"if not p.name.endswith(\".reports\")]' $D/b && echo verified")
    proc = _in_small_tmpfs(
        "200k",
        f"{qmtgan} convert onnx --model {tiny_run[0]} --pair {small_pair_dir} "
        f"--tile 32 -o $D/b; echo rc=$?; {verify}; echo hidden=$(ls -A $D/b | grep -c '^[.]')",
        tmp_path,
    )
    assert "rc=1" in proc.stdout and "no space left on the device" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "verified" in proc.stdout and "hidden=0" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    # a decode refused before it starts: the output could not fit
    out, _ = tiny_bundles
    proc = _in_small_tmpfs(
        "64k",
        f"{qmtgan} run --bundle {out / 'onnx'} --reference {small_pair_dir}/reference.tif "
        f"-o $D/out.tif; echo rc=$?; ls -A $D | wc -l",
        tmp_path,
    )
    assert "rc=1" in proc.stdout and "MiB free" in proc.stderr, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("0")
