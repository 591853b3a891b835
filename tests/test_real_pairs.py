"""`qmtgan real` end to end on a crop of a real OSCD city (both dates, every band at its own
resolution): prepare, train, baselines (KLT included), generator, hybrids at the scene's own
size and projected to the paper's, and the report with dates and licence."""

from __future__ import annotations

import json

import pytest

from helpers import crop_oscd_city, oscd_root, run_cli


@pytest.mark.slow
def test_real_pairs_report_on_a_crop_of_a_real_city(tmp_path):
    root = tmp_path / "oscd"
    crop_oscd_city(oscd_root() / "paris", root / "paris", 120, 120, 132)
    out = tmp_path / "real"
    proc = run_cli("real", "--pairs", root, "--epochs", "2", "--rates", "1.0", "--bits", "8", "--methods",
                   "symmetric,pwl", "-o", out, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "real.json").read_text())
    (pair,) = doc["pairs"]
    assert pair["pair"] == "paris" and doc["context"]["sizes"]["paris"] == "132 x 132"
    # real scenes train with a clipped normalization (saturated pixels would squeeze the content)
    model = json.loads((out / "models" / "paris" / "model.json").read_text())
    assert 0 < model["normalization"]["low_percentile"] < 1 and model["normalization"]["high_percentile"] > 99
    row = pair["rates"]["1"]
    # the baselines a user would fly, KLT included, were measured; the best is named
    families = {p["family"] for p in json.loads((out / "rd" / "rd.json").read_text())["points"]}
    assert {"klt+jpeg2000", "linear-3x3+klt+jpeg2000", "linear-3x3+jpeg2000", "hybrid-projected"} <= families
    # the hybrids are made from the payloads of every method asked for
    projected = [p["label"] for p in json.loads((out / "rd" / "rd.json").read_text())["points"]
                 if p["family"] == "hybrid-projected"]
    assert any("8-bit pwl" in label for label in projected) and any("8-bit +" in label for label in projected)
    assert row["classical"]["snr_db"] > 0 and row["projected"] is not None
    # 105k weights at 8 bits cannot fit 1 bpp on 132 x 132 px, but they do on 441 tiles
    assert row["hybrid"] is None and "projected_minus_classical_db" in row
    assert row["break_even"]["bits"] == 8
    int8 = doc["context"]["int8"]["paris"]
    for name in ("tflite-int8", "onnx-int8"):
        assert abs(int8[name]["loss_db"] - (int8["float_snr_db"] - int8[name]["snr_db"])) < 1e-9
    # the PTQ sweep ran on the pair's generator, with the paper's ordering checked
    sweep = doc["context"]["sweep"]
    labels = {r["label"]: r for r in sweep["rows"]}
    assert {"float32", "symmetric 2", "symmetric 8", "stochastic 6", "asymmetric 4"} <= set(labels)
    # 8 bits against 32: under a third of float's bytes (the 3x3 linear map takes 12 bits, and the
    # side information counts, so not quite a quarter)
    assert labels["symmetric 8"]["bpp_scene"] < labels["float32"]["bpp_scene"] / 3
    assert {c["claim"].split(" (")[0] for c in sweep["ordering"]} >= {"float >= 8-bit symmetric",
                                                                      "symmetric 2 collapses"}
    assert all(c["measured"] for c in sweep["ordering"])
    md = (out / "real.md").read_text()
    assert "## Post-training quantization" in md and "The paper's ordering" in md
    assert "2016-11-30" in md and "2017-11-07" in md and "Copernicus" in md
    assert (out / "real.png").stat().st_size > 0


