"""Metric definitions against hand computations, and the seeded pair simulator."""

from __future__ import annotations

import numpy as np
import pytest

from qmtgan.runtime import metrics
from qmtgan.runtime.normalization import Normalization
from qmtgan.runtime.scene import Scene
from qmtgan.train.simulate import SimulationConfig, simulate_target


def test_snr_psnr_lmse_match_their_definitions():
    rng = np.random.default_rng(0)
    x = rng.uniform(100, 1000, (2, 20, 30))
    noise = rng.normal(0, 10, x.shape)
    assert np.isclose(metrics.snr_db(x, x + noise), 10 * np.log10((x**2).sum() / (noise**2).sum()))
    assert np.isclose(metrics.psnr_db(x, x + noise), 10 * np.log10(x.max() ** 2 / (noise**2).mean()))
    lap = lambda a: a[:, :-2, 1:-1] + a[:, 2:, 1:-1] + a[:, 1:-1, :-2] + a[:, 1:-1, 2:] - 4 * a[:, 1:-1, 1:-1]
    expected = ((lap(x) - lap(x + noise)) ** 2).sum() / (lap(x) ** 2).sum()
    assert np.isclose(metrics.lmse(x, x + noise), expected)
    assert metrics.lmse(x, x) == 0.0 and metrics.snr_db(x, x) == float("inf")


def test_masked_metrics_ignore_nodata_pixels():
    x = np.ones((1, 4, 4)) * 10
    x_hat = x.copy()
    x_hat[0, 0, 0] = 1e6
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    assert metrics.snr_db(x, x_hat, valid) == float("inf")


def test_mean_over_images_averages_like_the_paper():
    # the paper's MultiTempGAN SNR: (27.87 + 26.43 + 24.72) / 3 = 26.34
    recs = [{"snr_db": 27.87}, {"snr_db": 26.43}, {"snr_db": 24.72}]
    assert round(metrics.mean_over_images(recs)["snr_db"], 2) == 26.34


def test_normalization_round_trip_and_range(small_scene):
    norm = Normalization.fit([small_scene.data], small_scene.valid)
    y = norm.forward(small_scene.data)
    assert y.min() >= -1 and y.max() <= 1
    inside = (y > -1) & (y < 1)
    np.testing.assert_allclose(norm.inverse(y)[inside], small_scene.data[inside], rtol=1e-5, atol=0.05)
    assert Normalization.from_dict(norm.to_dict()) == norm


def test_simulation_is_seeded_deterministic_and_keeps_nodata(small_scene):
    scene = Scene(small_scene.data.copy(), small_scene.crs, small_scene.transform)
    scene.data[:, :3, :5] = 0  # some nodata
    cfg = SimulationConfig(seed=7, change_radius_px=(5, 10))
    a, pa = simulate_target(scene, cfg)
    b, pb = simulate_target(scene, cfg)
    c, _ = simulate_target(scene, SimulationConfig(seed=8, change_radius_px=(5, 10)))
    np.testing.assert_array_equal(a.data, b.data)
    assert pa == pb and pa["config"]["seed"] == 7 and len(pa["land_cover_changes"]) == 5
    assert not np.array_equal(a.data, c.data)
    assert np.all(a.data[:, :3, :5] == 0) and a.valid[3:, 5:].all()
    # a plausible later date: close to the reference, but not equal to it
    snr = metrics.snr_db(scene.data, a.data, scene.valid)
    assert 10 < snr < 40, snr


def test_full_range_normalization_clips_nothing(small_scene):
    norm = Normalization.fit([small_scene.data], small_scene.valid, clip_percent=0.0)
    v = small_scene.valid
    y = norm.forward(small_scene.data)[:, v]
    assert y.min() == -1 and y.max() == 1 and norm.low_percentile == 0 and norm.high_percentile == 100
    np.testing.assert_allclose(
        norm.inverse(y[:, :, None])[..., 0], small_scene.data[:, v], rtol=1e-5, atol=0.05
    )
    assert Normalization.from_dict(norm.to_dict()) == norm
    # a record written before the percentiles were stored still reads as the default ones
    old = {k: v for k, v in norm.to_dict().items() if "percentile" not in k}
    assert Normalization.from_dict(old).low_percentile == 0.1


@pytest.mark.parametrize("preset,changes", [("mild", 1), ("seasonal", 2), ("change", 12)])
def test_presets_record_their_change_areas(small_scene, preset, changes):
    from qmtgan.train.simulate import change_mask, preset_config

    target, params = simulate_target(small_scene, preset_config(preset, seed=5))
    assert params["config"]["preset"] == preset and len(params["land_cover_changes"]) == changes
    mask = change_mask(params, small_scene.shape)
    assert mask is not None and mask.shape == small_scene.shape
    assert mask.any() == any(c["radius_px"] > 0 for c in params["land_cover_changes"])
    assert change_mask({"land_cover_changes": []}, small_scene.shape) is None
