"""encode -> .qmtg -> decode with the real CLI on a tiny trained model, and its bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from helpers import run_cli, run_cli_without_tf


@pytest.fixture(scope="module")
def reference_target(tmp_path_factory, small_pair_dir):
    folder = tmp_path_factory.mktemp("scenes")
    return small_pair_dir / "reference.tif", small_pair_dir / "target.tif", folder


@pytest.fixture(scope="module")
def encoded(tiny_run, reference_target):
    ref, tgt, folder = reference_target
    out = folder / "x.qmtg"
    proc = run_cli("encode", "--reference", ref, "--target", tgt, "--model", tiny_run[0],
                   "--method", "symmetric", "--bits", "6", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "bpp on disk" in proc.stdout
    return out


def test_decode_reproduces_the_in_memory_dequantized_model(encoded, tiny_run, reference_target, tmp_path):
    """`qmtgan decode` (numpy only) against Keras running the in-memory dequantized weights."""
    from qmtgan.quantize.model import quantize_tensors
    from qmtgan.train.model_io import assign_weights
    from qmtgan.quantize.policy import Policy, generator_tensors
    from qmtgan.runtime import payload as fmt
    from qmtgan.runtime.tiling import PatchGrid
    from qmtgan.train.ingest import read_scene
    from qmtgan.train.model_io import load_model
    from qmtgan.train.reconstruct import reconstruct_scene

    ref, _, _ = reference_target
    out = tmp_path / "target_hat.tif"
    proc = run_cli_without_tf("decode", "--reference", ref, encoded, "-o", out, timeout=300)
    assert proc.returncode == 0, proc.stderr  # decoding needs no TensorFlow

    generator, cfg, norm, _ = load_model(tiny_run[0])
    qmodel = quantize_tensors(generator_tensors(generator), Policy("symmetric", bits=6))
    in_memory = qmodel.dequantized()
    for a, b in zip(fmt.read(encoded).weights(), in_memory):
        assert a.tobytes() == b.tobytes()  # bit-identical weights from the file
    assign_weights(generator, in_memory)
    reference = read_scene(ref)
    grid = PatchGrid(*reference.shape, cfg.patch_size)
    expected = reconstruct_scene(
        generator, grid.cut(norm.forward(reference.data)), grid, norm, reference.valid
    )
    with rasterio.open(out) as ds:
        decoded = ds.read().astype(np.float32)
        assert ds.transform == reference.transform and ds.crs == reference.crs
    assert np.max(np.abs(decoded - np.clip(np.rint(expected), 1, 65535))) <= 1.0


@pytest.mark.parametrize("damage,needle", [
    (lambda d: d[: len(d) // 2], "truncated"),
    (lambda d: d[:200] + bytes([d[200] ^ 4]) + d[201:], "CRC32"),
    (lambda d: b"GIF89a\x00\x00" + d[8:], "wrong magic"),
    (lambda d: d[:8] + (7).to_bytes(2, "little") + d[10:], "newer"),
])
def test_damaged_payloads_fail_cleanly(encoded, reference_target, tmp_path, damage, needle):
    bad = tmp_path / "bad.qmtg"
    bad.write_bytes(damage(encoded.read_bytes()))
    out = tmp_path / "never.tif"
    proc = run_cli("decode", "--reference", reference_target[0], bad, "-o", out)
    assert proc.returncode == 1 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


def test_reference_that_does_not_match_the_payload(encoded, sample_scene, tmp_path):
    from qmtgan.runtime.raster import write_geotiff
    from qmtgan.runtime.scene import Scene

    other = write_geotiff(
        tmp_path / "other.tif",
        Scene(sample_scene.data[:, :64, :64].copy(), sample_scene.crs, sample_scene.transform),
    )
    out = tmp_path / "never.tif"
    proc = run_cli("decode", "--reference", other, encoded, "-o", out)
    assert proc.returncode == 1 and "was made for a 96x128 px reference" in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [
    (["--bits", "1"], "1 is not in the range 2<=x<=32"),
    (["--bits", "17"], "bit width must be an integer in 2..16"),
    (["--method", "magic"], "'magic' is not one of"),
])
def test_bad_bit_widths_and_methods_on_the_cli(tiny_run, reference_target, tmp_path, args, needle):
    ref, tgt, _ = reference_target
    out = tmp_path / "x.qmtg"
    proc = run_cli("encode", "--reference", ref, "--target", tgt, "--model", tiny_run[0], *args, "-o", out)
    assert proc.returncode != 0 and needle in proc.stderr, proc.stderr
    assert not out.exists()


def test_sweep_writes_table2_and_figures(tiny_run, small_pair_dir, tmp_path):

    peer = tmp_path / "unet"
    trained = run_cli("train", "--pair", small_pair_dir, "-o", peer, "--generator", "unet", "--ngf", "2",
                      "--depth", "3", "--epochs", "2", "--val-every", "1")
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "sweep"
    # the same (model, pair) twice exercises the average over pairs
    proc = run_cli(
        "quantize",
        "sweep",
        "--model",
        tiny_run[0],
        "--pair",
        small_pair_dir,
        "--model",
        tiny_run[0],
        "--pair",
        small_pair_dir,
        "-o",
        out,
        "--methods",
        "symmetric,stochastic,integer,kmeans",
        "--bits",
        "4,8,32",
        "--peer",
        peer,
    )
    assert proc.returncode == 0, proc.stderr
    assert "critical layers" in proc.stdout
    for name in ("table2.md", "table2.csv", "table2.json", "figure2.png", "figure3.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "table2.json").read_text())
    rows = {r["label"]: r for r in report["rows"]}
    assert rows["float32"]["distance"] == 0.0
    assert len(rows["symmetric 8"]["per_pair_snr_db"]) == 2 and report["context"]["pairs"] == 2
    assert np.isclose(np.mean(rows["symmetric 8"]["per_pair_snr_db"]), rows["symmetric 8"]["snr_db"])
    assert rows["symmetric 8"]["bpp_tile"] < rows["float32"]["bpp_tile"] / 3.9
    assert rows["symmetric 4"]["snr_db"] < rows["symmetric 8"]["snr_db"] + 0.05
    assert report["best"]["in_table2"] and report["best"]["label"] != "float32"
    assert rows["unet"]["bits"] == "32" and rows["unet"]["in_table2"] and rows["unet"]["distance"] >= 0
    assert "| unet |" in (out / "table2.md").read_text()
    assert all(np.isfinite(r["patch_snr_db"]) for r in report["rows"])
    claims = {c["claim"]: c for c in report["ordering"]}
    assert claims["float >= 8-bit symmetric"]["measured"]
    assert len(claims["float >= 8-bit symmetric"]["per_pair_margin_db"]) == 2
    assert not claims["8-bit stochastic > every 6-bit row"]["measured"]  # no 6-bit rows in this sweep
    assert "## The paper's ordering" in (out / "table2.md").read_text()
    # bytes on disk: the file `encode` would write, never above the bit-packed one, and the report
    # built from them
    for label in ("symmetric 4", "kmeans 4", "integer 8"):
        assert rows[label]["file_bytes"] <= min(rows[label]["per_pair_packed_bytes"])
        assert rows[label]["bpp_file"] == pytest.approx(np.mean(rows[label]["per_pair_bpp_file"]))
    disk = report["on_disk"]
    assert {c["label"] for c in disk["configs"]} >= {"symmetric 4", "kmeans 4", "float32"}
    sym8 = next(c for c in disk["configs"] if c["label"] == "symmetric 8")
    assert sym8["ratio"] <= 1  # the smallest coder, against the bit-packed reference
    assert (out / "rd_on_disk.png").stat().st_size > 0
    assert "## Bytes on disk" in (out / "table2.md").read_text()


def test_sweep_fits_grid_methods_to_the_scene_with_rounding(tiny_run, small_pair_dir, tmp_path):
    rows = {}
    for rounding in ("nearest", "bias"):
        out = tmp_path / rounding
        proc = run_cli("quantize", "sweep", "--model", tiny_run[0], "--pair", small_pair_dir, "-o", out,
                       "--methods", "symmetric,integer", "--bits", "2,32", "--rounding", rounding)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((out / "table2.json").read_text())
        assert report["context"]["rounding"] == rounding
        rows[rounding] = {r["label"]: r for r in report["rows"]}
    fitted, nearest = rows["bias"]["symmetric 2"], rows["nearest"]["symmetric 2"]
    assert fitted["rounding"] == "bias" and fitted["snr_db"] > nearest["snr_db"]
    # integer has a grid per channel: nearest rounding, the same row
    unfitted, plain = rows["bias"]["integer 2"], rows["nearest"]["integer 2"]
    assert unfitted["rounding"] == "nearest"
    assert unfitted["snr_db"] == pytest.approx(plain["snr_db"], abs=1e-9)


def test_sweep_needs_one_pair_per_model(tiny_run, small_pair_dir, tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli(
        "quantize",
        "sweep",
        "--model",
        tiny_run[0],
        "--model",
        tiny_run[0],
        "--pair",
        small_pair_dir,
        "-o",
        out,
    )
    assert proc.returncode == 1 and "one --pair per --model" in proc.stderr
    assert not out.exists()


def test_quantization_aware_finetuning_beats_ptq_at_2_bits_and_writes_a_run_encode_reads(
    tiny_run, small_pair_dir, tmp_path
):
    from qmtgan.runtime import payload as fmt

    out = tmp_path / "qat"
    proc = run_cli("quantize", "finetune", "--model", tiny_run[0], "--pair", small_pair_dir,
                   "--method", "kmeans", "--bits", "2", "--epochs", "4", "--lr", "1e-3", "-o", out)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "model.json").read_text())["finetune"]
    assert record["quantized_snr_after_db"] > record["quantized_snr_before_db"] + 0.1, record
    assert record["policy"]["method"] == "kmeans" and record["epochs"] == 4
    payload = tmp_path / "qat.qmtg"
    ref, tgt = small_pair_dir / "reference.tif", small_pair_dir / "target.tif"
    proc = run_cli("encode", "--reference", ref, "--target", tgt, "--model", out, "--method", "kmeans",
                   "--bits", "2", "-o", payload)
    assert proc.returncode == 0, proc.stderr
    assert {t["method"] for t in fmt.read(payload).header["tensors"] if t["bits"] != 32} == {"kmeans"}
    again = run_cli("quantize", "finetune", "--model", tiny_run[0], "--pair", small_pair_dir, "-o", out)
    assert again.returncode != 0 and "already holds a run" in again.stderr
    refused = run_cli(
        "quantize",
        "finetune",
        "--model",
        tiny_run[0],
        "--pair",
        small_pair_dir,
        "--method",
        "integer",
        "-o",
        tmp_path / "other",
    )
    assert refused.returncode != 0 and not (tmp_path / "other").exists()


def test_data_aware_rounding_is_kept_only_where_it_measures_better_and_encode_writes_it(
    tiny_run, small_pair_dir, tmp_path
):
    from qmtgan.quantize.adaround import fit_to_scene
    from qmtgan.quantize.finetune import SceneFit
    from qmtgan.quantize.model import quantize_tensors
    from qmtgan.quantize.policy import Policy

    fit = SceneFit.of_pair(tiny_run[0], small_pair_dir)
    policy = Policy("symmetric", bits=2)
    kept, record = fit_to_scene(fit, policy, steps=200, progress=False)
    nearest = quantize_tensors(fit.tensors, policy)
    assert 0 < record["changed_fraction"] < 0.5
    assert record["fitted_snr_db"] > record["nearest_snr_db"], record
    assert fit.snr_db(kept.dequantized()) == pytest.approx(record["fitted_snr_db"], abs=1e-6)
    for a, b in zip(kept.entries, nearest.entries):  # kernels: the same grid, codes at most one level apart
        if b.quantized and b.info.is_conv:
            assert np.array_equal(a.q.side, b.q.side)
            assert np.abs(a.q.codes.astype(int) - b.q.codes.astype(int)).max() <= 1
    # bias correction alone keeps every kernel's nearest codes, and the biases it moves measure better
    _, bias_only = fit_to_scene(fit, policy, rounding=False, progress=False)
    assert bias_only["changed_fraction"] == 0 and bias_only["steps_per_layer"] == 0
    assert bias_only["biases_corrected"] >= 1 and bias_only["fitted_snr_db"] > bias_only["nearest_snr_db"]
    ref, tgt = small_pair_dir / "reference.tif", small_pair_dir / "target.tif"
    for rounding in ("bias", "adaround"):
        out = tmp_path / f"{rounding}.qmtg"
        proc = run_cli("encode", "--reference", ref, "--target", tgt, "--model", tiny_run[0], "--bits", "2",
                       "--rounding", rounding, "-o", out)
        assert proc.returncode == 0 and "fitted to the scene (the better is in the payload)" in proc.stdout, \
            proc.stderr
    refused = run_cli("encode", "--reference", ref, "--target", tgt, "--model", tiny_run[0],
                      "--method", "integer", "--rounding", "adaround", "-o", tmp_path / "no.qmtg")
    assert refused.returncode != 0 and "one grid per tensor" in refused.stderr
    assert not (tmp_path / "no.qmtg").exists()
