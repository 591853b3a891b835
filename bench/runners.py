"""Runners: one small class per way a configuration is executed; each returns the device
probe's record and the predicted tiles (band-first DN), so bench/records.py scores them all
the same way. Every configuration runs in a fresh process on its device (peak RSS is that
process's own)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from qmtgan.bench.records import Config, Timing
from qmtgan.runtime.errors import QmtganError
from qmtgan.targets.devices import Device

TILES = "bench/tiles.npz"


def last_json_line(proc: subprocess.CompletedProcess, what: str) -> dict:
    """The JSON record a worker prints last; a clear error naming how it ended otherwise."""
    lines = [line for line in (proc.stdout or "").splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    if proc.returncode < 0:
        raise QmtganError(f"{what} crashed (signal {-proc.returncode}): {(proc.stderr or '').strip()[-800:]}")
    raise QmtganError(f"{what} failed (exit {proc.returncode}): {(proc.stderr or '').strip()[-800:]}")


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

        self.device, self.sent = device, set()
        with tempfile.TemporaryDirectory() as tmp:
            device.put(stage_runtime(Path(tmp) / "runtime"), "runtime")
            (Path(tmp) / "bench").mkdir()
            (Path(tmp) / "bench" / "tiles.npz").write_bytes(Path(tiles_file).read_bytes())
            device.put(Path(tmp) / "bench", "bench")

    def run(self, config, timing, expected_shape):
        folder = f"bundles/{config.name}"
        if config.bundle not in self.sent:
            self.device.put(Path(config.bundle), folder)
            self.sent.add(config.bundle)
        out = f"bench/{config.name}-{config.threads or 0}.npy"
        argv = ["python3", "-m", "qmtgan.runtime.probe", "--bundle", folder, "--tiles", TILES, "--outputs", out, *timing.args()]
        if config.threads:
            argv += ["--threads", str(config.threads)]
        try:
            proc = self.device.run(argv, env={"PYTHONPATH": "runtime"}, timeout=timing.timeout_s)
        except subprocess.TimeoutExpired:
            raise QmtganError(f"timed out after {timing.timeout_s:.0f} s") from None
        record = last_json_line(proc, f"the probe on {self.device.describe()}")
        return record, load_npy(self.device.fetch(out), expected_shape, config.label)


class KerasRunner(Runner):
    """The TF/Keras float baseline, in a fresh process on this machine."""

    def __init__(self, model_dir: Path, tiles_file: Path):
        self.model_dir, self.tiles_file = model_dir, tiles_file

    def run(self, config, timing, expected_shape):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "float.npy"
            argv = [sys.executable, "-m", "qmtgan.bench.keras_probe", "--model", str(self.model_dir),
                    "--tiles", str(self.tiles_file), "--outputs", str(out), *timing.args()]
            if config.threads:
                argv += ["--threads", str(config.threads)]
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=timing.timeout_s)
            except subprocess.TimeoutExpired:
                raise QmtganError(f"timed out after {timing.timeout_s:.0f} s") from None
            record = last_json_line(proc, "the Keras baseline")
            return record, load_npy(out.read_bytes(), expected_shape, config.label)
