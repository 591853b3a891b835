"""A generator shared across pairs, end to end on crops of real OSCD cities: trained on two
cities, exported, then a third city encoded against it (linear base + gate + residual, no
weights in the payload) and decoded by `qmtgan decode --shared` to what the encoder measured.
Also the gate's bits and a payload's predictor record as hostile input."""

from __future__ import annotations

import base64
import re
import zlib

import numpy as np
import pytest

from helpers import crop_oscd_city, oscd_root, run_cli

CITIES = {"paris": (120, 120), "nantes": (240, 240), "pisa": (300, 300)}
SIZE = 96


@pytest.fixture(scope="module")
def shared_setup(tmp_path_factory):
    """Three prepared crops; a tiny shared generator trained on the first two and exported."""
    tmp = tmp_path_factory.mktemp("shared")
    pairs = {}
    for city, (row, col) in CITIES.items():
        src = crop_oscd_city(oscd_root() / city, tmp / "oscd" / city, row, col, SIZE)
        proc = run_cli("prepare", "--reference", src / "imgs_1", "--target", src / "imgs_2",
                       "--patch-size", "64", "-o", tmp / "pairs" / city)
        assert proc.returncode == 0, proc.stderr
        pairs[city] = tmp / "pairs" / city
    proc = run_cli("shared", "train", "--pair", pairs["paris"], "--pair", pairs["nantes"], "--ngf", "2",
                   "--depth", "2", "--patch-size", "64", "--epochs", "2", "-o", tmp / "run", timeout=900)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("shared", "export", "--model", tmp / "run", "-o", tmp / "shared.qmtg")
    assert proc.returncode == 0, proc.stderr
    assert "paris, nantes" in proc.stdout or "nantes, paris" in proc.stdout
    return tmp, pairs


def _snr(out: str) -> float:
    return float(re.search(r"SNR (-?[\d.]+) dB", out).group(1))


@pytest.mark.slow
def test_a_held_out_city_round_trips_through_encode_and_decode_with_the_shared_generator(shared_setup):
    from qmtgan.runtime.metrics import snr_db
    from qmtgan.train.ingest import read_scene as read_geotiff
    from qmtgan.runtime import payload as fmt

    tmp, pairs = shared_setup
    held = pairs["pisa"]
    ref, tgt = held / "reference.tif", held / "target.tif"
    budget = 1.0
    proc = run_cli("encode", "--reference", ref, "--target", tgt, "--shared", tmp / "shared.qmtg",
                   "--bpp", str(budget), "-o", tmp / "pisa.qmtg")
    assert proc.returncode == 0, proc.stderr
    payload = fmt.read(tmp / "pisa.qmtg")
    assert [t["name"] for t in payload.header["tensors"]] == ["linear/kernel", "linear/bias"]  # no generator
    # the gate may keep the plain base on so small a crop; the refinement is decoded below
    assert payload.residual and payload.header["predictor"]["kind"] in ("shared-linear-base", "linear-base")
    # the shared model holds the generator's record; the CRS travels as its code, not as WKT
    assert "generator" not in payload.header and re.fullmatch(r"EPSG:\d+", payload.header["scene"]["crs"])
    samples = SIZE * SIZE * 12
    from qmtgan.rd.workflow import RATE_SLACK

    assert 8 * (tmp / "pisa.qmtg").stat().st_size / samples <= budget * RATE_SLACK  # rate control's tolerance

    encoder_snr = _snr(proc.stdout)
    proc = run_cli("decode", "--reference", ref, tmp / "pisa.qmtg", "--shared", tmp / "shared.qmtg",
                   "-o", tmp / "pisa.tif")
    assert proc.returncode == 0, proc.stderr
    decoded, target = read_geotiff(tmp / "pisa.tif"), read_geotiff(tgt)
    valid = target.valid & read_geotiff(ref).valid
    # the decoder forms the encoder's prediction with the same numpy code: equal to rounding
    assert abs(snr_db(target.data, decoded.data, valid) - encoder_snr) < 0.01

    # a payload that refines every block decodes to the shared generator's refinement
    from qmtgan.rd.points import PairData
    from qmtgan.rd.shared_codec import SharedEncoder
    from qmtgan.runtime.shared import SharedModel

    _refining_payload(tmp, held, tmp / "refined.qmtg")
    proc = run_cli("decode", "--reference", ref, tmp / "refined.qmtg", "--shared", tmp / "shared.qmtg",
                   "-o", tmp / "refined.tif")
    assert proc.returncode == 0, proc.stderr
    pair = PairData.load(held)
    refined = SharedEncoder(pair, SharedModel.read(tmp / "shared.qmtg"), blocks=(16,)).refined
    got = snr_db(target.data, read_geotiff(tmp / "refined.tif").data, valid)
    assert abs(got - snr_db(pair.target.data, refined, pair.valid)) < 0.01

    # the same grid labelled with another CRS is not the reference the payload was made for
    import rasterio

    with rasterio.open(ref) as src:
        profile, data = src.profile, src.read()
    other = "EPSG:3857" if payload.header["scene"]["crs"] != "EPSG:3857" else "EPSG:4326"
    with rasterio.open(tmp / "relabelled.tif", "w", **{**profile, "crs": other}) as dst:
        dst.write(data)
    proc = run_cli("decode", "--reference", tmp / "relabelled.tif", tmp / "pisa.qmtg", "--shared",
                   tmp / "shared.qmtg", "-o", tmp / "relabelled-out.tif")
    assert proc.returncode == 1 and "reference CRS EPSG:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp / "relabelled-out.tif").exists()


