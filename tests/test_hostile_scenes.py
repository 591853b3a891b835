"""Hostile and odd scenes, each through the real CLI or the streaming decoder: Inf next to NaN,
saturated pixels, an all-nodata tile inside a valid scene, a scene one pixel larger than a tile,
a 1-pixel-wide scene, a target at another resolution and in another CRS, and a SAFE folder with
a band missing. (Bands named in another order, NaN, a truncated raster and a shifted target are
in test_ingest.py and test_bad_input.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import conv_onnx_backend, run_cli, write_band
from qmtgan.runtime.scene import BAND_ORDER

TILE = 32


@pytest.fixture(scope="module")
def conv_backend(tmp_path_factory):
    return conv_onnx_backend(tmp_path_factory.mktemp("onnx"), TILE)


def _assert_fails_cleanly(proc, out, *needles):
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert not out.exists()


def test_inf_pixels_are_refused_by_band_and_count(tmp_path, small_scene):
    data = small_scene.data.copy()
    data[7, 0, :4] = np.inf
    data[7, 1, 0] = -np.inf
    path = write_band(tmp_path / "inf.tif", data.astype(np.float32), small_scene.transform,
                      descriptions=list(BAND_ORDER))
    _assert_fails_cleanly(run_cli("prepare", "--reference", path, "-o", tmp_path / "pair"), tmp_path / "pair",
                          "inf.tif band B08", "5 NaN/inf")


def _decode(backend, path, tmp_path, tile=TILE):
    """Stream-decode `path` with a normalization fitted on it; the written uint16 scene."""
    import rasterio

    from qmtgan.runtime.normalization import Normalization
    from qmtgan.runtime.raster import SceneWriter, read_reference
    from qmtgan.runtime.stream import SceneReader, stream_scene

    ref = read_reference(path)
    norm = Normalization.fit([ref.data], ref.valid)
    dest = tmp_path / "decoded.tif"
    with SceneReader(path) as reader, SceneWriter(dest, 12, *reader.shape, reader.crs, reader.transform) as w:
        stream_scene(
            backend, reader, norm, tile, 0, lambda win: w.write(win.row, win.col, win.prediction, win.valid)
        )
    with rasterio.open(dest) as ds:
        return ds.read(), ref


def test_saturated_pixels_decode_within_the_sensor_range(conv_backend, small_scene, tmp_path):
    data = small_scene.data.copy()
    data[:, 20:60, 30:90] = 65535  # a saturated (cloud-like) block
    path = write_band(tmp_path / "sat.tif", data.astype(np.uint16), small_scene.transform,
                      descriptions=list(BAND_ORDER))
    from qmtgan.runtime.normalization import Normalization

    out, ref = _decode(conv_backend, path, tmp_path)
    assert out.dtype == np.uint16 and out.shape == (12, 96, 128)
    assert (out[:, ref.valid] >= 1).all()  # valid pixels never collapse to nodata, nor wrap around
    x = Normalization.fit([ref.data], ref.valid).forward(ref.data)  # what the generator reads
    assert np.isfinite(x).all() and x.min() >= -1 and x.max() == 1.0  # saturation clips to +1


def test_an_all_nodata_tile_inside_a_valid_scene_decodes_to_nodata_there_only(
    conv_backend, small_scene, tmp_path
):
    data = small_scene.data.copy()
    data[:, 32:64, 32:64] = 0  # exactly one grid tile
    path = write_band(tmp_path / "hole.tif", data.astype(np.uint16), small_scene.transform,
                      descriptions=list(BAND_ORDER))
    out, ref = _decode(conv_backend, path, tmp_path)
    assert (out[:, 32:64, 32:64] == 0).all()
    assert (out[:, ref.valid] > 0).all() and ref.valid.sum() == 96 * 128 - 32 * 32


def test_a_scene_one_pixel_larger_than_a_tile(conv_backend, small_scene, tmp_path):
    from qmtgan.runtime.infer import run_scene
    from qmtgan.runtime.normalization import Normalization
    from qmtgan.runtime.raster import read_reference

    path = write_band(tmp_path / "33.tif", small_scene.data[:, :TILE + 1, :TILE + 1].astype(np.uint16),
                      small_scene.transform, descriptions=list(BAND_ORDER))
    out, ref = _decode(conv_backend, path, tmp_path)
    assert out.shape == (12, TILE + 1, TILE + 1) and (out > 0).all()
    # the last row and column come from tiles that are 1 px real and 31 px mirror padding
    whole, latencies = run_scene(conv_backend, read_reference(path).data,
                                 Normalization.fit([ref.data], ref.valid), TILE, 0)
    assert len(latencies) == 4
    np.testing.assert_allclose(out, np.clip(np.rint(whole), 1, 65535), atol=0)


def test_a_one_pixel_wide_scene_decodes_as_one_mirror_padded_tile_column(tiny_bundles, small_scene, tmp_path):
    import rasterio

    out, _ = tiny_bundles
    path = write_band(
        tmp_path / "thin.tif",
        small_scene.data[:, :, :1].astype(np.uint16),
        small_scene.transform,
        descriptions=list(BAND_ORDER),
    )
    dest = tmp_path / "decoded.tif"
    proc = run_cli("run", "--bundle", out / "onnx", "--reference", path, "-o", dest)
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(dest) as ds:
        assert (ds.count, ds.height, ds.width) == (12, 96, 1)
        assert ds.read().max() > 0


def test_a_target_at_20_m_in_another_crs_is_reprojected_onto_the_reference_grid(tmp_path, small_scene):
    """The target as another product would deliver it: 20 m pixels, in UTM zone 19 instead of the
    reference's zone 18 (same place on the ground)."""
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from qmtgan.train.pair import load_pair

    reference = write_band(tmp_path / "ref.tif", small_scene.data.astype(np.uint16), small_scene.transform,
                           crs=small_scene.crs, descriptions=list(BAND_ORDER))
    dst_crs = "EPSG:32619" if str(small_scene.crs) != "EPSG:32619" else "EPSG:32618"
    h, w = small_scene.shape
    bounds = rasterio.transform.array_bounds(h, w, small_scene.transform)
    transform, width, height = calculate_default_transform(
        small_scene.crs, dst_crs, w, h, *bounds, resolution=20
    )
    moved = np.zeros((12, height, width), np.uint16)
    reproject(
        small_scene.data.astype(np.uint16),
        moved,
        src_transform=small_scene.transform,
        src_crs=small_scene.crs,
        dst_transform=transform,
        dst_crs=dst_crs,
        resampling=Resampling.bilinear,
    )
    target = write_band(tmp_path / "tgt.tif", moved, transform, crs=dst_crs, descriptions=list(BAND_ORDER))
    out = tmp_path / "pair"
    proc = run_cli("prepare", "--reference", reference, "--target", target, "--patch-size", "32", "-o", out)
    assert proc.returncode == 0, proc.stderr
    pair = load_pair(out)
    ref, aligned, valid = pair.reference, pair.target, pair.valid
    assert aligned.transform == ref.transform and aligned.crs == ref.crs and aligned.shape == ref.shape
    # two resamplings (to 20 m in zone 19, back to 10 m in zone 18) of the same ground: close
    from qmtgan.runtime.metrics import snr_db

    assert valid.mean() > 0.8 and snr_db(ref.data, aligned.data, valid) > 20


def test_a_safe_folder_with_a_missing_band_names_it(tmp_path):
    from test_ingest import write_band_folder

    safe = tmp_path / "S2B_MSIL1C_X.SAFE"
    write_band_folder(safe / "GRANULE" / "L1C_T10" / "IMG_DATA", name_of=lambda b, r: f"T10_20200928_{b}.tif",
                      skip=("B8A",))
    out = tmp_path / "pair"
    _assert_fails_cleanly(run_cli("prepare", "--reference", safe, "-o", out), out, "B8A")
