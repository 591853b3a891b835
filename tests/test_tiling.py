"""Cutting into patches and stitching back is lossless and keeps the georeferencing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.raster import write_geotiff
from qmtgan.runtime.scene import Scene
from qmtgan.runtime.tiling import PatchGrid


@pytest.mark.parametrize("h,w,p", [(64, 64, 32), (70, 45, 16), (33, 97, 32), (5, 5, 5)])
def test_cut_then_stitch_is_lossless(h, w, p):
    image = np.random.default_rng(h * w).normal(size=(3, h, w)).astype(np.float32)
    grid = PatchGrid(h, w, p)
    patches = grid.cut(image)
    assert patches.shape == (grid.rows * grid.cols, p, p, 3)
    assert grid.rows == -(-h // p) and grid.cols == -(-w // p)
    np.testing.assert_array_equal(grid.stitch(patches), image)


def test_edge_patches_are_mirror_padded_and_manifest_says_how_much_is_real():
    image = np.arange(2 * 40 * 50, dtype=np.float32).reshape(2, 40, 50)
    grid = PatchGrid(40, 50, 32)
    patches = grid.cut(image)
    last = grid.patches[-1]
    assert (last.row, last.col, last.height, last.width) == (32, 32, 8, 18)
    # column 18 of the last patch mirrors column 17 (scene column 49)
    np.testing.assert_array_equal(patches[-1][:8, 18, :], patches[-1][:8, 17, :])
    assert grid.to_manifest()["edge_rule"].startswith("symmetric")


def test_a_scene_smaller_than_a_patch_is_mirror_padded_and_stitches_back():
    image = np.random.default_rng(1).random((3, 20, 30)).astype(np.float32)
    grid = PatchGrid(20, 30, 64)
    assert (grid.rows, grid.cols) == (1, 1)
    patches = grid.cut(image)
    assert patches.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(grid.stitch(patches), image)
    with pytest.raises(QmtganError, match="empty scene"):
        PatchGrid(0, 30, 64)


def test_stitched_geotiff_keeps_crs_and_transform(tmp_path, small_scene):
    grid = PatchGrid(*small_scene.shape, 32)
    stitched = grid.stitch(grid.cut(small_scene.data))
    out = write_geotiff(tmp_path / "stitched.tif", Scene(stitched, small_scene.crs, small_scene.transform))
    with rasterio.open(out) as ds:
        assert ds.crs == small_scene.crs
        assert ds.transform == small_scene.transform
        assert ds.descriptions[0] == "B01" and ds.count == 12
        np.testing.assert_array_equal(ds.read(), np.rint(small_scene.data).astype(np.uint16))


def test_pair_folder_has_geotiffs_metadata_and_manifest(small_pair_dir, small_scene):
    from qmtgan.train.pair import load_pair

    reference, target, meta, manifest = load_pair(small_pair_dir)
    assert reference.transform == small_scene.transform and target.crs == small_scene.crs
    assert meta["simulation"]["config"]["seed"] == 3
    assert len(meta["simulation"]["gains"]) == 12
    assert manifest["patch_size"] == 32 and len(manifest["patches"]) == 3 * 4
    assert all(p["valid_fraction"] == 1.0 for p in manifest["patches"])
    assert json.loads((small_pair_dir / "patches.json").read_text())["crs"] == small_scene.crs.to_wkt()
    pair = load_pair(small_pair_dir)  # the same, as a record
    np.testing.assert_array_equal(pair.valid, reference.valid & target.valid)
    assert pair.patches == manifest and pair.meta == meta and pair.folder == small_pair_dir
    assert pair.identity["sha256"] == meta["sha256"] and pair.identity["simulation_seed"] == 3


def test_pair_folder_detects_a_changed_file(tmp_path, small_pair_dir):
    import shutil

    from qmtgan.train.pair import load_pair

    copy = tmp_path / "copy"
    shutil.copytree(small_pair_dir, copy)
    with open(copy / "target.tif", "r+b") as fh:
        fh.seek(-10, 2)
        fh.write(b"\x00" * 10)
    with pytest.raises(QmtganError, match="target.tif.*sha256"):
        load_pair(copy)
