"""Streaming decode: the same floats as the whole-array path in both tilings, a GeoTIFF written
window by window that appears only when complete, and a peak memory that does not grow with
the scene."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import conv_onnx_backend, run_cli

TILE = 32


@pytest.fixture(scope="module")
def conv_backend(tmp_path_factory):
    return conv_onnx_backend(tmp_path_factory.mktemp("onnx"), TILE)


@pytest.fixture(scope="module")
def odd_scene(small_pair_dir, tmp_path_factory):
    """A 70x90 px crop of the real reference (no multiple of the tile), with a nodata corner."""
    from qmtgan.runtime.raster import read_reference, write_geotiff
    from qmtgan.runtime.scene import Scene

    ref = read_reference(small_pair_dir / "reference.tif")
    data = ref.data[:, :70, :90].copy()
    data[:, :5, :7] = 0
    path = tmp_path_factory.mktemp("odd") / "reference.tif"
    write_geotiff(path, Scene(data, ref.crs, ref.transform))
    return path


def _streamed(backend, path, norm, overlap):
    from qmtgan.runtime.stream import SceneReader, stream_scene

    with SceneReader(path) as reader:
        out = np.full((12, *reader.shape), np.nan, np.float32)
        hits = np.zeros(reader.shape, int)

        def emit(window):
            _, h, w = window.prediction.shape
            out[:, window.row:window.row + h, window.col:window.col + w] = window.prediction
            hits[window.row:window.row + h, window.col:window.col + w] += 1

        latencies = stream_scene(backend, reader, norm, TILE, overlap, emit)
    return out, hits, latencies


@pytest.mark.parametrize("overlap", [0, 8])
def test_streaming_gives_the_whole_array_paths_floats(conv_backend, odd_scene, overlap):
    from qmtgan.runtime.infer import run_scene
    from qmtgan.runtime.normalization import Normalization
    from qmtgan.runtime.raster import read_reference

    ref = read_reference(odd_scene)
    norm = Normalization.fit([ref.data], ref.valid)
    whole, whole_latencies = run_scene(conv_backend, ref.data, norm, TILE, overlap)
    streamed, hits, latencies = _streamed(conv_backend, odd_scene, norm, overlap)
    assert (hits == 1).all()  # every pixel written exactly once
    assert len(latencies) == len(whole_latencies)
    # same process, same CPU, same arithmetic in the same order: bit for bit
    assert np.array_equal(streamed, whole)


def test_mirror_indices_match_numpy_symmetric_padding():
    from qmtgan.runtime.tiling import mirror_indices

    line = np.arange(10)
    assert np.array_equal(line[mirror_indices(6, 11, 10)], np.pad(line, (0, 7), mode="symmetric")[6:17])
    assert np.array_equal(line[mirror_indices(0, 47, 10)], np.pad(line, (0, 37), mode="symmetric"))


def test_scene_writer_matches_the_whole_scene_writer_and_is_atomic(conv_backend, odd_scene, tmp_path):
    import rasterio

    from qmtgan.runtime.errors import QmtganError
    from qmtgan.runtime.normalization import Normalization
    from qmtgan.runtime.raster import SceneWriter, read_reference, write_scene
    from qmtgan.runtime.scene import Scene
    from qmtgan.runtime.stream import SceneReader, stream_scene

    ref = read_reference(odd_scene)
    norm = Normalization.fit([ref.data], ref.valid)
    streamed, _, _ = _streamed(conv_backend, odd_scene, norm, 0)
    whole = write_scene(tmp_path / "whole.tif", Scene(streamed, ref.crs, ref.transform), valid=ref.valid)
    dest = tmp_path / "streamed.tif"
    with SceneReader(odd_scene) as reader:
        with SceneWriter(dest, 12, *reader.shape, reader.crs, reader.transform, overviews=True) as writer:
            stream_scene(
                conv_backend,
                reader,
                norm,
                TILE,
                0,
                lambda w: writer.write(w.row, w.col, w.prediction, w.valid),
            )
    with rasterio.open(whole) as a, rasterio.open(dest) as b:
        assert np.array_equal(a.read(), b.read())
        assert b.crs == a.crs and b.transform == a.transform and b.nodata == 0
        assert b.descriptions[0] == "B01" and b.overviews(1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.tif", "whole.tif"]

    # a failure mid-scene leaves no file, and no temporary either
    broken = tmp_path / "broken.tif"
    calls = []

    def failing(window):
        calls.append(window)
        if len(calls) == 3:
            raise QmtganError("backend died")
        writer.write(window.row, window.col, window.prediction, window.valid)

    with pytest.raises(QmtganError, match="backend died"):
        with SceneReader(odd_scene) as reader:
            with SceneWriter(broken, 12, *reader.shape, reader.crs, reader.transform) as writer:
                stream_scene(conv_backend, reader, norm, TILE, 0, failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.tif", "whole.tif"]


def test_strip_metrics_equal_whole_image_metrics(small_pair_dir):
    from qmtgan.runtime import metrics
    from qmtgan.runtime.raster import read_reference
    from qmtgan.runtime.stream import SceneReader, compare

    ref, tgt = read_reference(small_pair_dir / "reference.tif"), read_reference(small_pair_dir / "target.tif")
    expected = metrics.image_metrics(tgt.data, ref.data, ref.valid & tgt.valid)
    with SceneReader(small_pair_dir / "target.tif") as t, SceneReader(small_pair_dir / "reference.tif") as r:
        for block in (10, 31, 47, 95, 127, 500):  # none divides the 96 rows or the 128 columns
            got = compare(t, r, block=block)
            for key in expected:
                assert got[key] == pytest.approx(expected[key], rel=1e-9), (block, key)


def test_mosaic_mirrors_the_scene(small_pair_dir, tmp_path):
    import rasterio

    proc = run_cli("prepare", "--mosaic", "300", "--pair", small_pair_dir, "-o", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    with (
        rasterio.open(small_pair_dir / "reference.tif") as src,
        rasterio.open(tmp_path / "m" / "reference.tif") as m,
    ):
        a, b = src.read(), m.read()
        assert b.shape == (12, 300, 300) and m.descriptions == src.descriptions
    h, w = a.shape[1:]
    assert np.array_equal(b[:, :h, :w], a)
    assert np.array_equal(b[:, h:2 * h, :w], a[:, ::-1])          # the next copy is mirrored
    assert np.array_equal(b[:, :h, w:2 * w], a[:, :, ::-1][:, :, : min(w, 300 - w)])


# The bound on growth: the 4096x4096 scene has 15.7 Mpx more than the 1024x1024 one; one float32
# copy of those is 755 MB, the uint16 file's pixels 377 MB. Streaming holds neither.
GROWTH_BOUND_MB = 64


def test_peak_memory_does_not_grow_with_the_scene(tiny_bundles, small_pair_dir, tmp_path):
    from qmtgan.bench.full_tile import decode, mosaic

    out, _ = tiny_bundles
    peaks = {}
    for size in (1024, 4096):
        scene = mosaic(small_pair_dir, size, tmp_path)
        result = decode(out / "tflite-int8", scene, tmp_path / f"decoded{size}.tif", threads=None)
        assert result["tiles"] == (size // TILE) ** 2 and np.isfinite(result["snr_db"])
        peaks[size] = result["maxrss_mib"]
    assert peaks[4096] - peaks[1024] < GROWTH_BOUND_MB, peaks


def test_smoke_tile_is_a_small_mirrored_crop_stored_losslessly(small_pair_dir, tmp_path):
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.runtime.raster import read_reference
    from qmtgan.runtime.tileset import load_tiles, save_tiles, smoke_tiles

    ref, tgt = read_reference(small_pair_dir / "reference.tif"), read_reference(small_pair_dir / "target.tif")
    smoke = smoke_tiles(ref.data, tgt.data, 64, budget_bytes=4000)
    side = smoke.crop
    assert 8 <= side < 64 and smoke.reference.shape == (1, 12, 64, 64) and smoke.valid.all()
    # the crop is real data from the scene, mirrored out to the tile
    crop = smoke.reference[0, :, :side, :side]
    assert any(np.array_equal(crop, ref.data[:, r:r + side, c:c + side])
               for r in range(ref.shape[0] - side + 1) for c in range(ref.shape[1] - side + 1))
    assert np.array_equal(smoke.reference[0, :, side:2 * side, :side], crop[:, ::-1])
    path = save_tiles(tmp_path / "smoke.npz", smoke)
    with np.load(path) as z:
        assert z["reference"].dtype == np.uint16 and z["reference"].shape == (1, 12, side, side)
    assert path.stat().st_size < 4000 + 2000  # the DN budget plus the archive's own overhead
    back = load_tiles(path)
    assert np.array_equal(back.reference, smoke.reference) and np.array_equal(back.target, smoke.target)
    assert back.reference.dtype == np.float32 and back.crop == side

    # DN that uint16 cannot hold exactly stay float32
    fractional = smoke_tiles(ref.data + 0.25, tgt.data, 64, budget_bytes=4000)
    with np.load(save_tiles(tmp_path / "f.npz", fractional)) as z:
        assert z["reference"].dtype == np.float32 and z["target"].dtype == np.uint16
    # a hostile tile size is refused by name
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "bad.npz", **{**arrays, "tile": np.asarray(10**9)})
    with pytest.raises(QmtganError, match="'tile'"):
        load_tiles(tmp_path / "bad.npz")


def test_a_read_failing_mid_scene_is_a_clear_error_and_leaves_no_file(conv_backend, small_pair_dir, tmp_path):
    import rasterio

    from qmtgan.runtime.errors import QmtganError
    from qmtgan.runtime.normalization import Normalization
    from qmtgan.runtime.raster import SceneWriter, read_reference
    from qmtgan.runtime.stream import SceneReader, stream_scene

    ref = read_reference(small_pair_dir / "reference.tif")
    norm = Normalization.fit([ref.data], ref.valid)
    data = bytearray((small_pair_dir / "reference.tif").read_bytes())
    # the header survives, the first full-resolution block does not
    with rasterio.open(small_pair_dir / "reference.tif") as src:
        at = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
    data[at : at + 4096] = bytes(4096)
    corrupt = tmp_path / "in" / "corrupt.tif"
    corrupt.parent.mkdir()
    corrupt.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(QmtganError, match="corrupt.tif: unreadable or truncated"):
        with SceneReader(corrupt) as reader:
            with SceneWriter(out / "decoded.tif", 12, *reader.shape, reader.crs, reader.transform) as writer:
                stream_scene(conv_backend, reader, norm, TILE, 0,
                             lambda w: writer.write(w.row, w.col, w.prediction, w.valid))
    assert not out.exists() or not any(out.iterdir())


def test_too_little_disk_is_refused_before_the_run(tmp_path):
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.runtime.raster import SceneWriter

    # a 10980 x 10980 tile... 10**7 times over: no file system here has that much free
    with pytest.raises(QmtganError, match="MiB free"):
        SceneWriter(tmp_path / "huge.tif", 12, 10980 * 1000, 10980 * 10000)
    assert not any(tmp_path.iterdir())


# The bound on memory growth over a soak: after the first passes warm the allocators and caches,
# 45 more streamed decodes in one process may add at most this much resident memory.
SOAK_GROWTH_BOUND_MIB = 16


def test_fifty_decodes_in_one_process_keep_memory_flat(tiny_bundles, small_pair_dir, tmp_path):
    from qmtgan.bench.soak import soak, summary, write_report

    out, _ = tiny_bundles
    rows = soak(out / "tflite-int8", small_pair_dir / "reference.tif", passes=50)
    s = summary(rows)
    assert s["passes"] == 50 and s["rss_growth_after_settle_mib"] < SOAK_GROWTH_BOUND_MIB, s
    write_report(
        tmp_path / "soak", rows, {"bundle": "tiny", "reference": "small pair", "host": {"cpu": "this"}}
    )
    assert (tmp_path / "soak" / "soak.png").stat().st_size > 0 and "growth" in (
        tmp_path / "soak" / "soak.md"
    ).read_text()
