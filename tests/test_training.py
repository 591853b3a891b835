"""Real TensorFlow training on a tiny configuration: the loss falls, outputs are complete,
a run killed with SIGKILL resumes without losing completed epochs, evaluation reconstructs a
georeferenced scene."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from helpers import run_cli

TINY = ["--ngf", "4", "--depth", "3", "--kernel", "3"]


def test_tiny_training_lowers_l1_and_writes_a_complete_run(tiny_run):
    run_dir, result = tiny_run
    history = result["history"]
    assert [h["epoch"] for h in history] == list(range(1, 13))
    assert history[-1]["g_l1"] < 0.7 * history[0]["g_l1"], [h["g_l1"] for h in history]
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["generator"]["ngf"] == 4 and len(meta["normalization"]["low"]) == 12
    assert meta["bands"][8] == "B8A" and meta["patch_size"] == 32
    # the device that trained: the first GPU TensorFlow sees, else the CPU
    from qmtgan.train.device import gpus

    device = meta["training"]["device"]
    assert device == (f"GPU ({gpus()[0]})" if gpus() else "CPU")
    with open(run_dir / "train_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and rows[3]["val_snr_db"] != "" and rows[0]["val_snr_db"] == ""
    assert not list(run_dir.glob(".*tmp*"))
    # trained in the sub-pixel form, saved in the standard one that convert and the payload read
    saved = json.dumps(json.loads(zipfile.ZipFile(run_dir / "generator.keras").read("config.json")))
    assert '"class_name": "Conv2DTranspose"' in saved and "Subpixel" not in saved


def test_an_existing_run_is_not_overwritten_without_resume(tiny_run, small_pair_dir):
    run_dir, _ = tiny_run
    proc = run_cli("train", "--pair", small_pair_dir, "-o", run_dir, *TINY, "--epochs", "12")
    assert proc.returncode != 0 and "--resume" in proc.stderr


def test_evaluate_writes_a_georeferenced_reconstruction(tiny_run, small_pair_dir, small_scene, tmp_path):
    run_dir, _ = tiny_run
    out = tmp_path / "recon.tif"
    proc = run_cli("evaluate", "--model", run_dir, "--pair", small_pair_dir, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "SNR" in proc.stdout
    with rasterio.open(out) as ds:
        assert ds.transform == small_scene.transform and ds.crs == small_scene.crs
        assert ds.count == 12 and ds.shape == small_scene.shape
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert np.isfinite(metrics["snr_db"]) and metrics["patches"] == 12


def _latest_epoch(run_dir: Path) -> int:
    try:
        return int((run_dir / "checkpoints" / "latest").read_text().strip().split("-")[1])
    except (OSError, IndexError, ValueError):
        return 0


@pytest.mark.slow
def test_resume_after_kill_9_keeps_completed_epochs(small_pair_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "--pair", str(small_pair_dir), "-o", str(run_dir), *TINY, "--epochs", "400",
            "--val-every", "50"]
    proc = subprocess.Popen([sys.executable, "-m", "qmtgan", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while _latest_epoch(run_dir) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _latest_epoch(run_dir)
    assert 3 <= killed_at < 400
    ckpt = run_dir / "checkpoints" / f"epoch-{killed_at:04d}" / "state.json"
    before = json.loads(ckpt.read_text())["history"]
    assert not (run_dir / "model.json").exists()

    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    with open(run_dir / "train_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 401))
    for old, new in zip(before, rows):
        assert np.isclose(old["g_l1"], float(new["g_l1"]))
    assert json.loads((run_dir / "model.json").read_text())["training"]["epochs_done"] == 400


@pytest.mark.slow
def test_resume_refuses_a_different_configuration(tmp_path, small_pair_dir):
    run_dir = tmp_path / "run"
    first = run_cli("train", "--pair", small_pair_dir, "-o", run_dir, *TINY, "--epochs", "3",
                    "--stop-after", "1")
    assert first.returncode == 0, first.stderr
    assert "resumable" in first.stdout
    other = run_cli("train", "--pair", small_pair_dir, "-o", run_dir, *TINY, "--epochs", "3",
                    "--lr", "0.01", "--resume")
    assert other.returncode != 0 and "another configuration" in other.stderr


@pytest.mark.slow
def test_the_same_seed_and_data_give_the_same_payload_bytes(small_pair_dir, tmp_path):
    """Training and encoding are deterministic on CPU: two runs with one seed write byte-identical
    .qmtg payloads, and another seed writes a different one."""
    import hashlib

    def payload(name: str, seed: int) -> str:
        run, dest = tmp_path / name, tmp_path / f"{name}.qmtg"
        assert (
            run_cli(
                "train",
                "--pair",
                small_pair_dir,
                "-o",
                run,
                *TINY,
                "--epochs",
                "3",
                "--val-every",
                "3",
                "--seed",
                str(seed),
            ).returncode
            == 0
        )
        proc = run_cli(
            "encode",
            "--reference",
            small_pair_dir / "reference.tif",
            "--target",
            small_pair_dir / "target.tif",
            "--model",
            run,
            "--method",
            "symmetric",
            "--bits",
            "8",
            "-o",
            dest,
        )
        assert proc.returncode == 0, proc.stderr
        return hashlib.sha256(dest.read_bytes()).hexdigest()

    first = payload("a", 0)
    assert payload("b", 0) == first
    assert payload("c", 1) != first


def test_a_cached_spectral_base_trains_exactly_as_the_map_computed_every_step():
    """The linear residual's fixed spectral map, computed once per patch and given to the step,
    against the map computed inside every step: the same losses and the same weights after three
    steps from the same start (tolerance 1e-5 of each tensor's scale), and the map left as fitted."""
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.training import (TrainConfig, _build, caches_spectral_base, make_train_step,
                                       spectral_bases)

    gcfg = GeneratorConfig(ngf=4, depth=3, kernel=5, patch_size=32, residual="linear", spectral_kernel=3)
    tcfg = TrainConfig(loss="l2", adversarial=False, learning_rate=1e-3)
    assert caches_spectral_base(gcfg, tcfg) and not caches_spectral_base(gcfg, TrainConfig(flips=True))
    rng = np.random.default_rng(0)
    ref = np.repeat(rng.uniform(-1, 1, (1, 1, 32, 32, 12)).astype(np.float32), 3, axis=0)  # 3 steps
    tgt = np.clip(ref * 0.8 + rng.normal(0, 0.1, ref.shape[1:]), -1, 1).astype(np.float32)
    runs = []
    for given in (False, True):
        parts = _build(gcfg, tcfg)
        generator = parts[0]
        spectral = [np.asarray(w) for w in generator.get_layer("spectral").get_weights()]
        step = make_train_step(*parts, tcfg, given)
        losses = [float(step(r, t, *([spectral_bases(generator, r)] if given else []))["g_loss"])
                  for r, t in zip(ref, tgt)]
        runs.append((losses, [np.asarray(w) for w in generator.get_weights()], spectral,
                     [np.asarray(w) for w in generator.get_layer("spectral").get_weights()]))
    (losses, weights, _, _), (losses_given, weights_given, before, after) = runs
    np.testing.assert_allclose(losses_given, losses, rtol=1e-5)
    assert losses[-1] < losses[0]
    for w, w_given in zip(weights, weights_given):
        np.testing.assert_allclose(w_given, w, atol=1e-5 * max(np.abs(w).max(), 1e-3))
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_tensorflow_build_switch_keeps_one_build_and_refuses_an_unknown_one():
    """targets/tensorflow_build.sh (make GPU=1): asked for the build already in (the CPU one
    here) it changes nothing; an unknown build name is refused with the reason."""
    from importlib.metadata import PackageNotFoundError, version

    script = Path(__file__).resolve().parents[1] / "targets" / "tensorflow_build.sh"
    try:
        build, before = "gpu", version("tensorflow")
    except PackageNotFoundError:
        build, before = "cpu", version("tensorflow-cpu")
    if build == "cpu":  # the GPU build is several GB: only its no-op direction runs here
        proc = subprocess.run(["sh", str(script), sys.executable, "cpu"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert version("tensorflow-cpu") == before
    bad = subprocess.run(["sh", str(script), sys.executable, "tpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and "cpu or gpu" in bad.stderr
