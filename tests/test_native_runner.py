"""The C++ runner qmtg-run (native/, CMakeLists.txt): built natively with CMake and cross-compiled
for aarch64, run on real TVM modules of the tiny generator (host module on this machine, the rpi4
module under qemu on the emulated board), compared with the Python backends; its bad inputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli

TILE = 32


@pytest.fixture(scope="module")
def modules(tiny_bundles):
    """The tiny generator's onnx, tvm-host-x86_64 and tvm-rpi4 bundles at TILE x TILE."""
    return tiny_bundles[0]


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    """qmtg-run for the host (through the CLI) and for aarch64 (through the API), built once."""
    from qmtgan.convert.tvm_build import elf_machine
    from qmtgan.targets.native import build_runner
    from qmtgan.targets.registry import board

    root = tmp_path_factory.mktemp("native-build")
    proc = run_cli("targets", "build-runner", "--board", "host-x86_64", "-o", root / "host")
    assert proc.returncode == 0, proc.stderr
    host = Path(proc.stdout.strip().splitlines()[-1])
    arm = build_runner(board("qemu-aarch64"), root / "aarch64")
    assert host == root / "host" / "qmtg-run" and host.is_file()
    assert elf_machine(host) == "x86_64" and elf_machine(arm) == "aarch64"
    # self-contained build folders: the runtime libraries next to the binary, of the same architecture
    for binary, arch in ((host, "x86_64"), (arm, "aarch64")):
        for lib in ("libtvm_runtime.so", "libtvm_ffi.so"):
            assert elf_machine(binary.parent / "lib" / lib) == arch
    return host, arm


@pytest.fixture(scope="module")
def tiles(modules, small_pair_dir) -> np.ndarray:
    """Four real normalized (1, 32, 32, 12) tiles of the reference image, stacked: (4, 32, 32, 12)."""
    from qmtgan.runtime.bundle import load_bundle
    from qmtgan.runtime.raster import read_reference

    norm = load_bundle(modules / "onnx").normalization
    x = norm.forward(read_reference(small_pair_dir / "reference.tif").data[:, :2 * TILE, :2 * TILE])
    x = np.ascontiguousarray(np.transpose(x, (1, 2, 0)), dtype=np.float32)
    return np.stack([x[r:r + TILE, c:c + TILE] for r in (0, TILE) for c in (0, TILE)])


@pytest.fixture(scope="module")
def python_outputs(modules, tiles):
    from qmtgan.runtime.backends import OnnxRuntimeBackend, TVMBackend

    tvm = TVMBackend(modules / "tvm-host-x86_64" / "model.so", threads=2)
    ort = OnnxRuntimeBackend(modules / "onnx" / "model.onnx", threads=2)
    return (np.concatenate([tvm.run(t[None]) for t in tiles]),
            np.concatenate([ort.run(t[None]) for t in tiles]))