@pytest.mark.slow
def test_the_gated_hybrid_is_never_worse_than_its_linear_base_at_the_same_rate(shared_setup):
    from qmtgan.rd.points import PairData
    from qmtgan.rd.shared_codec import SharedEncoder
    from qmtgan.runtime.metrics import snr_db
    from qmtgan.runtime.shared import SharedModel

    tmp, pairs = shared_setup
    pair = PairData.load(pairs["pisa"])
    encoder = SharedEncoder(pair, SharedModel.read(tmp / "shared.qmtg"), blocks=(16, 32))
    for rate in (1.5, 3.0):  # a 96 px crop: the base and header alone take about 0.7 bpp
        got = encoder.hybrid(rate)
        assert snr_db(pair.target.data, got.recon, pair.valid) >= got.base_snr_db
        assert 0.0 <= got.gate_fraction <= 1.0
        record = got.payload.header["predictor"]
        if got.gate_fraction == 0.0:  # the plain base won: it travels alone
            assert record == {"kind": "linear-base", "base_kernel": 3}
        else:  # the gate's grid is one of the sizes tried
            assert record["kind"] == "shared-linear-base" and record["gate"]["block"] in (16, 32)
    alone = encoder.prediction()
    # per block the closer of the two: at least as good as the base everywhere
    assert snr_db(pair.target.data, alone.recon, pair.valid) >= alone.base_snr_db


@pytest.mark.slow
def test_a_shared_payload_with_float32_coefficients_still_decodes(shared_setup):
    """Before 2.5 the base's coefficients were one float32 tensor, linear/coef: the same
    coefficients in that layout give the same reconstruction, in more bytes."""
    from qmtgan.rd.points import PairData
    from qmtgan.rd.shared_codec import SharedEncoder
    from qmtgan.runtime import payload as fmt
    from qmtgan.runtime.decode import reconstruct
    from qmtgan.runtime.shared import SharedModel

    tmp, pairs = shared_setup
    pair = PairData.load(pairs["pisa"])
    shared = SharedModel.read(tmp / "shared.qmtg")
    new = SharedEncoder(pair, shared, blocks=(16,)).prediction().payload
    coef = np.asarray(SharedEncoder(pair, shared, blocks=(16,)).coded.coef, np.float32)
    header = {**new.header, "tensors": [{"name": "linear/coef", "shape": list(coef.shape), "bits": 32}]}
    old = fmt.Payload(header, [None], [None], [coef])
    got_new = reconstruct(fmt.decode(fmt.encode(new)), pair.reference, shared=shared)
    got_old = reconstruct(fmt.decode(fmt.encode(old)), pair.reference, shared=shared)
    np.testing.assert_array_equal(got_new, got_old)
    assert len(fmt.encode(new)) < len(fmt.encode(old)) - 2500  # 12-bit taps against float32
    from qmtgan.runtime.errors import QmtganError

    swapped = fmt.Payload({**new.header, "tensors": new.header["tensors"][::-1]}, new.codes[::-1],
                          new.sides[::-1], new.floats[::-1])
    with pytest.raises(QmtganError, match="holds the tensors linear/kernel and linear/bias"):
        reconstruct(fmt.decode(fmt.encode(swapped)), pair.reference, shared=shared)


