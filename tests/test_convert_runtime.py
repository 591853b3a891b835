"""TFLite / ONNX artifacts in their real runtimes, deployment bundles, the TF-free device
runtime, tiled decoding, and their bad inputs."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

from helpers import run_cli, run_cli_without_tf, write_band
from qmtgan.runtime.bundle import write_manifest


@pytest.fixture(scope="module")
def bundles(tiny_bundles):
    return tiny_bundles


def test_every_artifact_runs_in_its_runtime_and_agrees_with_keras(bundles):
    out, records = bundles
    assert set(records) == {
        "keras-fp32",
        "tflite-fp32",
        "tflite-fp16",
        "tflite-dynamic",
        "tflite-int8",
        "tflite-16x8",
        "onnx",
        "onnx-int8",
        "tvm-host-x86_64",
        "tvm-rpi4",
        "tvm-rpi5",
        "tvm-jetson-nano",
        "tvm-jetson-orin-nano",
    }
    # stated tolerances: float32 ~ exact; fp16/dynamic/16x8 close; int8 within the 1 dB threshold
    assert records["tflite-fp32"]["snr_vs_float_db"] > 80
    assert records["onnx"]["snr_vs_float_db"] > 80
    assert records["tvm-host-x86_64"]["snr_vs_float_db"] > 80
    for name in ("tflite-fp16", "tflite-dynamic", "tflite-16x8"):
        assert records[name]["snr_vs_float_db"] > 30, name
    float_snr = records["keras-fp32"]["snr_vs_target_db"]
    for name in ("tflite-int8", "onnx-int8"):
        assert float_snr - records[name]["snr_vs_target_db"] < 1.0, name
    manifest = json.loads((out / "tflite-int8" / "manifest.json").read_text())
    assert manifest["input"]["dtype"] == "int8" and manifest["input"]["shape"] == [1, 32, 32, 12]
    assert manifest["input"]["quantization"][0] > 0
    assert (
        manifest["measured"]["tflite-int8"]["snr_vs_target_db"] == records["tflite-int8"]["snr_vs_target_db"]
    )
    assert len(manifest["files"]["model.tflite"]) == 64 and manifest["bands"][8] == "B8A"
    assert (out / "onnx.tar.gz").stat().st_size > 0
    assert manifest["graph"]["transposed_convolution"].startswith("sub-pixel")


def test_the_output_clip_is_one_clip_and_the_tvm_module_holds_no_output_sized_constant(tmp_path):
    """tf2onnx writes the residual output's clip as Min/Max against (1, 1, 1, 1) constants; the
    export makes it one Clip (same outputs in ONNX Runtime), so TVM folds no output-sized arrays
    into the module. A small linear-residual generator, untrained (the graph is what matters)."""
    import onnx
    import onnxruntime as ort

    from qmtgan.convert.onnx_export import to_onnx
    from qmtgan.convert.tvm_build import compile_onnx
    from qmtgan.targets.registry import board
    from qmtgan.train.models.registry import build_generator, default_config

    from qmtgan.convert.deploy_graph import deploy_graph

    tile = 64
    model = deploy_graph(build_generator(default_config("multitempgan", ngf=4, depth=2, patch_size=tile,
                                                        residual="linear", spectral_kernel=3)))
    onnx_bytes = to_onnx(model)
    ops = [n.op_type for n in onnx.load_model_from_string(onnx_bytes).graph.node]
    assert ops.count("Clip") == 1 and "Min" not in ops and "Max" not in ops
    assert ops.count("DepthToSpace") == 2  # kept for TVM; ONNX Runtime's graph has it split
    ort_graph = onnx.load_model_from_string(to_onnx(model, for_onnxruntime=True)).graph
    ort_ops = [n.op_type for n in ort_graph.node]
    assert "DepthToSpace" not in ort_ops and ort_ops.count("Transpose") == ops.count("Transpose") + 4
    x = np.random.default_rng(0).normal(0, 2, (1, tile, tile, 12)).astype(np.float32)
    y = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(None, {"reference": x})[0]
    np.testing.assert_allclose(y, model(x, training=False).numpy(), atol=1e-5)
    assert np.abs(y).max() == 1.0  # the clip is active on this input

    so = tmp_path / "model.so"
    compile_onnx(onnx_bytes, x.shape, board("host-x86_64"), so)
    symbols = subprocess.run(["nm", "-S", so], capture_output=True, text=True, check=True).stdout
    blob = next(int(line.split()[1], 16) for line in symbols.splitlines() if "__tvm_ffi__library_bin" in line)
    assert blob < len(onnx_bytes) + x.nbytes  # the weights and the VM code; two output arrays would not fit


def test_depth_to_space_is_split_into_single_axis_transposes_with_the_same_values():
    """Each DCR DepthToSpace with a static shape becomes reshapes around two one-axis transposes,
    bit for bit the same in ONNX Runtime; a CRD one, whose order differs, is left alone."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from qmtgan.convert.onnx_export import split_depth_to_space

    def model(mode: str):
        node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=mode)
        graph = helper.make_graph([node], "d2s",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 10, 14])])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    x = np.random.default_rng(0).normal(size=(2, 12, 5, 7)).astype(np.float32)

    def run(m):
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    for mode, expect in (("DCR", 1), ("CRD", 0)):
        original, split = model(mode), model(mode)
        assert split_depth_to_space(split) == expect
        onnx.checker.check_model(split)
        ops = [n.op_type for n in split.graph.node]
        assert ops == (["Reshape", "Transpose"] * 2 + ["Reshape"] if expect else ["DepthToSpace"])
        for t in (n for n in split.graph.node if n.op_type == "Transpose"):
            perm = list(helper.get_attribute_value(t.attribute[0]))
            moved = [i for i, p in enumerate(perm) if p != i]
            assert len(moved) == 2  # one axis moved by one place: ONNX Runtime's fast path
        np.testing.assert_array_equal(run(split), run(original))


