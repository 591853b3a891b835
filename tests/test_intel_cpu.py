"""The int8 bundles on an Intel CPU without VNNI: this venv's python run by qemu-x86_64 user mode
as an Intel Haswell (AVX2 and FMA; no AVX-512, no VNNI; CPUID vendor GenuineIntel), so numpy,
XNNPACK and ONNX Runtime pick the kernels they pick on such a Xeon. Their outputs must match this
host's within the tolerances the ARM board is held to (test_emulated_board.py)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import RUN_BUNDLES, run_bundle_here, scene_tiles

pytestmark = pytest.mark.qemu

CPU = "Haswell-noTSX"
CPU_FEATURES = ("from numpy._core._multiarray_umath import __cpu_features__ as f; "
                "print(f['AVX2'], f['FMA3'], f['AVX512F'])")


def run_as_intel_haswell(*args) -> subprocess.CompletedProcess:
    """This venv's python (argv[0] names the venv, so its packages are found) on the emulated CPU."""
    if platform.machine() != "x86_64":
        pytest.skip("the emulated Intel CPU runs this host's x86-64 python: an x86-64 host only")
    qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    assert qemu, "qemu-user-static is missing (make deps installs it)"
    return subprocess.run([qemu, "-cpu", CPU, "-0", sys.executable, os.path.realpath(sys.executable),
                           *map(str, args)], capture_output=True, text=True, timeout=900)


def test_int8_bundles_decode_alike_on_an_intel_cpu_without_vnni(tiny_bundles, small_pair_dir, tmp_path):
    from qmtgan.runtime.bundle import load_bundle

    cpu = run_as_intel_haswell("-c", CPU_FEATURES)
    assert cpu.returncode == 0, cpu.stderr[-2000:]
    assert cpu.stdout.split() == ["True", "True", "False"]  # AVX2 and FMA, no AVX-512: not this host's CPU

    out, _ = tiny_bundles
    int8, onnx8 = load_bundle(out / "tflite-int8"), load_bundle(out / "onnx-int8")
    tiles = scene_tiles(int8.normalization, small_pair_dir, tmp_path / "tiles.npy")
    proc = run_as_intel_haswell("-c", RUN_BUNDLES, tmp_path / "tiles.npy", out / "tflite-int8",
                                tmp_path / "int8.npy", out / "onnx-int8", tmp_path / "onnx8.npy")
    assert proc.returncode == 0, proc.stderr[-3000:]

    step = int8.manifest.record["output"]["quantization"][0]
    here_int8, here_onnx8 = run_bundle_here(int8, tiles)[0], run_bundle_here(onnx8, tiles)[0]
    assert float(np.max(np.abs(np.load(tmp_path / "int8.npy") - here_int8))) <= step * 1.001
    # 8-bit signed weights saturate VPMADDUBSW on AVX2 without VNNI (0.48 here); 7-bit ones cannot
    assert float(np.max(np.abs(np.load(tmp_path / "onnx8.npy") - here_onnx8))) < 0.02
