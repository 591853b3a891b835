"""Runners: one small class per way a configuration is executed; each returns the device
probe's record and the predicted tiles (band-first DN), so bench/records.py scores them all
the same way. Every configuration runs in a fresh process on its device (peak RSS is that
process's own)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np

from qmtgan.bench.records import Config, Timing
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.names import safe_label
from qmtgan.runtime.probe import ProbeRecord
from qmtgan.runtime.scratch import scratch_dir
from qmtgan.targets.devices import RUNTIME_DIR, Device, bounded, last_json_line

TILES = "bench/tiles.npz"


def load_npy(data: bytes, expected_shape: tuple[int, ...], what: str) -> np.ndarray:
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.shape != expected_shape or array.dtype != np.float32:
        raise QmtganError(f"{what}: outputs {array.shape} {array.dtype}, expected {expected_shape} float32")
    return array


class Runner:
    def run(self, config: Config, timing: Timing, expected_shape) -> tuple[dict, np.ndarray]:
        raise NotImplementedError  # pragma: no cover


class DeviceRunner(Runner):
    """`python3 -m qmtgan.runtime.probe` on a device (this machine, the emulated board, ssh)."""

    def __init__(self, device: Device, tiles_file: Path):
        from qmtgan.targets.device_files import stage_runtime

        self.device, self.tiles_file, self.sent = device, Path(tiles_file), set()
        with scratch_dir() as tmp:
            device.put(stage_runtime(Path(tmp) / "runtime"), RUNTIME_DIR)
            (Path(tmp) / "bench").mkdir()
            (Path(tmp) / "bench" / "tiles.npz").write_bytes(Path(tiles_file).read_bytes())
            device.put(Path(tmp) / "bench", "bench")

    def _send_bundle(self, config: Config) -> str:
        """The bundle's folder on the device, copied there once."""
        folder = f"bundles/{safe_label(config.name)}"
        if config.bundle not in self.sent:
            self.device.put(Path(config.bundle), folder)
            self.sent.add(config.bundle)
        return folder

    def run(self, config, timing, expected_shape):
        folder = self._send_bundle(config)
        out = f"bench/{safe_label(config.name)}-{config.threads or 0}.npy"
        record = self.device.probe(
            folder, TILES, ["--outputs", out, *timing.args()], config.threads, timing.timeout_s
        )
        return record, load_npy(self.device.fetch(out), expected_shape, config.label)


class KerasRunner(Runner):
    """The TF/Keras float baseline, in a fresh process on this machine."""

    def __init__(self, model_dir: Path, tiles_file: Path):
        self.model_dir, self.tiles_file = model_dir, tiles_file

    def run(self, config, timing, expected_shape):
        with scratch_dir() as tmp:
            out = Path(tmp) / "float.npy"
            argv = [sys.executable, "-m", "qmtgan.bench.keras_probe", "--model", str(self.model_dir),
                    "--tiles-file", str(self.tiles_file), "--outputs", str(out), *timing.args()]
            if config.threads:
                argv += ["--threads", str(config.threads)]
            proc = bounded(
                lambda: subprocess.run(argv, capture_output=True, text=True, timeout=timing.timeout_s),
                timing.timeout_s,
            )
            record = last_json_line(proc, "the Keras baseline")
            return record, load_npy(out.read_bytes(), expected_shape, config.label)


class NativeRunner(DeviceRunner):
    """The C++ runner qmtg-run (native/) on a device, built with CMake for the device's board
    (cross-compiled for aarch64) and copied there with its TVM runtime libraries. It takes
    normalized tiles; --runs becomes whole passes over the tiles (it has no minimum time)."""

    def __init__(self, device: Device, tiles_file: Path, build_root: Path):
        from qmtgan.targets.native import build_runner

        super().__init__(device, tiles_file)
        runner = build_runner(device.board, build_root / f"native-{device.board.name}")
        device.put(runner.parent, "native")
        self.runner_name = runner.name

    def run(self, config, timing, expected_shape):
        import math

        from qmtgan.runtime.bundle import load_bundle
        from qmtgan.runtime.tileset import TileSet, load_tiles

        bundle = load_bundle(config.bundle)
        tiles = load_tiles(self.tiles_file)
        folder = self._send_bundle(config)
        inputs = f"native-in/{safe_label(config.name)}"
        with scratch_dir() as tmp:
            np.save(Path(tmp) / "input.npy", tiles.normalized(bundle.normalization), allow_pickle=False)
            self.device.put(Path(tmp), inputs)
        out = f"{inputs}/output.npy"
        argv = [
            f"./native/{self.runner_name}",
            "--module",
            f"./{folder}/{bundle.manifest.model_file}",
            "--input",
            f"{inputs}/input.npy",
            "--output",
            out,
            "--warmup",
            str(timing.warmup),
            "--runs",
            str(max(1, math.ceil(timing.runs / len(tiles)))),
        ]
        if config.threads:
            argv += ["--threads", str(config.threads)]
        proc = bounded(lambda: self.device.run(argv, timeout=timing.timeout_s), timing.timeout_s)
        rec = last_json_line(proc, f"qmtg-run on {self.device.describe()}")
        normalized_shape = (expected_shape[0], expected_shape[2], expected_shape[3], expected_shape[1])
        outputs = load_npy(self.device.fetch(out), normalized_shape, config.label)
        latencies = [ms / 1000 for ms in rec["latencies_ms"]]
        record = ProbeRecord(
            tiles.tile,
            len(tiles),
            rec["threads"],
            rec["init_ms"] / 1000,
            rec["first_ms"] / 1000,
            latencies,
            rec["peak_rss_kb"],
            {"arch": self.device.board.arch, "system": "Linux", "cpus": None},
            {"qmtg-run": "native/qmtg_run.cc"},
        ).to_dict()
        return record, TileSet.denormalized(outputs, bundle.normalization)