def test_a_quantized_depth_to_space_is_split_with_every_step_on_8_bit_values():
    """In a QDQ model (DequantizeLinear -> DepthToSpace -> QuantizeLinear), requantize=True
    quantizes every step's output with the QuantizeLinear's parameters: the same uint8 result
    as the DepthToSpace, and each step between a QuantizeLinear and a DequantizeLinear."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from qmtgan.convert.onnx_export import split_depth_to_space

    def model():
        nodes = [helper.make_node("DequantizeLinear", ["x", "s_in", "z"], ["f"]),
                 helper.make_node("DepthToSpace", ["f"], ["d"], blocksize=2, mode="DCR"),
                 helper.make_node("QuantizeLinear", ["d", "s_out", "z"], ["y"])]
        constants = [numpy_helper.from_array(np.array(v, dtype), name) for v, dtype, name in
                     ((0.02, np.float32, "s_in"), (0.03, np.float32, "s_out"), (128, np.uint8, "z"))]
        graph = helper.make_graph(nodes, "qdq",
                                  [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4, 12, 16])],
                                  constants)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    x = np.random.default_rng(1).integers(0, 256, (1, 16, 6, 8), dtype=np.uint8)
    original, split = model(), model()
    assert split_depth_to_space(split, requantize=True) == 1
    ops = [n.op_type for n in split.graph.node]
    assert "DepthToSpace" not in ops
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == 5
    for i, node in enumerate(split.graph.node):
        if node.op_type in ("Reshape", "Transpose") and i > 1:
            assert split.graph.node[i - 1].op_type == "DequantizeLinear"
    def run(m):
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    np.testing.assert_array_equal(run(split), run(original))


def test_int8_bundles_explain_and_keep_every_convolution_int8(bundles):
    """--explain-int8: the per-op table travels in the bundle and the manifest names the three
    worst ops; ONNX Runtime's quantizer leaves no convolution in float and records each
    calibration it tried."""
    import csv

    out, _ = bundles
    manifest = json.loads((out / "tflite-int8" / "manifest.json").read_text())
    worst = manifest["int8"]["worst_ops"]
    assert len(worst) == 3 and worst[0]["rmse_steps"] >= worst[1]["rmse_steps"] >= worst[2]["rmse_steps"]
    rows = list(csv.DictReader(io.StringIO((out / "tflite-int8.reports" / "int8_layers.csv").read_text())))
    assert len(rows) > 10 and {r["op"] for r in rows} >= {"CONV_2D", "MEAN"}
    assert [r["op"] for r in rows[:3]] == [w["op"] for w in worst]
    for name in ("int8_layers.md", "int8_layers.png", "int8_layers.csv"):  # beside the bundle, not in it
        assert name not in manifest["files"] and (out / "tflite-int8.reports" / name).stat().st_size > 0
    trials = {t["kept_float"]: t for t in manifest["int8"]["float_trials"]}
    full = trials.pop("nothing (full int8)")
    assert full["ops"] == 0 and "CONV_2D ops" in trials and trials["CONV_2D ops"]["ops"] > 0
    # the full-int8 trial is the MLIR quantizer's model measured for the choice (same calibration)
    quantizers = manifest["int8"]["quantizers"]
    assert abs(full["snr_vs_float_db"] - quantizers["mlir"]["snr_vs_float_db"]) < 0.5
    # both quantizers measured, the better one shipped
    assert set(quantizers) == {"mlir", "legacy"}
    assert manifest["int8"]["quantizer"] == max(quantizers, key=lambda q: quantizers[q]["snr_vs_target_db"])
    onnx_manifest = json.loads((out / "onnx-int8" / "manifest.json").read_text())
    assert onnx_manifest["int8"]["float_convolutions"] == []
    assert set(onnx_manifest["int8"]["calibrations"]) == {"MinMax", "Entropy", "Percentile"}
    assert onnx_manifest["precision"] == "int8" and onnx_manifest["backend"] == "onnxruntime"
    # within the threshold, the int8 bundle ships as int8, not a fallback
    assert manifest["precision"] == "int8" and manifest["input"]["dtype"] == "int8"
    # where the ONNX time goes: per op type, from ONNX Runtime's profiler, beside the bundle
    profile = onnx_manifest["op_profile"]["rows"]
    assert "QLinearConv" in {r["op"] for r in profile} and all(r["ms"] >= 0 for r in profile)
    assert "op_profile.md" not in onnx_manifest["files"]
    assert "QLinearConv" in (out / "onnx-int8.reports" / "op_profile.md").read_text()
    # the TFLite int8 model timed op by op; the normalization's statistics in float islands
    # leave XNNPACK nothing to refuse: one partition
    tflite_profile = manifest["op_profile"]
    assert "CONV_2D" in {r["op"] for r in tflite_profile["rows"]}
    assert tflite_profile["partitions"] == 1 and tflite_profile["not_delegated"] == []
    islands = manifest["int8"]["float_islands"]
    assert islands and all(name.endswith("_bn") for name in islands)
    assert all(r["delegated"] <= r["nodes"] for r in tflite_profile["rows"])
    assert tflite_profile["sum_ms"] > 0 and tflite_profile["whole_ms"] > 0
    assert "CONV_2D" in (out / "tflite-int8.reports" / "op_profile.md").read_text()


def test_run_from_the_archive_matches_the_manifest(bundles, small_pair_dir, tmp_path):
    out, records = bundles
    dest = tmp_path / "decoded.tif"
    proc = run_cli(
        "run",
        "--bundle",
        out / "tflite-fp32.tar.gz",
        "--reference",
        small_pair_dir / "reference.tif",
        "--target",
        small_pair_dir / "target.tif",
        "-o",
        dest,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # the GeoTIFF is rounded to whole DN, the manifest's SNR is not
    assert abs(result["snr_db"] - records["tflite-fp32"]["snr_vs_target_db"]) < 0.05
    assert dest.exists()




def test_the_runtime_imports_no_tensorflow(bundles, small_pair_dir, tmp_path):
    out, _ = bundles
    for name in ("tflite-int8", "onnx", "tvm-host-x86_64"):
        proc = run_cli_without_tf("run", "--bundle", out / name, "--reference",
                                  small_pair_dir / "reference.tif", "-o", tmp_path / f"{name}.tif",
                                  timeout=300)
        assert proc.returncode == 0, proc.stderr


def test_tiled_decode_has_no_seams(tiny_run, small_pair_dir, tmp_path):
    """Overlapping blended tiles vs one large tile on a 64x64 scene: close, and no step at the
    tile borders."""
    from qmtgan.runtime import metrics
    from qmtgan.runtime.bundle import load_bundle
    from qmtgan.runtime.infer import run_scene
    from qmtgan.runtime.raster import read_reference

    for tile in (64, 32):
        assert run_cli("convert", "--model", tiny_run[0], "--pair", small_pair_dir, "--tile", str(tile),
                       "--formats", "onnx", "-o", tmp_path / f"t{tile}").returncode == 0
    ref = read_reference(small_pair_dir / "reference.tif")
    scene = ref.data[:, :64, :64]
    big = load_bundle(tmp_path / "t64" / "onnx")
    small = load_bundle(tmp_path / "t32" / "onnx")
    whole, _ = run_scene(big.backend(), scene, big.normalization, 64, 0)
    tiled, lat = run_scene(small.backend(), scene, small.normalization, 32, 16)
    assert len(lat) == 9
    assert metrics.snr_db(whole, tiled) > 15
    # seam check: the jump between neighbouring columns at the tile borders (16, 32, 48)
    # is no larger in the tiled result than in the single-tile one
    jump = lambda img, c: float(np.mean(np.abs(img[:, :, c] - img[:, :, c - 1])))
    for c in (16, 32, 48):
        assert jump(tiled, c) < 1.5 * jump(whole, c) + 1.0, c


def test_altered_or_missing_bundle_files(bundles, small_pair_dir, tmp_path):
    out, _ = bundles
    ref = small_pair_dir / "reference.tif"
    bad = tmp_path / "altered"
    shutil.copytree(out / "tflite-fp32", bad)
    data = bytearray((bad / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.tflite").write_bytes(bytes(data))
    proc = run_cli("run", "--bundle", bad, "--reference", ref, "-o", tmp_path / "x.tif")
    assert proc.returncode == 1 and "model.tflite fails its sha256 check" in proc.stderr
    (bad / "model.tflite").unlink()
    proc = run_cli("run", "--bundle", bad, "--reference", ref, "-o", tmp_path / "x.tif")
    assert proc.returncode == 1 and "file model.tflite is missing" in proc.stderr
    assert not (tmp_path / "x.tif").exists()


def test_unknown_backend(bundles, small_pair_dir, tmp_path):
    out, _ = bundles
    bad = tmp_path / "unknown"
    shutil.copytree(out / "onnx", bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["backend"] = "coreml"
    write_manifest(bad, manifest)  # re-signed: the backend is what is refused
    proc = run_cli(
        "run", "--bundle", bad, "--reference", small_pair_dir / "reference.tif", "-o", tmp_path / "x.tif"
    )
    assert proc.returncode == 1 and "unknown backend 'coreml'" in proc.stderr


def test_bad_references(bundles, small_scene, tmp_path):
    out, _ = bundles
    three = write_band(tmp_path / "three.tif", small_scene.data[:3].astype(np.uint16), small_scene.transform)
    tiny = tmp_path / "tiny.npy"
    np.save(tiny, small_scene.data[:, :16, :16], allow_pickle=False)
    strings = tmp_path / "strings.npy"
    np.save(strings, np.full((12, 40, 40), "x"), allow_pickle=False)
    for path, needle in ((three, "found 3 band(s)"), (strings, "is not numeric")):
        proc = run_cli("run", "--bundle", out / "onnx", "--reference", path, "-o", tmp_path / "x.tif")
        assert proc.returncode == 1 and needle in proc.stderr, (path, proc.stderr)
        assert "Traceback" not in proc.stderr
    # a scene smaller than one tile is one mirror-padded tile, not an error
    proc = run_cli("run", "--bundle", out / "onnx", "--reference", tiny, "-o", tmp_path / "tiny-out.npy")
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "tiny-out.npy").shape == (12, 16, 16)


def test_archive_members_that_escape_are_refused(small_pair_dir, tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        payload = b"pwned"
        info = tarfile.TarInfo("bundle/../../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    proc = run_cli(
        "run", "--bundle", evil, "--reference", small_pair_dir / "reference.tif", "-o", tmp_path / "x.tif"
    )
    assert proc.returncode == 1 and "would escape the target folder" in proc.stderr
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_extracted_members_lose_setuid_and_foreign_write_bits_and_owners(tmp_path):
    """Members are written by qmtgan itself (no tarfile extraction): files 0600, folders 0700,
    owned by this user, whatever the archive says."""
    import os
    import stat

    from qmtgan.runtime.archive import safe_extract

    archive = tmp_path / "b.tar"
    with tarfile.open(archive, "w") as tar:
        folder = tarfile.TarInfo("bundle")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o777
        tar.addfile(folder)
        info = tarfile.TarInfo("bundle/model.bin")
        info.size, info.mode, info.uid, info.gid, info.uname = 3, 0o6777, 4242, 4242, "somebody"
        tar.addfile(info, io.BytesIO(b"abc"))
    (tmp_path / "out").mkdir()
    assert safe_extract(archive, tmp_path / "out") == tmp_path / "out" / "bundle"
    extracted = tmp_path / "out" / "bundle" / "model.bin"
    mode = stat.S_IMODE(extracted.stat().st_mode)
    assert extracted.read_bytes() == b"abc"
    assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWGRP | stat.S_IWOTH) and mode & 0o600 == 0o600
    assert not stat.S_IMODE((tmp_path / "out" / "bundle").stat().st_mode) & stat.S_IWOTH
    assert extracted.stat().st_uid == os.getuid()


def test_aarch64_modules_are_arm_elfs_for_their_boards(bundles, small_pair_dir, tmp_path):
    from qmtgan.convert.tvm_build import elf_machine

    out, _ = bundles
    assert elf_machine(out / "tvm-host-x86_64" / "model.so") == "x86_64"
    for board, cpu in (("rpi4", "cortex-a72"), ("rpi5", "cortex-a76"), ("jetson-orin-nano", "cortex-a78ae")):
        manifest = json.loads((out / f"tvm-{board}" / "manifest.json").read_text())
        assert elf_machine(out / f"tvm-{board}" / "model.so") == "aarch64"
        assert manifest["elf_machine"] == "aarch64" and manifest["target"] == board
        assert manifest["tool_versions"]["apache-tvm"].startswith("0.27")
        assert manifest["measured"] is None
        assert manifest["files"]["model.so"] and manifest["tool_versions"]["apache-tvm"]
        assert cpu in json.dumps(manifest)  # the board's CPU from targets/boards/<board>.toml
        # untuned, but scheduled: the rules of convert/tvm_rules.py, no database
        assert manifest["tvm_schedules"] == {"rules": ["convolution", "elementwise"], "database": None}
    # a module built for another architecture than this machine's: one clear error
    proc = run_cli("run", "--bundle", out / "tvm-rpi4", "--reference", small_pair_dir / "reference.tif",
                   "-o", tmp_path / "x.tif")
    assert proc.returncode == 1 and "cannot load TVM module on this machine" in proc.stderr
    assert not (tmp_path / "x.tif").exists()


def test_boards_are_data_and_a_missing_cross_compiler_names_its_package():
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.targets.registry import Board, board, boards

    assert {"host-x86_64", "rpi4", "rpi5", "jetson-nano", "jetson-orin-nano"} <= set(boards())
    listed = run_cli("targets", "list")
    assert listed.returncode == 0 and "cortex-a57" in listed.stdout and "cortex-a78ae" in listed.stdout
    shown = run_cli("targets", "show", "rpi4")
    assert json.loads(shown.stdout)["tvm_target"]["mcpu"] == "cortex-a72"
    assert run_cli("targets", "show", "pi9").returncode == 1
    assert board("rpi5").tvm_target["mcpu"] == "cortex-a76"
    with pytest.raises(QmtganError, match="unknown target 'pi9'"):
        board("pi9")
    ghost = Board("ghost", "", "aarch64", "ghost-linux-gnu-g++", "g++-ghost-linux-gnu", {})
    with pytest.raises(QmtganError, match="apt-get install g\\+\\+-ghost-linux-gnu"):
        ghost.compiler()


def test_tflite_without_xnnpack_runs_the_builtin_kernels_to_the_same_result(tiny_bundles):
    from qmtgan.runtime.bundle import load_bundle
    from qmtgan.runtime.infer import run_tiles
    from qmtgan.runtime.tileset import load_tiles

    out, _ = tiny_bundles
    bundle = load_bundle(out / "tflite-fp32")
    x = load_tiles(out / "tflite-fp32" / "smoke.npz").normalized(bundle.normalization)
    with_delegate, _ = run_tiles(bundle.backend(threads=1), x)
    builtin, _ = run_tiles(bundle.backend(threads=1, xnnpack=False), x)
    assert np.abs(with_delegate - builtin).max() < 1e-4


def test_int8_that_loses_too_much_keeps_its_worst_layers_float_before_16x8(tiny_run, small_pair_dir):
    """Against a float SNR no int8 model reaches, full int8 loses too much, so the debugger's
    worst layers stay float; that loses too much as well, so the bundle falls back to 16x8.
    Every step is real (conversion, debugger, measurement on the scene) and recorded."""
    from qmtgan.convert.artifacts import Int8Context, measure_bytes, tflite_int8
    from qmtgan.convert.build import Measurer, calibration_set, deploy_graphs
    from qmtgan.convert.export import deployable_generator
    from qmtgan.runtime.tiling import PatchGrid
    from qmtgan.train.pair import load_pair
    from qmtgan.train.keras_backend import KerasBackend

    reference, target, _, _ = load_pair(small_pair_dir)
    model, _, norm, _ = deployable_generator(tiny_run[0], 32)
    tiles = calibration_set(PatchGrid(*reference.shape, 32).cut(norm.forward(reference.data)), 8)
    measurer = Measurer(reference, target, norm, 32, KerasBackend(model), 0)
    unreachable = measurer.baseline.snr_vs_target_db + 30
    ctx = Int8Context(tiles, lambda kind, blob: measure_bytes(kind, blob, measurer.measure),
                      unreachable, 1.0, explain=False)
    art = tflite_int8(deploy_graphs(model, tiles).int8, ctx)
    int8 = art.manifest["int8"]
    assert len(int8["worst_ops"]) == 3 and "int8_layers.csv" in art.reports
    assert 1 <= len(int8["float_layers"]) <= 3
    assert set(int8["float_layers"]) <= {w["layer"] for w in int8["worst_ops"]}
    assert int8["selective"]["snr_vs_target_db"] < unreachable - 1.0
    assert art.precision == "16x8 (fallback from int8)" and "fallback" in int8
    assert art.measured is None  # the 16x8 model is measured as the bundle is written
