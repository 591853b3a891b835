"""Rate-distortion: baselines with rate control from bytes on disk, the residual generator in
every runtime, hybrid payloads, format-1 payloads, and `encode --bpp` (real JPEG2000, real
TensorFlow training, real TFLite and ONNX Runtime)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import run_cli, run_cli_without_tf

# The small pair has 96 x 128 x 12 samples; its JPEG2000 streams carry a few hundred bytes of
# headers, so its rates are higher than a full scene's.
RATES = [0.5, 1.0]


@pytest.fixture(scope="module")
def small_pair(small_pair_dir):
    from qmtgan.rd.points import PairData

    return PairData.load(small_pair_dir)


def test_baselines_hit_their_rates_and_the_reference_row_is_exact(small_pair):
    from qmtgan.rd.baselines import run_baselines
    from qmtgan.runtime.metrics import snr_db

    points, errors = run_baselines(small_pair, RATES)
    assert errors == []
    by_family = {}
    for p in points:
        by_family.setdefault(p.family, []).append(p)
    assert set(by_family) == {
        "reference",
        "gain-offset",
        "linear",
        "linear-3x3",
        "jpeg2000",
        "linear+jpeg2000",
        "linear-3x3+jpeg2000",
        "klt+jpeg2000",
        "linear-3x3+klt+jpeg2000",
    }
    for family in ("jpeg2000", "linear+jpeg2000", "linear-3x3+jpeg2000", "klt+jpeg2000",
                   "linear-3x3+klt+jpeg2000"):
        assert [p.requested_bpp for p in by_family[family]] == RATES
        for p in by_family[family]:
            assert abs(p.bpp / p.requested_bpp - 1) <= 0.05, (p.label, p.bpp)
            assert p.bpp == pytest.approx(8 * p.bytes / small_pair.samples)
    ref = by_family["reference"][0]
    assert ref.bytes == 0 and ref.snr_db == snr_db(
        small_pair.target.data, small_pair.reference.data, small_pair.valid
    )
    # the robust cross-band fit beats a per-band one where the pair did not change
    assert by_family["linear"][0].snr_outside_db > by_family["gain-offset"][0].snr_outside_db
    assert by_family["linear+jpeg2000"][1].snr_db > by_family["linear+jpeg2000"][0].snr_db


def test_the_spectral_klt_is_orthonormal_and_inverts_within_its_step(small_pair):
    from qmtgan.rd.baselines import Klt

    image = small_pair.target.data
    klt = Klt.fit(image, small_pair.valid)
    np.testing.assert_allclose(klt.basis.T @ klt.basis, np.eye(12), atol=1e-5)
    comps = klt.forward(image, small_pair.valid)
    assert comps.dtype == np.int16
    variances = comps[:, small_pair.valid].astype(np.float64).var(axis=1)
    assert np.all(np.diff(variances) <= 1e-6 * variances[0])  # by decreasing variance
    back = klt.inverse(comps)
    err = np.abs(back - image)[:, small_pair.valid]
    assert err.max() <= klt.step * np.sqrt(12) / 2 + 1e-2  # rounding of 12 components, step each
    assert klt.side_bytes == (12 + 144 + 1) * 4


def test_jpeg2000_rate_out_of_reach_is_a_clear_error(small_pair):
    from qmtgan.runtime import jpeg2000
    from qmtgan.runtime.errors import QmtganError

    image = np.clip(small_pair.target.data, 0, 65535).astype(np.uint16)
    with pytest.raises(QmtganError, match="cannot reach"):
        jpeg2000.encode_at_bpp(image, 1e-4)


def test_one_layered_jpeg2000_encode_gives_every_rate(small_pair):
    """encode_at_rates: each rate within the tolerance, from the first k layers of one stream,
    within 0.1 dB of coding that rate on its own; a stream not cut layer by layer is refused."""
    from qmtgan.runtime import jpeg2000
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.runtime.j2k_layers import first_layers, layer_count
    from qmtgan.runtime.metrics import snr_db

    image = np.clip(small_pair.target.data, 0, 65535).astype(np.uint16)
    rates = [*RATES, 2.0]
    layered = jpeg2000.encode_at_rates(image, rates)
    decoded = lambda data: jpeg2000.decode(data, image.shape, "uint16").astype(np.float32)
    snr = lambda data: snr_db(image.astype(np.float32), decoded(data), small_pair.valid)
    gains = []
    for k, (bpp, got) in enumerate(zip(rates, layered), start=1):
        assert abs(got.bpp / bpp - 1) <= 0.05 and got.bpp == pytest.approx(8 * len(got.data) / image.size)
        assert layer_count(got.data) == k
        gains.append(snr(got.data) - snr(jpeg2000.encode_at_bpp(image, bpp).data))
    assert all(abs(g) < 0.1 for g in gains), gains
    assert snr(layered[0].data) < snr(layered[1].data) < snr(layered[2].data)
    with pytest.raises(QmtganError, match="packet lengths|layers"):
        first_layers(jpeg2000.encode(image, 1.0), 1)  # a single-layer stream without PLT
    with pytest.raises(QmtganError, match="cannot keep"):
        first_layers(jpeg2000.encode_layers(image, [1.0, 2.0]), 3)
    with pytest.raises(QmtganError, match="SOC"):
        first_layers(b"not a codestream", 1)


@pytest.mark.parametrize("residual,spectral_kernel", [("reference", 1), ("linear", 1), ("linear", 3)])
def test_residual_generator_with_a_zero_last_layer_returns_its_base(residual, spectral_kernel, tmp_path):
    """Keras, the numpy decoder, TFLite fp32 and ONNX Runtime all return the base prediction
    (the reference itself, or its spectral map) when the change branch is zero."""
    from qmtgan.convert.onnx_export import to_onnx
    from qmtgan.convert.tflite import to_tflite
    from qmtgan.quantize.policy import generator_tensors
    from qmtgan.runtime.backends import load_backend
    from qmtgan.runtime.numpy_generator import NumpyGenerator, conv2d_same
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.models.registry import build_generator

    cfg = GeneratorConfig(
        ngf=4, depth=3, kernel=3, patch_size=32, residual=residual, spectral_kernel=spectral_kernel
    )
    model = build_generator(cfg, batch_size=1)
    rng = np.random.default_rng(0)
    tile = rng.uniform(-1, 1, (1, 32, 32, 12)).astype(np.float32)
    last = model.get_layer("deconv3")
    assert not np.any(last.kernel.numpy()) and not np.any(last.bias.numpy())  # zero at construction
    if residual == "reference":
        base, tolerance = tile, 0.0
    else:
        layer = model.get_layer("spectral")  # a non-trivial map in place of its identity start
        assert np.array_equal(model(tile, training=False).numpy(), tile)
        layer.kernel.assign(rng.normal(0, 0.3, layer.kernel.shape).astype(np.float32))
        layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype(np.float32))
        base = np.clip(conv2d_same(tile[0], layer.kernel.numpy(), layer.bias.numpy()), -1, 1)[None]
        tolerance = 1e-5  # the convolution's sum order differs by runtime
    (tmp_path / "m.tflite").write_bytes(to_tflite(model, "fp32"))
    (tmp_path / "m.onnx").write_bytes(to_onnx(model))
    tensors = generator_tensors(model)
    header = {"generator": cfg.to_dict(), "tensors": [{"name": t.name} for t, _ in tensors]}
    outputs = {"keras": model(tile, training=False).numpy(),
               "numpy": NumpyGenerator(header, [w for _, w in tensors]).run(tile),
               "tflite": load_backend("tflite", tmp_path / "m.tflite", threads=1).run(tile),
               "onnx": load_backend("onnxruntime", tmp_path / "m.onnx", threads=1).run(tile)}
    for name, out in outputs.items():
        assert np.max(np.abs(out - base)) <= tolerance, name


def test_hybrid_payload_round_trip_without_tensorflow(residual_run, small_pair_dir, small_pair, tmp_path):
    ref, tgt = small_pair_dir / "reference.tif", small_pair_dir / "target.tif"
    out = tmp_path / "hybrid.qmtg"
    proc = run_cli("encode", "--reference", ref, "--target", tgt, "--model", residual_run, "--bits", "8",
                   "--residual-bpp", "1.0", "-o", out)
    assert proc.returncode == 0, proc.stderr
    reported = float(proc.stdout.rsplit("SNR ", 1)[1].split(" dB")[0])
    decoded = tmp_path / "decoded.tif"
    proc = run_cli_without_tf("decode", "--reference", ref, out, "-o", decoded)
    assert proc.returncode == 0, proc.stderr
    from qmtgan.runtime import payload as fmt
    from qmtgan.runtime.metrics import snr_db
    from qmtgan.train.ingest import read_scene

    payload = fmt.read(out)
    assert payload.header["residual"]["codec"] == "jpeg2000+klt-in-res" and len(payload.residual) > 0
    got = snr_db(small_pair.target.data, read_scene(decoded).data, small_pair.valid)
    assert got == pytest.approx(
        reported, abs=0.006
    )  # printed to 0.01 dB; the GeoTIFF holds the same whole DN
    from qmtgan.runtime.decode import predict

    prediction_only = snr_db(small_pair.target.data, predict(payload, small_pair.reference), small_pair.valid)
    assert got > prediction_only + 3  # the residual adds what the generator missed


def test_a_hybrid_coded_band_by_band_still_decodes(residual_run, small_pair):
    """Format 2.0's residual (int16 bands, no KLT) and 2.1-2.4's (the KLT as base64 text in the
    record) decode as before, next to 2.5's (the KLT's float32 values in RES)."""
    from qmtgan.rd.rate import candidates, with_residual
    from qmtgan.runtime import payload as fmt
    from qmtgan.runtime.decode import reconstruct
    from qmtgan.runtime.klt import Klt
    from qmtgan.runtime.metrics import snr_db

    (cand,) = candidates([residual_run], (8,), small_pair)
    prediction = cand.prediction(small_pair)
    results = {}
    for klt in (False, True):
        hybrid, recon, _ = with_residual(cand.payload, small_pair, prediction, 1.0, klt=klt)
        decoded = reconstruct(fmt.decode(fmt.encode(hybrid)), small_pair.reference)
        np.testing.assert_array_equal(decoded, recon)
        codec = hybrid.header["residual"]["codec"]
        results[codec] = snr_db(small_pair.target.data, decoded, small_pair.valid)
        if klt:
            size = Klt.byte_count(12)
            text = Klt.from_bytes(hybrid.residual[:size], 12).to_text()
            record = {**hybrid.header["residual"], "codec": "jpeg2000+klt", "klt": text}
            old = fmt.Payload({**hybrid.header, "residual": record}, hybrid.codes, hybrid.sides,
                              hybrid.floats, hybrid.residual[size:])
            old_decoded = reconstruct(fmt.decode(fmt.encode(old)), small_pair.reference)
            np.testing.assert_array_equal(old_decoded, recon)
            assert len(fmt.encode(old)) > len(fmt.encode(hybrid))  # base64 text costs more than float32
    assert set(results) == {"jpeg2000", "jpeg2000+klt-in-res"}
    assert min(results.values()) > snr_db(small_pair.target.data, prediction, small_pair.valid)


def test_format_1_payloads_still_decode(residual_run, small_pair_dir, tmp_path, tiny_run):
    """A version 1.0 file (four sections, no residual) is read as before."""
    from qmtgan.runtime import payload as fmt

    out = tmp_path / "v2.qmtg"
    proc = run_cli("encode", "--reference", small_pair_dir / "reference.tif", "--target",
                   small_pair_dir / "target.tif", "--model", tiny_run[0], "--bits", "6", "-o", out)
    assert proc.returncode == 0, proc.stderr
    v2 = fmt.read(out)
    data = fmt.encode(v2, "packed")  # the only code coding a version 1 file knows
    count = 5
    directory = [
        fmt._DIR_ENTRY.unpack_from(data, fmt._PREFIX.size + i * fmt._DIR_ENTRY.size) for i in range(count)
    ]
    offset = fmt._PREFIX.size + count * fmt._DIR_ENTRY.size
    sections = []
    for tag, length, _ in directory:
        sections.append((tag, data[offset: offset + length]))
        offset += length
    assert sections[-1] == (b"RES ", b"")
    # versions before 2.3 hold the header's JSON as it is, not deflated
    sections[0] = (b"HEAD", fmt.unpack_header(sections[0][1], fmt.VERSION, "v2"))
    v1 = tmp_path / "v1.qmtg"
    v1.write_bytes(fmt.pack_sections((1, 0), sections[:4]))
    old = fmt.read(v1)
    assert all(np.array_equal(a, b) for a, b in zip(old.weights(), v2.weights()))
    decoded = tmp_path / "v1.tif"
    proc = run_cli("decode", "--reference", small_pair_dir / "reference.tif", v1, "-o", decoded)
    assert proc.returncode == 0 and decoded.exists(), proc.stderr
    # a file claiming the new major version with the old section count is refused, not misread
    bad = tmp_path / "bad.qmtg"
    bad.write_bytes(fmt.pack_sections((2, 0), sections[:4]))
    with pytest.raises(Exception, match="sections"):
        fmt.read(bad)


def test_encode_bpp_meets_its_budget_and_refuses_an_impossible_one(
    residual_run, small_pair_dir, small_pair, tmp_path
):
    from qmtgan.rd.rate import candidates
    from qmtgan.runtime import payload as fmt

    ref, tgt = small_pair_dir / "reference.tif", small_pair_dir / "target.tif"
    params = json.loads((residual_run / "model.json").read_text())
    assert params["generator"]["residual"] == "linear"
    budget = 1.0
    out = tmp_path / "rc.qmtg"
    proc = run_cli(
        "encode", "--reference", ref, "--target", tgt, "--model", residual_run, "--bpp", budget, "-o", out
    )
    assert proc.returncode == 0, proc.stderr
    assert "chosen:" in proc.stdout
    assert 8 * out.stat().st_size / small_pair.samples <= budget
    # a budget below the 8-bit payload: a per-layer allocation is measured, printed and fits
    (eight,) = candidates([residual_run], (8,), small_pair)
    budget = 0.75 * 8 * eight.nbytes / small_pair.samples
    proc = run_cli("encode", "--reference", ref, "--target", tgt, "--model", residual_run, "--bpp", budget,
                   "--method", "pwl", "-o", out)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout + proc.stderr
    assert "allocation for" in printed and "conv1:" in printed and " bits (alone: -" in printed
    assert 8 * out.stat().st_size / small_pair.samples <= budget
    assert fmt.read(out).header["tensors"][0]["method"] == "pwl"
    # an SNR-loss bound instead of a budget: the narrowest allocation within it, measured, and
    # fitted to the scene (bias correction) where that measures better
    proc = run_cli("encode", "--reference", ref, "--target", tgt, "--model", residual_run,
                   "--max-loss", "0.05", "--method", "pwl", "--rounding", "bias", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "allocation within 0.05 dB of float" in proc.stdout + proc.stderr
    assert "fitted to the scene (the better is in the payload)" in proc.stdout
    assert fmt.read(out).header["policy"]["mode"] == "allocated"
    nothing = tmp_path / "none.qmtg"
    proc = run_cli("encode", "--reference", ref, "--target", tgt, "--model", residual_run, "--bpp", "0.001",
                   "-o", nothing)
    assert proc.returncode != 0 and "no configuration meets 0.001 bpp" in proc.stderr
    assert not nothing.exists()


def test_baselines_command_writes_the_report(residual_run, small_pair_dir, tmp_path):
    out = tmp_path / "rd"
    proc = run_cli("baselines", "--pair", small_pair_dir, "--model", residual_run, "--rates", "1.0",
                   "--bits", "8", "--methods", "symmetric,pwl", "-o", out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "rd.json").read_text())
    generators = [p["label"] for p in doc["points"] if p["family"] == "generator"]
    assert len(generators) == 2 and sum("8-bit pwl" in g for g in generators) == 1
    hybrids = [p["label"] for p in doc["points"] if p["family"] == "hybrid"]
    assert any("8-bit pwl + JPEG2000 residual" in h for h in hybrids)
    families = {p["family"] for p in doc["points"]}
    assert {"jpeg2000", "linear+jpeg2000", "generator", "hybrid", "linear"} <= families
    assert any("JPEG2000 of the target" in line for line in doc["context"]["verdict"])
    for name in ("rd.md", "rd.png", f"rd-{small_pair_dir.name}.png"):
        assert (out / name).stat().st_size > 0
    proc = run_cli("baselines", "--pair", small_pair_dir, "--rates", "0,1", "-o", tmp_path / "bad")
    assert proc.returncode != 0 and "positive" in proc.stderr


def test_residual_generator_deploys_in_every_runtime(residual_run, small_pair_dir, tmp_path):
    """The residual generator through convert (TFLite, ONNX, TVM) and `qmtgan run` without TensorFlow."""
    out = tmp_path / "bundles"
    proc = run_cli(
        "convert",
        "tflite-fp32",
        "tflite-int8",
        "onnx",
        "onnx-int8",
        "tvm-host-x86_64",
        "--model",
        residual_run,
        "--pair",
        small_pair_dir,
        "--tile",
        "32",
        "-o",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    records = {r["name"]: r for r in json.loads((out / "artifacts.json").read_text())}
    for name in ("tflite-fp32", "onnx", "tvm-host-x86_64"):
        assert records[name]["snr_vs_float_db"] > 80, name
    for name in ("tflite-int8", "onnx-int8"):
        assert records["keras-fp32"]["snr_vs_target_db"] - records[name]["snr_vs_target_db"] < 1.0, name
    int8 = json.loads((out / "tflite-int8" / "manifest.json").read_text())
    # the spectral map (the prediction itself) is rounded with error compensation, then bias-corrected
    assert int8["calibration"]["int8_rounded_layers"] == ["spectral"]
    assert len(int8["int8"]["bias_correction"]["band_bias"]) == 12
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["generator"]["residual"] == "linear" and manifest["generator"]["spectral_kernel"] == 3
    dest = tmp_path / "run.tif"
    proc = run_cli_without_tf("run", "--bundle", out / "onnx", "--reference",
                              small_pair_dir / "reference.tif", "--target", small_pair_dir / "target.tif",
                              "-o", dest)
    assert proc.returncode == 0, proc.stderr
    assert (
        abs(json.loads(proc.stdout.strip().splitlines()[-1])["snr_db"] - records["onnx"]["snr_vs_target_db"])
        < 0.05
    )
    # a hybrid payload's residual on top of the bundle's prediction: what `decode` gives, to 0.05 dB
    hybrid = tmp_path / "hybrid.qmtg"
    proc = run_cli(
        "encode",
        "--reference",
        small_pair_dir / "reference.tif",
        "--target",
        small_pair_dir / "target.tif",
        "--model",
        residual_run,
        "--bits",
        "32",
        "--residual-bpp",
        "1.0",
        "-o",
        hybrid,
    )
    assert proc.returncode == 0, proc.stderr
    reported = float(proc.stdout.rsplit("SNR ", 1)[1].split(" dB")[0])
    proc = run_cli_without_tf("run", "--bundle", out / "onnx", "--reference",
                              small_pair_dir / "reference.tif", "--target", small_pair_dir / "target.tif",
                              "--payload", hybrid, "-o", tmp_path / "hybrid.tif")
    assert proc.returncode == 0, proc.stderr
    assert abs(json.loads(proc.stdout.strip().splitlines()[-1])["snr_db"] - reported) < 0.05
    proc = run_cli("run", "--bundle", out / "onnx", "--reference", small_pair_dir / "reference.tif",
                   "--payload", small_pair_dir / "pair.json", "-o", tmp_path / "bad.tif")
    assert (
        proc.returncode != 0 and "not a .qmtg payload" in proc.stderr and not (tmp_path / "bad.tif").exists()
    )


def test_warm_start_begins_from_the_previous_generator(residual_run, small_pair_dir, tmp_path):
    """--init: the U-Net starts from the earlier run; the spectral map is refitted to this pair."""
    from qmtgan.train.model_io import load_model
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.pair import data_identity, load_pair
    from qmtgan.train.training import TrainConfig, train

    reference, target, meta, _ = load_pair(small_pair_dir)
    run_dir = tmp_path / "warm"
    train(
        reference,
        target,
        run_dir,
        GeneratorConfig(ngf=4, depth=3, kernel=3, patch_size=32, residual="linear", spectral_kernel=3),
        TrainConfig(
            epochs=1, learning_rate=1e-9, loss="l2", adversarial=False, norm_clip=0.0, init=str(residual_run)
        ),
        data_identity(small_pair_dir, meta),
        progress=False,
    )
    before, after = load_model(residual_run)[0], load_model(run_dir)[0]
    for layer in ("conv1", "deconv3"):
        np.testing.assert_allclose(
            after.get_layer(layer).kernel.numpy(), before.get_layer(layer).kernel.numpy(), atol=1e-6
        )
    assert json.loads((run_dir / "model.json").read_text())["training"]["config"]["init"] == str(residual_run)
    with pytest.raises(Exception, match="is not this one"):
        train(
            reference,
            target,
            tmp_path / "other",
            GeneratorConfig(ngf=2, depth=3, kernel=3, patch_size=32, residual="linear"),
            TrainConfig(epochs=1, init=str(residual_run)),
            data_identity(small_pair_dir, meta),
            progress=False,
        )


def test_snr_floor_adds_the_smallest_residual_that_reaches_it(
    residual_run, small_pair_dir, small_pair, tmp_path
):
    from qmtgan.runtime import payload as fmt
    from qmtgan.runtime.decode import predict, reconstruct
    from qmtgan.runtime.metrics import snr_db

    ref, tgt = small_pair_dir / "reference.tif", small_pair_dir / "target.tif"
    plain = tmp_path / "plain.qmtg"
    assert run_cli("encode", "--reference", ref, "--target", tgt, "--model", residual_run, "--bits", "8",
                   "-o", plain).returncode == 0
    alone = snr_db(small_pair.target.data, predict(fmt.read(plain), small_pair.reference), small_pair.valid)
    floor = alone + 6.0
    out = tmp_path / "floor.qmtg"
    proc = run_cli("encode", "--reference", ref, "--target", tgt, "--model", residual_run, "--bits", "8",
                   "--snr-floor", floor, "-o", out)
    assert proc.returncode == 0, proc.stderr
    got = snr_db(small_pair.target.data, reconstruct(fmt.read(out), small_pair.reference), small_pair.valid)
    assert got >= floor
    needless = tmp_path / "needless.qmtg"
    proc = run_cli("encode", "--reference", ref, "--target", tgt, "--model", residual_run, "--bits", "8",
                   "--snr-floor", alone - 1.0, "-o", needless)
    assert proc.returncode != 0 and "no residual is needed" in proc.stderr and not needless.exists()
