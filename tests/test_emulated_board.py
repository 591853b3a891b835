"""The emulated aarch64 board (qemu user mode over a cached Debian arm64 sysroot): the device
runtime runs a TFLite int8 bundle and a TVM aarch64 module there, and their outputs match the
host's x86 run. Needs qemu-user-static and debootstrap (apt); the sysroot (~20 s) and the
board's aarch64 wheels are built on first use and cached (QMTGAN_CACHE or ~/.cache/qmtgan)."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from helpers import RUN_BUNDLES, run_bundle_here, run_cli, scene_tiles

pytestmark = pytest.mark.qemu

BOARD = "qemu-aarch64"


@pytest.fixture(scope="module")
def board():
    from qmtgan.targets.registry import board

    return board(BOARD)


@pytest.fixture(scope="module")
def emulated_bundles(tiny_bundles):
    """Real int8 (the tiny model's stays within the 1 dB threshold: test_convert_runtime checks its
    int8 input), the rpi4's Cortex-A72 TVM module (the same CPU as the emulated board) and ONNX
    as the host's reference for TVM."""
    out, _ = tiny_bundles
    assert json.loads((out / "tflite-int8" / "manifest.json").read_text())["precision"] == "int8"
    return out


def test_python_on_the_emulated_board_is_aarch64():
    t0 = time.perf_counter()
    proc = run_cli("targets", "emulate", BOARD, "--", "python3", "-c",
                   "import platform, sys; print(platform.machine(), sys.version_info[:2])")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "aarch64"
    print(f"emulated python3 round trip: {time.perf_counter() - t0:.1f} s")
    # the command's exit code is the CLI's; flags after `--` belong to the command
    assert run_cli("targets", "emulate", BOARD, "--", "python3", "-c", "raise SystemExit(3)").returncode == 3


