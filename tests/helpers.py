"""Helpers the tests import: the real CLI in a fresh process (optionally with TensorFlow
blocked), the device runtime run on another (emulated) CPU, real GeoTIFF bands, and local ports
for the servers the tests start."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Runs the qmtgan CLI with TensorFlow (and Keras, tf2onnx) made unimportable: the device side
# must work without them.
BLOCK_TF = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'):
            raise ImportError('the device runtime must not import ' + name)
sys.meta_path.insert(0, Block())
from qmtgan.cli import main
main(sys.argv[1:])
"""

# The device runtime on another CPU: runs each bundle on the same tiles (.npy), saves its outputs.
# argv: tiles.npy, then bundle folder and output .npy pairs; prints each bundle's seconds a tile.
RUN_BUNDLES = r"""
import sys, time
import numpy as np
from qmtgan.runtime.bundle import load_bundle
tiles = np.load(sys.argv[1], allow_pickle=False)
for bundle_dir, out_path in zip(sys.argv[2::2], sys.argv[3::2]):
    backend = load_bundle(bundle_dir).backend(threads=2)
    t0 = time.perf_counter()
    np.save(out_path, np.stack([backend.run(t[None])[0] for t in tiles]), allow_pickle=False)
    print(bundle_dir, (time.perf_counter() - t0) / len(tiles))
"""


def scene_tiles(normalization, pair_dir: Path, npy: Path) -> np.ndarray:
    """Six 32x32 tiles of the pair's real reference, normalized as a bundle expects, also saved
    to `npy` for a run on another CPU (RUN_BUNDLES)."""
    from qmtgan.runtime.raster import read_reference

    x = normalization.forward(read_reference(pair_dir / "reference.tif").data).transpose(1, 2, 0)
    tiles = np.stack([x[r:r + 32, c:c + 32] for r in (0, 32) for c in (0, 32, 64)]).astype(np.float32)
    np.save(npy, tiles, allow_pickle=False)
    return tiles


def run_bundle_here(bundle, tiles: np.ndarray) -> tuple[np.ndarray, float]:
    """The bundle's outputs on this host (2 threads, as RUN_BUNDLES), and its seconds a tile."""
    backend = bundle.backend(threads=2)
    t = time.perf_counter()
    y = np.stack([backend.run(tile[None])[0] for tile in tiles])
    return y, (time.perf_counter() - t) / len(tiles)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `qmtgan` entry point in a fresh process."""
    return subprocess.run([sys.executable, "-m", "qmtgan", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def run_cli_without_tf(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process where TensorFlow, Keras and tf2onnx cannot be imported."""
    return subprocess.run([sys.executable, "-c", BLOCK_TF, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def write_band(path: Path, array: np.ndarray, transform, crs="EPSG:32618", descriptions=None) -> Path:
    import rasterio

    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2],
                       count=array.shape[0], dtype=array.dtype.name, crs=crs,
                       transform=transform) as dst:
        dst.write(array)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return path


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log=lambda: "exited") -> None:
    """Until `proc` (a server just started) accepts connections on 127.0.0.1:port."""
    for _ in range(200):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        assert proc.poll() is None, log()
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def _fuzz_settings():
    """Hypothesis settings of every fuzz test: QMTGAN_FUZZ_EXAMPLES inputs (200 by default, seeded
    so that `make test` is reproducible; `make fuzz` sets 100,000 and lets hypothesis explore)."""
    import os

    from hypothesis import HealthCheck, settings

    examples = int(os.environ.get("QMTGAN_FUZZ_EXAMPLES", "200"))
    return settings(max_examples=examples, deadline=None, derandomize=examples <= 1000, database=None,
                    suppress_health_check=list(HealthCheck))


FUZZ = _fuzz_settings()


def conv_onnx_backend(folder: Path, tile: int):
    """A real ONNX model run by ONNX Runtime: a seeded 3x3 conv over the 12 bands and tanh, on
    (1, tile, tile, 12) tiles. Its receptive field makes any misplaced or wrongly padded tile
    show in the output; the tiling tests need no trained generator."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from qmtgan.runtime.backends import load_backend

    rng = np.random.default_rng(7)
    weights = numpy_helper.from_array(rng.normal(0, 0.15, (12, 12, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Tanh", ["conv"], ["t"]),
             helper.make_node("Transpose", ["t"], ["y"], perm=[0, 2, 3, 1])]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, tile, tile, 12]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "conv", io[:1], io[1:], [weights])
    path = folder / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return load_backend("onnxruntime", path, threads=1)


# The CLI in a process that reports its own peak RSS on its last stderr line: VmHWM, which
# starts anew at exec (getrusage's ru_maxrss keeps the forking parent's, a test runner's).
MEASURED = """
import atexit, sys
def peak():
    kb = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
    print(f"qmtgan-test maxrss_kb={kb}", file=sys.stderr)
atexit.register(peak)
from qmtgan.cli import main
main(sys.argv[1:])
"""


def run_cli_measured(*args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    """Run the CLI in a fresh process; its result and its peak RSS in MiB."""
    proc = subprocess.run([sys.executable, "-c", MEASURED, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    line = [x for x in proc.stderr.splitlines() if x.startswith("qmtgan-test maxrss_kb=")][-1]
    proc.stderr = proc.stderr.replace(line, "").rstrip()
    return proc, int(line.split("=")[1]) / 1024


def oscd_root() -> Path:
    """The real Sentinel-2 pairs (OSCD layout): QMTGAN_OSCD, else ../shared/data/oscd beside the
    repository. Missing data is a failure with a clear message, never a silent skip."""
    import os

    import pytest

    beside = Path(__file__).resolve().parents[2] / "shared" / "data" / "oscd"
    root = Path(os.environ.get("QMTGAN_OSCD") or beside)
    if not (root / "paris" / "imgs_1").is_dir():
        pytest.fail(f"the real pairs are missing: no {root}/paris/imgs_1 (set QMTGAN_OSCD to an OSCD copy)")
    return root


def crop_oscd_city(src: Path, dest: Path, row: int, col: int, size: int) -> Path:
    """A crop of a real OSCD city, both dates, every band at its own resolution: `size` 10 m
    pixels from (row, col); all three multiples of 6 so that the 20 m and 60 m bands crop on
    their own pixel edges. The dates file comes along."""
    import shutil

    import rasterio
    from rasterio.windows import Window

    for date in ("imgs_1", "imgs_2"):
        (dest / date).mkdir(parents=True)
        for band in sorted((src / date).glob("*.tif")):
            with rasterio.open(band) as ds:
                f = round(ds.res[0] / 0.0001164)  # 1, 2 or 6: this band's pixel in 10 m pixels
                window = Window(col // f, row // f, size // f, size // f)
                profile = {**ds.profile, "width": size // f, "height": size // f,
                           "transform": ds.window_transform(window)}
                with rasterio.open(dest / date / band.name, "w", **profile) as out:
                    out.write(ds.read(window=window))
    shutil.copy(src / "dates.txt", dest / "dates.txt")
    return dest