def test_missing_real_pairs_are_one_clear_error(tmp_path):
    proc = run_cli("real", "--pairs", tmp_path / "nowhere", "-o", tmp_path / "out")
    assert proc.returncode == 1 and "no real pairs" in proc.stderr and "OSCD" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_break_even_is_where_the_weights_leave_the_residual_just_enough():
    import math

    from qmtgan.demo.real_report import _snr_at, break_even_pixels

    known, alone, rate, weights = [(0.04, 20.0), (0.1, 22.0)], 15.0, 0.1, 50_000
    pixels = break_even_pixels(rate, weights, 12, known, alone, 21.0)
    spent = 8.0 * weights / (12 * pixels)  # the weights' bits per sample on a scene that size
    assert math.isclose(_snr_at(rate - spent, known, alone), 21.0, abs_tol=1e-6)
    assert break_even_pixels(rate, weights, 12, known, alone, 22.5) is None  # not even with free weights
    assert break_even_pixels(rate, 2 * weights, 12, known, alone, 21.0) > pixels  # heavier weights: larger


def test_the_codec_column_is_the_better_of_the_per_pair_and_the_shared_hybrid():
    from qmtgan.demo.real_report import pair_summary, summarize

    def point(family, snr, bpp, requested=None, **extra):
        return {"pair": "p", "family": family, "label": family, "bytes": int(bpp * 1000), "bpp": bpp,
                "requested_bpp": requested, "snr_db": snr, "extra": {"bits": 8, **extra}}

    points = [point("linear-3x3", 15.0, 0.003), point("generator", 17.0, 0.03),
              point("shared", 15.2, 0.004, gate_fraction=0.25),
              point("linear-3x3+klt+jpeg2000", 25.0, 0.05, 0.05), point("hybrid", 23.0, 0.05, 0.05),
              point("shared-hybrid", 24.9, 0.05, 0.05, gate_fraction=0.0)]
    row = pair_summary(points, "p", [0.05])["rates"]["0.05"]
    assert abs(row["hybrid_minus_classical_db"] + 2.0) < 1e-9
    assert abs(row["shared_minus_classical_db"] + 0.1) < 1e-9
    assert row["codec_minus_classical_db"] == row["shared_minus_classical_db"]
    mean = summarize(points, ["p"], [0.05])["mean"]
    assert abs(mean["shared_minus_linear_db"]["mean"] - 0.2) < 1e-9
    assert mean["0.05"]["codec_minus_classical_db"]["n"] == 1


def test_equal_residual_rate_sets_each_predictors_bits_aside():
    import math

    from qmtgan.demo.real_report import pair_summary

    def point(family, snr, bpp, requested=None, **extra):
        return {"pair": "p", "family": family, "label": family, "bytes": round(bpp * 1000), "bpp": bpp,
                "requested_bpp": requested, "snr_db": snr, "extra": {"bits": 8, **extra}}

    weights = {"weight_bytes": 20, "pixels": 10**12}  # projected: the weights cost nothing
    points = [point("linear-3x3", 15.0, 0.003), point("generator", 17.0, 0.03, **weights),
              point("linear-3x3+klt+jpeg2000", 25.0, 0.05, 0.05, predictor_bytes=5),
              point("linear-3x3+klt+jpeg2000", 27.0, 0.11, 0.11, predictor_bytes=5),
              point("hybrid", 23.0, 0.05, 0.05, **weights),
              point("hybrid-projected", 26.0, 0.05, 0.05, **weights),
              point("hybrid-projected", 28.0, 0.11, 0.11, **weights)]
    row = pair_summary(points, "p", [0.05])["rates"]["0.05"]
    # 8000 samples: the base's 5 predictor bytes are 0.005 bpp, so its residual curve is
    # (0.045, 25), (0.105, 27); the projected hybrid's is (0.05, 26), (0.11, 28)
    base = 25.0 + 2.0 * math.log(0.05 / 0.045) / math.log(0.105 / 0.045)
    assert math.isclose(row["equal_residual"]["base_snr_db"], base, abs_tol=1e-4)
    assert math.isclose(row["equal_residual"]["hybrid_snr_db"], 26.0, abs_tol=1e-4)
    assert math.isclose(row["equal_residual_gain_db"], 26.0 - base, abs_tol=1e-4)
    # 0.11 bpp is beyond the base's last residual rate (0.105): not extrapolated, not compared
    beyond = pair_summary(points, "p", [0.11])["rates"]["0.11"]
    assert beyond["projected"] and beyond["equal_residual"] is None
    assert "equal_residual_gain_db" not in beyond