def test_the_guest_sees_an_arm_cpuinfo_and_a_clean_environment(board, tmp_path, monkeypatch):
    from qmtgan.targets.emulate import guest_cpuinfo, run_emulated

    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/lib/x86_64-linux-gnu")  # the host's: never the guest's
    monkeypatch.setenv("PYTHONPATH", "/host-only")

    code = ("import os, sys; print(open('/proc/cpuinfo').read()); print('PATHS', sys.path); "
            "print('LD', os.environ.get('LD_LIBRARY_PATH'))")
    proc = run_emulated(board, ["python3", "-c", code], env={"PYTHONPATH": str(tmp_path)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert guest_cpuinfo(board) in proc.stdout and "CPU part\t: 0xd08" in proc.stdout
    assert proc.stdout.count("processor\t:") == board.tvm_target["num-cores"]
    paths = proc.stdout.split("PATHS", 1)[1]
    assert "site-packages" in paths and str(tmp_path) in paths and "/host-only" not in paths
    assert "LD None" in proc.stdout


def test_a_cross_compiled_program_runs_with_the_sysroot_libraries(board, tmp_path):
    import subprocess

    from qmtgan.targets.emulate import run_emulated

    src = tmp_path / "hello.cc"
    src.write_text('#include <iostream>\n#include <string>\nint main(int argc, char** argv) {\n'
                   '  std::cout << "hello " << std::string(argv[1]) << std::endl; return 7; }\n')
    subprocess.run([board.compiler(), "-O1", "-o", str(tmp_path / "hello"), str(src)], check=True)
    proc = run_emulated(board, ["./hello", "board"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 7 and proc.stdout.strip() == "hello board", proc.stderr


def test_int8_tflite_and_tvm_aarch64_match_the_host(board, emulated_bundles, small_pair_dir, tmp_path):
    from qmtgan.runtime.bundle import load_bundle
    from qmtgan.targets.device_files import stage_runtime
    from qmtgan.targets.emulate import run_emulated

    out = emulated_bundles
    int8, tvm, onnx = (load_bundle(out / name) for name in ("tflite-int8", "tvm-rpi4", "onnx"))
    assert int8.manifest.precision == "int8" and int8.manifest.record["input"]["dtype"] == "int8"
    assert tvm.manifest.elf_machine == "aarch64" and tvm.manifest.record["tvm_target"]["mcpu"] == "cortex-a72"
    tiles = scene_tiles(int8.normalization, small_pair_dir, tmp_path / "tiles.npy")

    runtime = stage_runtime(tmp_path / "runtime")
    t0 = time.perf_counter()
    proc = run_emulated(board, ["python3", "-c", RUN_BUNDLES, tmp_path / "tiles.npy", out / "tflite-int8",
                                tmp_path / "int8.npy", out / "tvm-rpi4", tmp_path / "tvm.npy",
                                out / "onnx-int8", tmp_path / "onnx-int8.npy"],
                        env={"PYTHONPATH": str(runtime)}, timeout=600, cwd=tmp_path)  # not the repo's qmtgan/
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    guest_s = {
        line.split()[0].rsplit("/", 1)[-1]: float(line.split()[1]) for line in proc.stdout.splitlines()
    }

    host_int8, host_int8_s = run_bundle_here(int8, tiles)
    host_onnx, host_onnx_s = run_bundle_here(onnx, tiles)
    emu_int8 = np.load(tmp_path / "int8.npy", allow_pickle=False)
    emu_tvm = np.load(tmp_path / "tvm.npy", allow_pickle=False)
    assert emu_int8.shape == emu_tvm.shape == tiles.shape
    step = int8.manifest.record["output"]["quantization"][0]
    d_int8 = float(np.max(np.abs(emu_int8 - host_int8)))
    d_tvm = float(np.max(np.abs(emu_tvm - host_onnx)))
    print(json.dumps({"guest_wall_s": round(wall, 1), "int8_max_abs_diff": d_int8, "int8_step": step,
                      "int8_differing_values": int(np.count_nonzero(emu_int8 != host_int8)),
                      "tvm_aarch64_vs_onnxruntime_max_abs_diff": d_tvm,
                      "s_per_tile": {"emulated": guest_s, "host tflite-int8": host_int8_s,
                                     "host onnx": host_onnx_s}}))
    # XNNPACK int8 on the emulated Cortex-A72 vs on x86: at most one quantization step apart
    assert d_int8 <= step * 1.001
    assert d_tvm < 1e-4
    assert np.abs(emu_tvm).max() > 0.01  # a real output, not zeros
    # ONNX Runtime's int8 kernels differ between aarch64 and x86 (accumulation, requantization):
    # stated tolerance, 0.02 in the [-1, 1] output (about 2.5 steps of an 8-bit output)
    emu_onnx8 = np.load(tmp_path / "onnx-int8.npy", allow_pickle=False)
    host_onnx8, _ = run_bundle_here(load_bundle(out / "onnx-int8"), tiles)
    assert float(np.max(np.abs(emu_onnx8 - host_onnx8))) < 0.02


def test_boards_that_cannot_be_emulated_and_missing_tools(board, tmp_path, monkeypatch):
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.targets import sysroot
    from qmtgan.targets.emulate import emulated_argv

    proc = run_cli("targets", "emulate", "rpi4", "--", "python3", "-c", "pass")
    assert proc.returncode == 1 and "not emulated" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("targets", "emulate", "pi9", "--", "python3")
    assert proc.returncode == 1 and "unknown target 'pi9'" in proc.stderr
    ghost = dataclasses.replace(board, reach=dataclasses.replace(board.reach, qemu="qemu-ghost-static",
                                                                 qemu_apt_package="qemu-ghost"))
    with pytest.raises(QmtganError, match="apt-get install qemu-ghost"):
        emulated_argv(ghost, ["python3"])
    # no cached sysroot and no debootstrap: the error names the package
    monkeypatch.setenv("QMTGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sysroot, "DEBOOTSTRAP", "debootstrap-ghost")
    with pytest.raises(QmtganError, match="apt-get install debootstrap"):
        sysroot.ensure_sysroot(board)
    assert not (tmp_path / "cache" / "sysroot" / "bookworm-arm64").exists()


def test_the_board_decodes_a_scene_streaming_like_the_host(board, emulated_bundles, small_pair_dir, tmp_path):
    """The device's scene decoder (`python -m qmtgan.runtime.stream`: numpy and LiteRT, a .npy
    scene since the board has no rasterio) on the emulated board: the same scene as on the host,
    within one output quantization step per band."""
    import subprocess
    import sys

    from qmtgan.runtime.bundle import load_bundle
    from qmtgan.runtime.raster import read_reference
    from qmtgan.targets.device_files import stage_runtime
    from qmtgan.targets.emulate import run_emulated

    out = emulated_bundles
    np.save(
        tmp_path / "reference.npy", read_reference(small_pair_dir / "reference.tif").data.astype(np.uint16)
    )
    args = ["-m", "qmtgan.runtime.stream", "--bundle", str(out / "tflite-int8"), "--reference",
            str(tmp_path / "reference.npy"), "--threads", "2", "-o"]
    runtime = stage_runtime(tmp_path / "runtime")
    proc = run_emulated(board, ["python3", *args, tmp_path / "board.npy"], env={"PYTHONPATH": str(runtime)},
                        timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["tiles"] == 12 and record["maxrss_mib"] > 0
    host = subprocess.run([sys.executable, *args, str(tmp_path / "host.npy")], capture_output=True, text=True,
                          timeout=300)
    assert host.returncode == 0, host.stderr
    bundle = load_bundle(out / "tflite-int8")
    norm, scale = bundle.normalization, bundle.manifest.record["output"]["quantization"][0]
    step_dn = scale * (np.asarray(norm.high) - np.asarray(norm.low)) / 2  # one output LSB, in DN, per band
    diff = np.abs(np.load(tmp_path / "board.npy") - np.load(tmp_path / "host.npy"))
    assert (diff <= step_dn[:, None, None] * 1.001 + 1e-3).all(), float(diff.max())


@pytest.mark.network
def test_a_sysroot_build_killed_midway_is_never_used_and_a_rerun_completes(board, tmp_path, monkeypatch):
    """kill -9 the builder while debootstrap downloads: no sysroot under the final name, the
    debootstrap it started dies with it, and the next build sweeps the half-built tree and
    completes (downloads the arm64 base again: network)."""
    import os
    import signal
    import subprocess
    import sys

    from qmtgan.targets import sysroot

    cache = tmp_path / "cache"
    code = ("from qmtgan.targets.registry import board; from qmtgan.targets.sysroot import ensure_sysroot; "
            f"ensure_sysroot(board({BOARD!r}))")
    builder = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "QMTGAN_CACHE": str(cache)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parent = cache / "sysroot"
    deadline = time.monotonic() + 300
    while not any(len(list(t.glob("var/cache/apt/archives/*.deb"))) >= 5
                  for t in parent.glob(".bookworm-arm64.tmp-*")):
        assert builder.poll() is None, f"the build ended before it could be killed: {builder.stderr.read()}"
        assert time.monotonic() < deadline, "debootstrap downloaded nothing in 300 s"
        time.sleep(0.2)
    os.kill(builder.pid, signal.SIGKILL)
    builder.wait()
    half_built = list(parent.glob(".bookworm-arm64.tmp-*"))
    assert len(half_built) == 1 and not (parent / "bookworm-arm64").exists()
    # debootstrap got SIGKILL with its parent (its last download may finish writing first)
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", str(half_built[0])], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "debootstrap outlived the killed build"
        time.sleep(0.2)

    monkeypatch.setenv("QMTGAN_CACHE", str(cache))
    dest = sysroot.ensure_sysroot(board, log=lambda msg: None)  # checks the guest Python runs
    assert dest == parent / "bookworm-arm64" and (dest / sysroot.STAMP).is_file()
    assert not list(parent.glob(".bookworm-arm64.tmp-*"))


def test_entropy_coded_payloads_decode_on_the_board_to_the_hosts_weights_bit_for_bit(board, tmp_path):
    """Every code coder and both codebook methods: the board (numpy, pyppmd, zstandard, liblzma
    on aarch64) dequantizes each payload to exactly the host's float32 weights."""
    import hashlib

    from qmtgan.quantize.codec import to_payload
    from qmtgan.quantize.model import quantize_tensors
    from qmtgan.quantize.policy import Policy, generator_tensors
    from qmtgan.runtime import payload as fmt
    from qmtgan.runtime.normalization import Normalization
    from qmtgan.targets.device_files import stage_runtime
    from qmtgan.targets.emulate import run_emulated
    from qmtgan.train.models.registry import build_generator, default_config

    tensors = generator_tensors(build_generator(default_config("multitempgan", patch_size=64, ngf=4)))
    norm = Normalization((0.0,) * 12, (1.0,) * 12)
    expected = {}
    for method, bits, coder in [("kmeans", 4, "ppmd"), ("pwl", 3, "lzma"), ("symmetric", 8, "zstd"),
                                ("integer", 12, "ppmd"), ("symmetric", 5, "packed")]:
        payload = to_payload(quantize_tensors(tensors, Policy(method, bits=bits)), {}, norm, None)
        name = f"{method}{bits}-{coder}.qmtg"
        fmt.write(tmp_path / name, payload, coder)
        weights = fmt.read(tmp_path / name).weights()
        expected[name] = hashlib.sha256(b"".join(w.tobytes() for w in weights)).hexdigest()
    script = ("import hashlib, sys\nfrom qmtgan.runtime import payload\n"
              "for name in sys.argv[1:]:\n"
              "    w = payload.read(name).weights()\n"
              "    print(name, hashlib.sha256(b''.join(x.tobytes() for x in w)).hexdigest())\n")
    runtime = stage_runtime(tmp_path / "runtime")
    proc = run_emulated(board, ["python3", "-c", script, *sorted(expected)], env={"PYTHONPATH": str(runtime)},
                        timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split() for line in proc.stdout.strip().splitlines())
    assert got == expected