def test_linear_coefficients_are_stored_within_half_a_step_in_fewer_bytes():
    from qmtgan.runtime.linear_coding import CodedLinear

    rng = np.random.default_rng(0)
    coef = np.concatenate([rng.normal(0, 0.3, (12, 108)), rng.normal(500, 300, (12, 1))], axis=1)
    coef[3, :-1] = 0.0  # a band with no taps keeps a usable step
    coded = CodedLinear.code(coef)
    err = np.abs(coded.coef[:, :-1] - coef[:, :-1])
    assert np.all(err <= coded.steps[:, None] / 2 * (1 + 1e-6))
    np.testing.assert_array_equal(coded.coef[:, -1], coef[:, -1].astype(np.float32))  # offsets exact
    assert np.all(coded.coef[3, :-1] == 0.0) and np.all(np.isfinite(coded.steps))
    assert coded.nbytes < 0.4 * coef.size * 4  # 12-bit taps, a step and an offset per band


@pytest.mark.slow
def test_an_all_base_gate_makes_a_linear_base_payload_that_needs_no_shared_model(shared_setup):
    """Where the gate keeps the base everywhere, the payload is the base alone: it decodes
    without the shared model to what the older form (the model's hash, an all-zero gate and
    the normalization) decodes to with it, in fewer bytes."""
    from qmtgan.rd.points import PairData
    from qmtgan.rd.shared_codec import SharedEncoder, shared_payload
    from qmtgan.runtime import gate as gates
    from qmtgan.runtime import payload as fmt
    from qmtgan.runtime.decode import reconstruct
    from qmtgan.runtime.shared import SharedModel

    tmp, pairs = shared_setup
    pair = PairData.load(pairs["pisa"])
    shared = SharedModel.read(tmp / "shared.qmtg")
    encoder = SharedEncoder(pair, shared, blocks=(16,))
    none = np.zeros(encoder.grid, bool)
    alone = shared_payload(pair, shared, encoder.coded, encoder.norm, none, 16)
    assert alone.header["predictor"] == {"kind": "linear-base", "base_kernel": 3}
    assert "normalization" not in alone.header
    got = reconstruct(fmt.decode(fmt.encode(alone)), pair.reference)  # no shared model
    np.testing.assert_allclose(got, encoder.base, atol=1e-3)
    assert np.abs(got - pair.reference.data).max() > 1.0  # the base, not the reference passed through
    older = fmt.Payload({**alone.header, "normalization": encoder.norm.to_dict(),
                         "predictor": {"kind": "shared-linear-base", "model_sha256": shared.sha256,
                                       "base_kernel": 3, "gate": gates.to_record(none, 16)}},
                        alone.codes, alone.sides, alone.floats)
    older_got = reconstruct(fmt.decode(fmt.encode(older)), pair.reference, shared=shared)
    np.testing.assert_array_equal(older_got, got)
    assert len(fmt.encode(older)) >= len(fmt.encode(alone)) + 50
    # a refining record whose normalization is missing is one clear error, not a KeyError
    from qmtgan.runtime.errors import QmtganError

    broken = fmt.Payload({k: v for k, v in older.header.items() if k != "normalization"},
                         alone.codes, alone.sides, alone.floats)
    with pytest.raises(QmtganError, match="inconsistent header"):
        reconstruct(fmt.decode(fmt.encode(broken)), pair.reference, shared=shared)


