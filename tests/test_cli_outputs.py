"""The report-style commands: previews and the model summary."""

from __future__ import annotations

import matplotlib.image as mpimg
import pytest

from helpers import run_cli


def test_preview_writes_four_composites_per_image_and_pair_images(small_pair_dir, tmp_path):
    out = tmp_path / "png"
    proc = run_cli("preview", small_pair_dir, "-o", out)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(names) == 12
    assert "reference_B01-B02-B03.png" in names and "target_B8A-B09-B11.png" not in names
    assert "target_B09-B11-B12.png" in names and "pair_B07-B08-B8A.png" in names
    single = mpimg.imread(out / "target_B04-B05-B06.png")
    pair = mpimg.imread(out / "pair_B04-B05-B06.png")
    assert single.shape[:2] == (96, 128) and pair.shape[:2] == (96, 256)
    assert single[..., :3].std() > 0.05  # a stretched image, not a flat one


@pytest.mark.slow
def test_model_summary_prints_the_paper_totals():
    proc = run_cli("model", "summary")
    assert proc.returncode == 0, proc.stderr
    for needle in ("conv1", "deconv5", "conv2_bn", "2,560,252", "10,241,008"):
        assert needle in proc.stdout, needle
    peers = run_cli("model", "summary", "--generator", "resnet")
    assert "2,884,044" in peers.stdout


# What TensorFlow prints at import depends on the CPU: the oneDNN banner only where oneDNN is on
# by default (AVX512_VNNI, AVX512_BF16 or AMX), the CPU-feature notice where the CPU has
# instructions the wheel was not built for (AVX2, FMA, ...). Every x86-64 CPU it runs on gets one.
TF_START_UP = ("oneDNN", "cpu_feature_guard")


def test_tensorflow_start_up_noise_stays_out_unless_asked_for():
    """Run with TF_CPP_MIN_LOG_LEVEL=2 inherited (conftest, the Makefile): -vv still lets it speak."""
    quiet = run_cli("quantize", "report", "--paper-config")
    assert quiet.returncode == 0 and "| MultiTempGAN |" in quiet.stdout
    assert not any(s in quiet.stderr for s in (*TF_START_UP, "absl::InitializeLog")), quiet.stderr
    loud = run_cli("-vv", "quantize", "report", "--paper-config")
    assert loud.returncode == 0 and any(s in loud.stderr for s in TF_START_UP), loud.stderr
