"""Every bad input gets one clear error naming the problem, a non-zero exit, and no output."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from qmtgan.runtime.scene import BAND_ORDER
from helpers import run_cli, write_band


@pytest.fixture(scope="module")
def good_tif(tmp_path_factory, small_scene):
    from qmtgan.runtime.raster import write_geotiff

    return write_geotiff(tmp_path_factory.mktemp("good") / "ref.tif", small_scene)


def assert_fails_cleanly(proc, out, *needles):
    assert proc.returncode != 0
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists(), f"partial output left at {out}"
    assert not list(out.parent.glob(f".{out.name}.*")), "temporary output left behind"


def test_missing_band_file(tmp_path, small_scene):
    folder = tmp_path / "bands"
    folder.mkdir()
    for i, band in enumerate(BAND_ORDER):
        if band != "B11":
            write_band(folder / f"x_{band}.tif", small_scene.data[i].astype(np.uint16), small_scene.transform)
    out = tmp_path / "pair"
    assert_fails_cleanly(run_cli("prepare", "--reference", folder, "-o", out), out, "B11", "missing band")


def test_wrong_band_count(tmp_path, small_scene):
    path = write_band(tmp_path / "rgb.tif", small_scene.data[:3].astype(np.uint16), small_scene.transform)
    out = tmp_path / "pair"
    assert_fails_cleanly(run_cli("prepare", "--reference", path, "-o", out), out,
                         "rgb.tif", "expected 12 bands", "found 3")


def test_unreadable_raster(tmp_path):
    path = tmp_path / "junk.tif"
    path.write_bytes(b"this is not a GeoTIFF" * 10)
    out = tmp_path / "pair"
    assert_fails_cleanly(run_cli("prepare", "--reference", path, "-o", out), out, "junk.tif", "cannot read")


def test_truncated_raster(tmp_path, small_scene):
    import rasterio

    path = tmp_path / "cut.tif"
    with rasterio.open(path, "w", driver="GTiff", height=96, width=128, count=12, dtype="uint16",
                       crs=small_scene.crs, transform=small_scene.transform) as dst:
        dst.write(small_scene.data.astype(np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "pair"
    assert_fails_cleanly(run_cli("prepare", "--reference", path, "-o", out), out, "cut.tif")


def test_nan_values(tmp_path, small_scene):
    data = small_scene.data.copy()
    data[4, 10:12, 10:13] = np.nan
    path = write_band(tmp_path / "nan.tif", data.astype(np.float32), small_scene.transform,
                      descriptions=list(BAND_ORDER))
    out = tmp_path / "pair"
    assert_fails_cleanly(run_cli("prepare", "--reference", path, "-o", out), out,
                         "nan.tif band B05", "6 NaN")


def test_non_overlapping_pair(tmp_path, good_tif, small_scene):
    far = from_origin(100000, 1000000, 10, 10)
    target = write_band(tmp_path / "far.tif", small_scene.data.astype(np.uint16), far,
                        descriptions=list(BAND_ORDER))
    out = tmp_path / "pair"
    assert_fails_cleanly(run_cli("prepare", "--reference", good_tif, "--target", target, "-o", out),
                         out, "do not overlap")


def test_shifted_target_is_reprojected_onto_the_reference_grid(tmp_path, good_tif, small_scene):
    t = small_scene.transform
    shifted = from_origin(t.c + 40, t.f - 20, 10, 10)  # 4 columns right, 2 rows down
    target = write_band(tmp_path / "shifted.tif", small_scene.data.astype(np.uint16), shifted,
                        descriptions=list(BAND_ORDER))
    out = tmp_path / "pair"
    proc = run_cli("prepare", "--reference", good_tif, "--target", target, "--patch-size", "32", "-o", out)
    assert proc.returncode == 0, proc.stderr
    from qmtgan.train.pair import load_pair

    reference, aligned, meta, _ = load_pair(out)
    assert aligned.transform == reference.transform
    np.testing.assert_array_equal(aligned.data[:, 2:, 4:], small_scene.data[:, :-2, :-4].astype(np.uint16))
    assert meta["nodata_pixels"] == 96 * 128 - 94 * 124  # the uncovered strip


def test_all_nodata_scene(tmp_path, small_scene):
    path = write_band(tmp_path / "empty.tif", np.zeros((12, 96, 128), np.uint16), small_scene.transform,
                      descriptions=list(BAND_ORDER))
    out = tmp_path / "pair"
    assert_fails_cleanly(run_cli("prepare", "--reference", path, "--patch-size", "32", "-o", out), out,
                         "nodata")


def test_a_scene_smaller_than_one_patch_is_one_padded_patch(tmp_path, good_tif):
    """Small real scenes (e.g. OSCD paris, 408 x 390) are padded like any scene edge."""
    import json

    out = tmp_path / "pair"
    proc = run_cli("prepare", "--reference", good_tif, "--patch-size", "512", "-o", out)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "patches.json").read_text())
    assert (manifest["rows"], manifest["cols"]) == (1, 1)
    assert (manifest["patches"][0]["height"], manifest["patches"][0]["width"]) == (96, 128)


@pytest.mark.parametrize("args,needle", [
    (["prepare", "--sample", "--patch-size", "abc", "-o", "{out}"], "'abc' is not a valid integer"),
    (["prepare", "--sample", "--patch-size", "0", "-o", "{out}"], "0 is not in the range x>=1"),
    (["train", "--pair", "{pair}", "-o", "{out}", "--epochs", "ten"], "'ten' is not a valid integer"),
    (["train", "--pair", "{pair}", "-o", "{out}", "--lr", "fast"], "'fast' is not a valid float"),
    (["model", "summary", "--ngf", "-3"], "-3 is not in the range"),
])
def test_non_numeric_cli_values(tmp_path, small_pair_dir, args, needle):
    out = tmp_path / "out"
    args = [a.format(out=out, pair=small_pair_dir) for a in args]
    proc = run_cli(*args)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert not out.exists()


def test_every_command_has_help_and_there_is_a_version():
    from qmtgan import __version__

    assert __version__ in run_cli("--version").stdout
    for cmd in (["prepare"], ["preview"], ["model", "summary"], ["train"], ["evaluate"], ["demo"],
                ["quantize", "sweep"], ["quantize", "report"], ["encode"], ["decode"],
                ["convert"], ["run"], ["targets", "list"], ["targets", "show"]):
        proc = run_cli(*cmd, "--help")
        assert proc.returncode == 0 and "Usage:" in proc.stdout, cmd


def test_one_cli_vocabulary_and_renamed_options_still_work_with_a_notice(tmp_path):
    """-o/--out everywhere, --board for hardware, lists comma-separated or repeated, KEY=VALUE
    checked; an old option name still works once, with a deprecation notice."""
    for cmd in (
        ["prepare"],
        ["train"],
        ["evaluate"],
        ["quantize", "sweep"],
        ["encode"],
        ["baselines"],
        ["convert"],
        ["run"],
        ["decode"],
        ["demo"],
        ["bench"],
        ["targets", "build-runner"],
    ):
        assert "-o, --out" in run_cli(*cmd, "--help").stdout, cmd
    for cmd in (["flash"], ["targets", "build-runner"]):
        assert "--board" in run_cli(*cmd, "--help").stdout, cmd
    # the old name reaches the same check as the new one (an unknown board), after a notice
    old = run_cli("targets", "build-runner", "--target", "pi9", "-o", tmp_path / "x")
    new = run_cli("targets", "build-runner", "--board", "pi9", "-o", tmp_path / "x")
    assert old.returncode == new.returncode == 1 and "unknown target 'pi9'" in old.stderr
    assert "--target is deprecated" in old.stderr and "deprecated" not in new.stderr
    missing = run_cli("targets", "build-runner", "-o", tmp_path / "x")
    assert missing.returncode == 2 and "--board" in missing.stderr
    # lists: repeated and comma-separated mean the same; a bad item names itself
    bench = ["bench", "--bundles", tmp_path, "--model", tmp_path, "--pair", tmp_path]
    for boards in (["--boards", "host-x86_64,pi9"], ["--boards", "host-x86_64", "--boards", "pi9"],
                   ["--targets", "host-x86_64,pi9"]):
        proc = run_cli(*bench, *boards)
        assert proc.returncode == 1 and "unknown target 'pi9'" in proc.stderr, boards
    proc = run_cli(*bench, "--threads", "1,two")
    assert proc.returncode == 2 and "two" in proc.stderr
    proc = run_cli(*bench, "--host", "rpi4")
    assert proc.returncode == 2 and "KEY=VALUE" in proc.stderr


def test_scratch_folders_go_unless_asked_to_stay(monkeypatch, capsys):
    from qmtgan.runtime.scratch import scratch_dir

    monkeypatch.delenv("QMTGAN_KEEP_TMP", raising=False)
    with scratch_dir() as gone:
        (Path(gone) / "f").write_text("x")
    assert not Path(gone).exists()
    monkeypatch.setenv("QMTGAN_KEEP_TMP", "1")
    with scratch_dir() as kept:
        (Path(kept) / "f").write_text("x")
    assert (Path(kept) / "f").exists() and kept in capsys.readouterr().err
    shutil.rmtree(kept)


@pytest.mark.parametrize("change,needle", [
    (("[tflite]\n", "[tflite]\nthread = 2\n"), "unknown key 'tflite.thread'"),
    (("memory_budget_mb = 4096", "memory_budget_mb = \"4 GB\""), "'memory_budget_mb' must be int"),
    (("[reach]\n", "[reach]\nport = 22\n"), "unknown key 'reach.port'"),
    (("arch = ", "archh = "), "unknown key 'archh'"),
    (("name = ", "name = = "), "not a valid board TOML"),
    (("cores = 4", "cores = 4.5"), "'peak.cores' must be int"),
    (("xnnpack = true", "xnnpack = 1"), "'tflite.xnnpack' must be bool"),
    (("cross_compiler = ", "# cross_compiler = "), "missing key 'cross_compiler'"),
    (("fma_pipes = 2\n", ""), "missing key 'peak.fma_pipes'"),
    (("[tflite]", "tflite = 4\n[tflitex]"), "'tflite' must be a table"),
])
def test_a_board_file_with_a_typo_is_refused_by_name(tmp_path, change, needle):
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.targets.registry import BOARDS_DIR, _load

    text = (BOARDS_DIR / "rpi4.toml").read_text()
    assert change[0] in text
    bad = tmp_path / "rpi4.toml"
    bad.write_text(text.replace(change[0], change[1], 1))
    with pytest.raises(QmtganError, match=needle.replace("(", r"\(")):
        _load(bad)
    assert _load(BOARDS_DIR / "rpi4.toml").name == "rpi4"


@pytest.mark.parametrize("change,needle", [
    ({"tile_size": "512"}, "manifest key 'tile_size' is missing or not int"),
    ({"tile_size": 10**6}, "tile_size 1000000 is not in 1..8192"),
    ({"name": None}, "manifest key 'name' is missing"),
    ({"files": {"model.onnx": 7}}, "'files' must map file names to sha256 strings"),
    ({"model_file": "other.onnx"}, "model file is not among its checked files"),
    ({"bands": ["B01"]}, "band order"),
    ({"normalization": {"low": [0.0]}}, "bad normalization record"),
])
def test_a_bundle_manifest_is_checked_when_opened(tmp_path, change, needle):
    import json

    from qmtgan.runtime.bundle import load_bundle, write_bundle, write_manifest
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.runtime.normalization import Normalization

    norm = Normalization(tuple([0.0] * 12), tuple([1.0] * 12))
    dest = write_bundle(tmp_path / "b", {"name": "b", "backend": "onnxruntime", "model_file": "model.onnx",
                                          "tile_size": 32, "normalization": norm.to_dict(), "generator": {}},
                        {"model.onnx": b"not a model, never loaded here"})
    assert load_bundle(dest).manifest.tile_size == 32
    manifest = json.loads((dest / "manifest.json").read_text())
    write_manifest(dest, {**manifest, **change})  # re-signed: each field check is what refuses
    with pytest.raises(QmtganError, match=needle):
        load_bundle(dest)


@pytest.mark.parametrize("record,change,needle", [
    ("patches.json", {"scene_height": 95}, "disagree on its size: reference.tif 96x128"),
    ("pair.json", {"width": 64}, "pair.json 96x64"),
    ("patches.json", {"patches": []}, "lists 0 patches"),
])
def test_a_pair_whose_records_disagree_is_refused(tmp_path, small_pair_dir, record, change, needle):
    """pair.json, patches.json and the two GeoTIFFs are read as one pair: a size they disagree on
    (or a patch list that does not fit its grid) is one error naming the pair."""
    import json
    import shutil

    from qmtgan.runtime.errors import QmtganError
    from qmtgan.train.pair import load_pair

    pair = shutil.copytree(small_pair_dir, tmp_path / "pair")
    path = pair / record
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(QmtganError, match=needle):
        load_pair(pair)


def test_the_manifest_is_written_and_read_through_one_type(tmp_path):
    """write_bundle writes what Manifest.to_record gives; reading it back yields the same typed
    manifest, and a manifest the device would refuse is refused before anything is written."""
    from qmtgan.runtime.bundle import Manifest, load_bundle, read_manifest, write_bundle
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.runtime.normalization import Normalization

    norm = Normalization(tuple([0.0] * 12), tuple([2.0] * 12))
    base = {"name": "b", "backend": "onnxruntime", "model_file": "model.onnx", "tile_size": 32,
            "normalization": norm.to_dict(), "generator": {"ngf": 4}, "measured": {"x": 1.5}}
    dest = write_bundle(tmp_path / "b", base, {"model.onnx": b"never loaded here"})
    opened = load_bundle(dest).manifest
    again = Manifest.from_record(opened.to_record(), "round trip")
    assert (again.name, again.tile_size, again.files, again.generator, again.normalization) == (
        opened.name, 32, opened.files, {"ngf": 4}, norm)
    assert read_manifest(dest)["measured"] == {"x": 1.5}  # untyped fields travel untouched
    with pytest.raises(QmtganError, match="tile_size 0 is not in"):
        write_bundle(tmp_path / "bad", {**base, "tile_size": 0}, {"model.onnx": b"x"})
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.tar.gz").exists()


def test_missing_system_packages_stop_with_the_exact_command():
    """Without root or sudo, `make deps` (targets/system_packages.sh) stops at once and prints the
    apt-get command that installs what is missing; present packages pass silently."""
    import os
    import subprocess

    from qmtgan.targets.registry import TARGETS_DIR

    script = str(TARGETS_DIR / "system_packages.sh")
    # the script on stdin: `nobody` may not be allowed into the checkout (a clone under /root)
    as_user = ["su", "nobody", "-s", "/bin/sh", "-c"] if os.geteuid() == 0 else ["sh", "-c"]
    env = {"PATH": "/usr/bin:/bin", "QMTGAN_SYSTEM_PACKAGES": "qmtgan-no-such-package dpkg"}
    with open(script) as stdin:
        proc = subprocess.run([*as_user, "sh -s"], stdin=stdin, capture_output=True, text=True, env=env,
                              timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "missing: qmtgan-no-such-package" in proc.stderr and "install them with:" in proc.stderr
    assert "apt-get install -y -qq --no-install-recommends qmtgan-no-such-package'" in proc.stderr
    present = subprocess.run(["sh", script], capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", "QMTGAN_SYSTEM_PACKAGES": "dpkg"})
    assert present.returncode == 0 and present.stdout == ""


@pytest.mark.parametrize("selection, option, needle", [
    ("tflite-fp32", ["--tune"], "--tune does not apply to tflite-fp32; it applies to tvm-"),
    ("onnx-int8", ["--explain-int8"], "--explain-int8 does not apply to onnx-int8; it applies to tflite-int8"
     ),
    ("tflite-fp16", ["--int8-threshold", "0.5"], "--int8-threshold does not apply to tflite-fp16"),
    ("tvm", ["--calibration-tiles", "4"], "--calibration-tiles does not apply to tvm-"),
])
def test_a_convert_option_no_chosen_format_uses_is_refused(tmp_path, selection, option, needle):
    (tmp_path / "model").mkdir()
    (tmp_path / "pair").mkdir()
    proc = run_cli("convert", selection, "--model", tmp_path / "model", "--pair", tmp_path / "pair",
                   "-o", tmp_path / "out", *option)
    assert proc.returncode == 1 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
    # with a format that uses it, the option passes this check (and the empty model folder fails later)
    if option[0] == "--tune":
        folders = ("--model", tmp_path / "model", "--pair", tmp_path / "pair", "-o", tmp_path / "out")
        proc = run_cli("convert", "tvm-host-x86_64", *folders, "--tune", "--trials", "0")
        assert proc.returncode != 0 and "does not apply" not in proc.stderr