def _refining_payload(tmp, pair_dir, out):
    """A payload against the shared model that refines every block (16 px gate)."""
    from qmtgan.rd.points import PairData
    from qmtgan.rd.shared_codec import SharedEncoder, shared_payload
    from qmtgan.runtime import payload as fmt
    from qmtgan.runtime.shared import SharedModel

    pair = PairData.load(pair_dir)
    shared = SharedModel.read(tmp / "shared.qmtg")
    encoder = SharedEncoder(pair, shared, blocks=(16,))
    fmt.write(out, shared_payload(pair, shared, encoder.coded, encoder.norm, np.ones(encoder.grid, bool), 16))


@pytest.mark.slow
def test_a_shared_payload_without_its_shared_generator_is_one_clear_error(shared_setup):
    tmp, pairs = shared_setup
    held = pairs["pisa"]
    ref = held / "reference.tif"
    _refining_payload(tmp, held, tmp / "alone.qmtg")
    proc = run_cli("decode", "--reference", ref, tmp / "alone.qmtg", "-o", tmp / "none.tif")
    assert proc.returncode == 1 and "--shared" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp / "none.tif").exists()
    # another shared generator (trained on one city only) is refused by its SHA-256
    proc = run_cli("shared", "train", "--pair", pairs["paris"], "--ngf", "2", "--depth", "2", "--patch-size",
                   "64", "--epochs", "1", "-o", tmp / "other-run", timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert run_cli("shared", "export", "--model", tmp / "other-run", "-o", tmp / "other.qmtg").returncode == 0
    proc = run_cli("decode", "--reference", ref, tmp / "alone.qmtg", "--shared", tmp / "other.qmtg",
                   "-o", tmp / "other.tif")
    assert proc.returncode == 1 and "was made against the shared generator" in proc.stderr
    assert not (tmp / "other.tif").exists()
    # a per-pair payload is not a shared generator
    proc = run_cli("decode", "--reference", ref, tmp / "alone.qmtg", "--shared", tmp / "alone.qmtg",
                   "-o", tmp / "self.tif")
    assert proc.returncode == 1 and "not a shared generator" in proc.stderr
    # a bundle runs on the reference, not on the linear base: run --payload refuses it
    from qmtgan.runtime.decode import hybrid_residual
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.train.ingest import read_scene as read_geotiff

    with pytest.raises(QmtganError, match="decode it with"):
        hybrid_residual(tmp / "alone.qmtg", read_geotiff(ref), {})
    # nor can it be deployed: it carries no generator
    proc = run_cli("convert", "onnx", "--model", tmp / "run", "--pair", held, "--payload", tmp / "alone.qmtg",
                   "--tile", "32", "-o", tmp / "bundle")
    assert proc.returncode == 1 and "carries no generator" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp / "bundle").exists()


def test_gate_bits_round_trip_for_any_grid():
    from qmtgan.runtime import gate

    rng = np.random.default_rng(0)
    for shape, block in (((96, 96), 32), ((100, 37), 16), ((1, 1), 1), ((513, 1025), 64)):
        grid = gate.block_grid(shape, block)
        bits = rng.random(grid) < 0.3
        back, got_block = gate.from_record(gate.to_record(bits, block), shape)
        assert got_block == block and np.array_equal(back, bits)
        assert gate.expand(bits, block, shape).shape == shape


@pytest.mark.parametrize("change, message", [
    ({"block": 0}, "not in 1.."),
    ({"block": "32"}, "not in 1.."),
    ({"rows": 2}, "does not cover"),
    ({"bits": "%%%"}, "damaged"),
    ({"bits": base64.b64encode(zlib.compress(b"\0" * 10_000_000)).decode()}, "damaged"),  # inflates too far
    ({"bits": base64.b64encode(b"not deflate").decode()}, "damaged"),
    ({"bits": 7}, "damaged"),
])
def test_hostile_gate_records_are_one_clear_error(change, message):
    from qmtgan.runtime import gate
    from qmtgan.runtime.errors import QmtganError

    record = {**gate.to_record(np.ones((3, 3), bool), 32), **change}
    with pytest.raises(QmtganError, match=message):
        gate.from_record(record, (96, 96))
    with pytest.raises(QmtganError, match="not an object"):
        gate.from_record([1, 2], (96, 96))
