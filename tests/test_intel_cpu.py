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

from helpers import RUN_BUNDLES

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
    from qmtgan.runtime.raster import read_reference

    cpu = run_as_intel_haswell("-c", CPU_FEATURES)
    assert cpu.returncode == 0, cpu.stderr[-2000:]
    assert cpu.stdout.split() == ["True", "True", "False"]  # AVX2 and FMA, no AVX-512: not this host's CPU

    out, _ = tiny_bundles
    int8, onnx8 = load_bundle(out / "tflite-int8"), load_bundle(out / "onnx-int8")
    x = int8.normalization.forward(read_reference(small_pair_dir / "reference.tif").data).transpose(1, 2, 0)
    tiles = np.stack([x[r:r + 32, c:c + 32] for r in (0, 32) for c in (0, 32, 64)]).astype(np.float32)
    np.save(tmp_path / "tiles.npy", tiles, allow_pickle=False)
    proc = run_as_intel_haswell("-c", RUN_BUNDLES, tmp_path / "tiles.npy", out / "tflite-int8",
                                tmp_path / "int8.npy", out / "onnx-int8", tmp_path / "onnx8.npy")
    assert proc.returncode == 0, proc.stderr[-3000:]

    def here(bundle):
        backend = bundle.backend(threads=2)
        return np.stack([backend.run(tile[None])[0] for tile in tiles])

    step = int8.manifest.record["output"]["quantization"][0]
    assert float(np.max(np.abs(np.load(tmp_path / "int8.npy") - here(int8)))) <= step * 1.001
    # ONNX Runtime's int8 with signed weights saturates on AVX2 without VNNI (0.48 here); U8U8 does not
    assert float(np.max(np.abs(np.load(tmp_path / "onnx8.npy") - here(onnx8)))) < 0.02
