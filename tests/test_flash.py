"""`qmtgan flash` against a real sshd on 127.0.0.1: copy, verify on the board, smoke decode."""

from __future__ import annotations

import json
import sys

import pytest

from helpers import run_cli
from sshd import loopback_sshd


@pytest.fixture(scope="module")
def ssh(tmp_path_factory):
    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def _flash(bundle, target, ssh, workdir, *extra):
    return run_cli("flash", "--bundle", bundle, "--board", target, *ssh.flash_args(), "--workdir", workdir,
                   "--python", sys.executable, *extra)


def test_flash_copies_verifies_and_smoke_decodes_over_ssh(tiny_bundles, ssh, tmp_path):
    out, records = tiny_bundles
    proc = _flash(out / "tflite-int8.tar.gz", "host-x86_64", ssh, tmp_path / "board")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    manifest = json.loads((out / "tflite-int8" / "manifest.json").read_text())
    assert result["smoke"]["ok"] and result["requirements"] == "present"
    assert abs(result["smoke"]["snr_db"] - manifest["smoke"]["snr_db"]) <= 0.05
    assert (tmp_path / "board" / "bundles" / "tflite-int8" / "model.tflite").is_file()
    assert (tmp_path / "board" / "runtime" / "qmtgan" / "runtime" / "probe.py").is_file()
    assert result["files_verified"] > len(manifest["files"])


def test_flash_refuses_wrong_architecture_unreachable_host_and_missing_requirements(
    tiny_bundles, ssh, tmp_path
):
    out, _ = tiny_bundles
    wrong_module = _flash(out / "tvm-rpi4", "host-x86_64", ssh, tmp_path / "b1")
    assert (
        wrong_module.returncode == 1
        and "built for aarch64, board host-x86_64 is x86_64" in wrong_module.stderr
    )
    wrong_board = _flash(out / "onnx", "rpi4", ssh, tmp_path / "b2")
    assert (
        wrong_board.returncode == 1
        and "reports architecture x86_64, board rpi4 is aarch64" in wrong_board.stderr
    )
    unreachable = run_cli(
        "flash",
        "--bundle",
        out / "onnx",
        "--board",
        "host-x86_64",
        "--host",
        "nobody@127.0.0.1",
        "--port",
        "1",
        "--workdir",
        tmp_path / "b3",
    )
    assert unreachable.returncode == 1 and "cannot reach nobody@127.0.0.1 over ssh" in unreachable.stderr
    unknown = run_cli("flash", "--bundle", out / "onnx", "--board", "pi9", "--host", ssh.host)
    assert unknown.returncode == 1 and "unknown target 'pi9'" in unknown.stderr
    # a python without the backend, and installing refused: named, not a traceback
    missing = run_cli("flash", "--bundle", out / "onnx", "--board", "host-x86_64", *ssh.flash_args(),
                      "--workdir", tmp_path / "b4", "--python", "/usr/bin/python3", "--no-install")
    assert missing.returncode == 1 and "lacks the runtime's requirements" in missing.stderr, missing.stderr


def test_a_file_altered_on_the_board_fails_verification(tiny_bundles, ssh, tmp_path):
    from qmtgan.runtime.bundle import load_bundle
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.targets.devices import SshDevice
    from qmtgan.targets.flash import verify_on_device
    from qmtgan.targets.registry import board

    out, _ = tiny_bundles
    bundle = load_bundle(out / "onnx")
    opts = ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR")
    device = SshDevice(board("host-x86_64"), ssh.host, str(tmp_path / "board"), sys.executable, ssh.port,
                       str(ssh.identity), opts)
    device.put(bundle.path, "bundles/onnx")
    verify_on_device(device, "bundles/onnx", bundle.manifest.files)
    model = tmp_path / "board" / "bundles" / "onnx" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    with pytest.raises(QmtganError, match="checksum mismatch after copy in bundles/onnx: model.onnx"):
        verify_on_device(device, "bundles/onnx", bundle.manifest.files)


@pytest.mark.qemu
def test_flash_to_the_emulated_board_reproduces_the_int8_smoke_snr(tiny_bundles, tmp_path):
    out, _ = tiny_bundles
    proc = run_cli(
        "flash", "--bundle", out / "tflite-int8", "--board", "qemu-aarch64", "--workdir", tmp_path / "emu"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    manifest = json.loads((out / "tflite-int8" / "manifest.json").read_text())
    assert result["arch"] == "aarch64" and result["requirements"] == "present"
    # XNNPACK int8 on the emulated Cortex-A72 reproduces the x86 result; the SNR's float sums
    # may round differently on another CPU, so agreement is to 1e-6 dB, not bit for bit
    assert result["smoke"]["snr_db"] == pytest.approx(manifest["smoke"]["snr_db"], abs=1e-6)


def test_a_board_that_drops_the_connection_mid_copy_keeps_its_previous_bundle(tiny_bundles, tmp_path):
    """The board's sshd killed (with its sessions) while it unpacks a bundle: flash fails with one
    clear error, the board still holds the previous, verified bundle, and flashing again over a
    new connection completes. The board's `tar` is slowed (a wrapper first on its PATH, set by
    the sshd) so that the kill lands during the copy."""
    import hashlib
    import subprocess
    import time

    import psutil

    from sshd import loopback_sshd

    out, _ = tiny_bundles
    slow = tmp_path / "slowbin"
    slow.mkdir()
    (slow / "tar").write_text("#!/bin/sh\nsleep 3\nexec /usr/bin/env PATH=/usr/bin:/bin tar \"$@\"\n")
    (slow / "tar").chmod(0o755)
    board = tmp_path / "board"
    installed = board / "bundles" / "tflite-int8"
    digest = lambda: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in installed.iterdir()}
    with loopback_sshd(tmp_path / "sshd1") as ssh:
        assert _flash(out / "tflite-int8", "host-x86_64", ssh, board).returncode == 0
    before = digest()
    with loopback_sshd(tmp_path / "sshd2", (f"SetEnv PATH={slow}:/usr/bin:/bin",)) as ssh:
        argv = [sys.executable, "-m", "qmtgan", "flash", "--bundle", str(out / "tflite-int8"), "--board",
                "host-x86_64", *ssh.flash_args(), "--workdir", str(board), "--python", sys.executable]
        flash = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        partial = board / "bundles" / "tflite-int8.tmp-copy"
        for _ in range(300):  # until the board has started unpacking
            if partial.exists():
                break
            time.sleep(0.05)
        assert partial.exists(), "the copy never started"
        server = psutil.Process(ssh.pid)
        for p in [*server.children(recursive=True), server]:  # the connection drops
            p.kill()
        _, stderr = flash.communicate(timeout=120)
    assert flash.returncode == 1 and "Traceback" not in stderr, stderr
    assert "copy to" in stderr or "ssh" in stderr, stderr
    assert digest() == before  # the previous bundle, whole
    with loopback_sshd(tmp_path / "sshd3") as ssh:
        proc = _flash(out / "tflite-int8", "host-x86_64", ssh, board)
        assert proc.returncode == 0, proc.stderr
    assert not partial.exists() and digest() == before  # same bundle, copied again and verified