def _stats(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def _check_stats(stats: dict, tiles: int, runs: int, module: str) -> None:
    assert stats["tiles"] == tiles and stats["runs"] == runs and stats["module"] == module
    for key in ("first_ms", "mean_ms", "p50_ms", "p90_ms", "min_ms", "max_ms", "init_ms"):
        assert stats[key] > 0, key
    assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["max_ms"]
    assert stats["min_ms"] <= stats["mean_ms"] <= stats["max_ms"]
    assert stats["peak_rss_kb"] > 0 and stats["threads"] == 2
    # the runner's own peak, not its parent's (getrusage's ru_maxrss survives execve from pytest)
    assert stats["peak_rss_kb"] < 150_000


def test_host_runner_matches_the_python_backends(runners, modules, tiles, python_outputs, tmp_path):
    host, _ = runners
    np.save(tmp_path / "tiles.npy", tiles)
    (tmp_path / "model.so").write_bytes((modules / "tvm-host-x86_64" / "model.so").read_bytes())
    # a bare module name (no slash) is made a path by the runner, not looked up by dlopen
    proc = subprocess.run([str(host), "--module", "model.so", "--input", "tiles.npy", "--output", "out.npy",
                           "--warmup", "2", "--runs", "3", "--threads", "2"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stats = _stats(proc.stdout)
    _check_stats(stats, 4, 3, "./model.so")
    assert stats["output_shape"] == [4, TILE, TILE, 12]
    out = np.load(tmp_path / "out.npy")
    tvm_out, ort_out = python_outputs
    assert out.dtype == np.float32 and out.shape == tiles.shape
    assert np.abs(out - tvm_out).max() < 1e-5
    assert np.abs(out - ort_out).max() < 1e-4
    assert out.std() > 0.05  # a real image, not a constant

    # the same tiles as raw float32 with an explicit shape give the same output
    tiles.tofile(tmp_path / "tiles.f32")
    proc = subprocess.run([str(host), "--module", "./model.so", "--input", "tiles.f32", "--raw", "--shape",
                           f"4,{TILE},{TILE},12", "--output", "raw.npy", "--threads", "2"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "raw.npy"), out)
    # and so do they in a .npy of format version 2.0 (4-byte header length)
    with open(tmp_path / "tiles-v2.npy", "wb") as f:
        np.lib.format.write_array(f, tiles, version=(2, 0))
    proc = subprocess.run(
        [str(host), "--module", "./model.so", "--input", "tiles-v2.npy", "--output", "v2.npy"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "v2.npy"), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.so", "out.npy", "raw.npy", "tiles-v2.npy",
                                                          "tiles.f32", "tiles.npy", "v2.npy"]


@pytest.mark.qemu
def test_aarch64_runner_under_qemu_matches_the_host(runners, modules, tiles, python_outputs, tmp_path):
    from qmtgan.targets.emulate import run_emulated
    from qmtgan.targets.registry import board

    _, arm = runners
    np.save(tmp_path / "tiles.npy", tiles)
    module = modules / "tvm-rpi4" / "model.so"
    proc = run_emulated(board("qemu-aarch64"), [arm, "--module", module, "--input", "tiles.npy",
                                                "--output", "out.npy", "--runs", "2", "--threads", "2"],
                        cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stats = _stats(proc.stdout)
    _check_stats(stats, 4, 2, str(module))
    out = np.load(tmp_path / "out.npy")
    tvm_out, ort_out = python_outputs
    assert out.shape == tiles.shape
    assert np.abs(out - tvm_out).max() < 1e-4
    assert np.abs(out - ort_out).max() < 1e-4


def test_bad_inputs_fail_clearly_without_output(runners, modules, tiles, tmp_path):
    host, _ = runners
    module = str(modules / "tvm-host-x86_64" / "model.so")
    np.save(tmp_path / "f64.npy", tiles.astype(np.float64))
    tiles.tofile(tmp_path / "short.f32")
    with open(tmp_path / "short.f32", "r+b") as f:
        f.truncate(tiles.nbytes - 100)
    np.save(tmp_path / "small.npy", tiles[:, :16, :16])
    np.save(tmp_path / "fortran.npy", np.asfortranarray(tiles))
    good = tmp_path / "good.npy"
    np.save(good, tiles)
    np.save(tmp_path / "cut.npy", tiles)
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-8])
    cases = [
        (
            ["--module", module, "--input", "f64.npy"],
            ["f64.npy", "expected dtype float32", "'<f8' (float64)"],
        ),
        (
            ["--module", module, "--input", "short.f32", "--raw", "--shape", f"4,{TILE},{TILE},12"],
            ["short.f32", f"is {tiles.nbytes} bytes", f"found {tiles.nbytes - 100} bytes", "truncated"],
        ),
        (["--module", module, "--input", "fortran.npy"], ["fortran.npy", "expected C order"]),
        (["--module", module, "--input", "cut.npy"], ["cut.npy", f"needs {tiles.nbytes} bytes", "truncated"]),
        (
            ["--module", str(tmp_path / "missing.so"), "--input", "good.npy"],
            ["missing.so", "module not found"],
        ),
        (
            ["--module", str(modules / "tvm-rpi4" / "model.so"), "--input", "good.npy"],
            ["module is built for aarch64, this qmtg-run is x86_64"],
        ),
        (
            ["--module", module, "--input", "small.npy"],
            ["on input of shape (1, 16, 16, 12) failed", "mismatch"],
        ),
        (["--module", module, "--input", "good.npy", "--raw"], ["--raw and --shape"]),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, needles in cases:
        proc = subprocess.run([str(host), *args, "--output", "out.npy"], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)
        assert proc.returncode != 0, args
        assert proc.stdout == "", args
        for needle in needles:
            assert needle in proc.stderr, (needle, proc.stderr)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, args  # no output, no temp file


def test_build_errors_name_what_is_missing(monkeypatch, tmp_path):
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.targets import native
    from qmtgan.targets.registry import Board, board

    ghost = Board("ghost", "", "aarch64", "ghost-linux-gnu-g++", "g++-ghost-linux-gnu", {})
    with pytest.raises(QmtganError, match=r"apt-get install g\+\+-ghost-linux-gnu"):
        native.build_runner(ghost, tmp_path / "ghost")
    # wheels without the expected libraries: CMake's own message comes back
    bogus = {"TVM_RUNTIME_LIB_DIR": tmp_path, "TVM_FFI_LIB_DIR": tmp_path, "TVM_FFI_INCLUDE_DIR": tmp_path}
    monkeypatch.setattr(native, "tvm_paths", lambda b: bogus)
    with pytest.raises(
        QmtganError, match=r"(?s)configuring qmtg-run for host-x86_64 failed.*has no libtvm_runtime"
    ):
        native.build_runner(board("host-x86_64"), tmp_path / "bogus")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(QmtganError, match="apt-get install cmake"):
        native.build_runner(board("host-x86_64"), tmp_path / "nocmake")
    proc = run_cli("targets", "build-runner", "--board", "pi9", "-o", tmp_path / "x")
    assert proc.returncode == 1 and "unknown target 'pi9'" in proc.stderr


NPY_BATCH = 50  # files per binary call (one hypothesis example)


def test_npy_reader_of_the_binary_under_fuzzing(runners, tmp_path):
    """The C++ .npy reader, fuzzed through `qmtg-run --check-input`: headers mutated from a real
    numpy file (descr, order, shape, lengths, junk) and random bytes. Every file gets one line:
    'ok' with a shape, or 'error' naming the file; the binary never crashes or hangs."""
    import io

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from helpers import FUZZ

    host, _ = runners
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3, 4, 12), np.float32))
    valid = buf.getvalue()
    header_at = 10 if valid[6] == 1 else 12
    header = valid[header_at:valid.index(b"\n", header_at) + 1].decode("latin1")
    fields = st.sampled_from(
        [
            "'<f4'",
            "'>f4'",
            "'<f8'",
            "'|u1'",
            "'<f4",
            "''",
            "True",
            "False",
            "(2, 3, 4, 12)",
            "(-1, 3)",
            "(99999999999, 99999999999)",
            "()",
            "(0,)",
            "(2,",
            "((2),)",
            "'x'",
            "{}",
        ]
    )

    def npy(data) -> bytes:
        kind = data.draw(st.sampled_from(["header", "bytes", "cut"]))
        if kind == "bytes":
            return data.draw(st.binary(max_size=120))
        if kind == "cut":
            return valid[:data.draw(st.integers(0, len(valid)))]
        text = header
        for key in data.draw(
            st.lists(st.sampled_from(["'descr': ", "'fortran_order': ", "'shape': "]), max_size=3)
        ):
            start = text.find(key)
            end = text.find(", '", start + len(key))
            end = text.find("}", start) if end < 0 else end
            text = text[:start + len(key)] + data.draw(fields) + text[end:]
        body = valid[len(valid) - 2 * 3 * 4 * 12 * 4:]
        version = data.draw(st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"]))
        head = text.encode("latin1")
        size = len(head) + data.draw(st.sampled_from([0, 0, 5, -3]))
        length = size.to_bytes(2 if version == b"\x01\x00" else 4, "little", signed=True)
        return b"\x93NUMPY" + version + length + head + body[:data.draw(st.integers(0, len(body)))]

    @settings(FUZZ, max_examples=max(4, FUZZ.max_examples // NPY_BATCH))  # inputs, not batches
    @given(st.data())
    def check(data):
        files = []
        for i in range(NPY_BATCH):
            path = tmp_path / f"f{i}.npy"
            path.write_bytes(npy(data))
            files.append(str(path))
        proc = subprocess.run(
            [str(host), "--check-input", *files], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode in (0, 1), proc.stderr  # no signal, no crash
        lines = proc.stdout.splitlines()
        assert len(lines) == NPY_BATCH, proc.stdout[-2000:]
        for line, f in zip(lines, files):
            assert line.startswith("ok (") or (line.startswith("error ") and f in line), line

    check()
