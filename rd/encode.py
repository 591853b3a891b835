"""`qmtgan encode`: reference + target -> trained (or given) generator -> .qmtg payload."""

from __future__ import annotations

import logging
from pathlib import Path

from qmtgan.quantize.accounting import account
from qmtgan.quantize.codec import scene_header, to_payload
from qmtgan.quantize.model import quantize_tensors
from qmtgan.quantize.policy import Policy, generator_tensors
from qmtgan.runtime import payload as fmt
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.scratch import scratch_dir

log = logging.getLogger(__name__)


def encode_pair(reference_path: Path, target_path: Path, out: Path, policy: Policy,
                model_dir: Path | None, epochs: int, seed: int, rounding: str = "nearest") -> dict:
    from qmtgan.train.ingest import read_scene
    from qmtgan.train.models.registry import default_config
    from qmtgan.train.pair import align_to_reference
    from qmtgan.train.training import TrainConfig, train

    reference = read_scene(reference_path)
    target = align_to_reference(reference, read_scene(target_path))
    if model_dir is None:  # train a generator for this pair; only the payload is kept
        with scratch_dir(prefix="qmtgan-encode-") as tmp:
            identity = {"reference": str(reference_path), "target": str(target_path),
                        "height": reference.shape[0], "width": reference.shape[1]}
            train(reference, target, Path(tmp), default_config("multitempgan"),
                  TrainConfig(epochs=epochs, seed=seed), identity)
            return _encode(reference, target, Path(tmp), reference_path, out, policy, seed, rounding)
    return _encode(reference, target, model_dir, reference_path, out, policy, seed, rounding)


def _encode(reference, target, model_dir: Path, reference_path: Path, out: Path, policy: Policy, seed: int,
            rounding: str) -> dict:
    from qmtgan.train.model_io import load_model

    generator, cfg, norm, meta = load_model(model_dir)
    data = meta.get("data", {})
    trained_on = (data.get("height"), data.get("width"))
    if None not in trained_on and trained_on != reference.shape:
        raise QmtganError(f"{model_dir} was trained on a {trained_on[0]}x{trained_on[1]} px scene, "
                          f"{reference_path} is {reference.shape[0]}x{reference.shape[1]} px")
    if rounding != "nearest":  # codes and biases fitted to this scene (quantize/adaround.py)
        from qmtgan.quantize.adaround import fitted_model

        qmodel, record = fitted_model(model_dir, reference, target, policy, rounding, seed)
    else:
        qmodel = quantize_tensors(generator_tensors(generator), policy, seed)
    payload = to_payload(qmodel, cfg.to_dict(), norm, scene_header(reference, cfg.patch_size))
    fmt.write(out, payload)
    pixels = reference.data.size
    acc = account(qmodel, pixels, 1)
    size = out.stat().st_size
    overhead = size - (acc.total_bits + 7) // 8
    return {"file_bytes": size, "bpp_file": 8 * size / pixels, "bpp_eq1": acc.bpp,
            "header_bytes": overhead, "accounting": acc.to_dict(),
            **({"rounding": record} if rounding != "nearest" else {})}


def encode_rate_controlled(reference_path: Path, target_path: Path, out: Path, runs: list[Path],
                           budget_bpp: float | None, bits: int | None, residual_bpp: float | None,
                           snr_floor: float | None, seed: int, method: str = "symmetric") -> dict:
    """Choose (with ``budget_bpp``) or force (``bits``) a run and bit width, optionally add the
    coded residual of its prediction, and write the payload; returns what was chosen and measured.
    With a budget the choice is among every uniform width of ``method`` and, per run, the
    per-layer allocation (quantize/allocate.py) that fits it."""
    from qmtgan.rd.rate import RATE_BITS, allocated_candidate, candidates, choose, with_residual
    from qmtgan.rd.points import PairData, score
    from qmtgan.train.ingest import read_scene
    from qmtgan.train.pair import align_to_reference

    reference = read_scene(reference_path)
    target = align_to_reference(reference, read_scene(target_path))
    pair = PairData(Path(target_path).stem, reference, target, reference.valid & target.valid, None)
    cands = candidates(runs, RATE_BITS if budget_bpp is not None else (bits,), pair, seed, method)
    if budget_bpp is not None:
        for run in runs:
            try:
                cands.append(allocated_candidate(run, pair, method, budget_bpp, seed))
            except QmtganError as exc:  # the uniform widths may still fit, or choose() says why not
                log.info(f"no per-layer allocation: {exc}")
        chosen, point, prediction = choose(pair, cands, budget_bpp)
        log.info(f"chosen: {chosen.label} ({point.bpp:.5f} bpp <= {budget_bpp:g}), SNR {point.snr_db:.2f} dB")
    else:
        if len(cands) != 1:
            raise QmtganError("several --model runs need --bpp to choose among them")
        chosen = cands[0]
        prediction = chosen.prediction(pair)
    payload = chosen.payload
    recon, label = prediction, chosen.label
    if residual_bpp is not None:
        payload, recon, coded = with_residual(payload, pair, prediction, residual_bpp)
        label += f" + JPEG2000 residual at {coded.bpp:.4f} bpp"
    elif snr_floor is not None:
        payload, recon, coded = _residual_for_snr(pair, payload, prediction, snr_floor, log)
        label += f" + JPEG2000 residual at {coded.bpp:.4f} bpp"
    fmt.write(out, payload)
    point = score(pair, "hybrid" if payload.residual else "generator", label, recon, out.stat().st_size)
    return {"file_bytes": point.bytes, "bpp_file": point.bpp, "label": label, "snr_db": point.snr_db,
            "lmse": point.lmse}


def encode_allocated(reference_path: Path, target_path: Path, out: Path, run: Path, method: str,
                     max_loss_db: float, seed: int, rounding: str = "nearest") -> dict:
    """The run's generator at per-layer widths: the narrowest whose measured single-layer drops
    add up to at most ``max_loss_db``, fitted to the scene as ``rounding`` says; writes the
    payload and measures it."""
    from qmtgan.rd.points import PairData, score
    from qmtgan.rd.rate import allocated_candidate
    from qmtgan.train.ingest import read_scene
    from qmtgan.train.pair import align_to_reference

    reference = read_scene(reference_path)
    target = align_to_reference(reference, read_scene(target_path))
    pair = PairData(Path(target_path).stem, reference, target, reference.valid & target.valid, None)
    records = []
    quantizer = quantize_tensors
    if rounding != "nearest":
        from qmtgan.quantize.adaround import fitted_model

        def quantizer(tensors, policy, seed):
            qmodel, record = fitted_model(run, reference, target, policy, rounding, seed)
            records.append(record)
            return qmodel

    chosen = allocated_candidate(run, pair, method, None, seed, max_loss_db=max_loss_db, quantizer=quantizer)
    fmt.write(out, chosen.payload)
    point = score(pair, "generator", chosen.label, chosen.prediction(pair), out.stat().st_size)
    return {"file_bytes": point.bytes, "bpp_file": point.bpp, "label": chosen.label, "snr_db": point.snr_db,
            "lmse": point.lmse, **({"rounding": records[-1]} if records else {})}


def _residual_for_snr(pair, payload, prediction, snr_floor: float, log, steps: int = 10):
    """The smallest residual rate (bisection in log rate) whose reconstruction reaches snr_floor."""
    import math

    from qmtgan.rd.rate import with_residual
    from qmtgan.runtime.metrics import snr_db

    base = snr_db(pair.target.data, prediction, pair.valid)
    if base >= snr_floor:
        raise QmtganError(f"the prediction alone already reaches {base:.2f} dB >= --snr-floor {snr_floor}: "
                          "no residual is needed (drop --snr-floor)")
    lo, hi = 1e-3, 4.0
    best = with_residual(payload, pair, prediction, hi)
    reached = snr_db(pair.target.data, best[1], pair.valid)
    if reached < snr_floor:
        raise QmtganError(
            f"--snr-floor {snr_floor} dB is out of reach: a {hi} bpp residual gives {reached:.2f} dB"
        )
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        try:
            got = with_residual(payload, pair, prediction, mid)
        except QmtganError:  # below the codec's smallest stream: the answer lies higher
            lo = mid
            continue
        snr = snr_db(pair.target.data, got[1], pair.valid)
        log.info(f"  residual {got[2].bpp:.4f} bpp: SNR {snr:.2f} dB")
        if snr >= snr_floor:
            hi, best = mid, got
        else:
            lo = mid
    return best


def encode_shared(reference_path: Path, target_path: Path, out: Path, shared_path: Path,
                  budget_bpp: float | None) -> dict:
    """A payload against a shared generator: the gated prediction alone, or with ``budget_bpp``
    plus its coded residual, the whole payload within the budget."""
    from qmtgan.rd.points import PairData, score
    from qmtgan.rd.shared_codec import SharedEncoder
    from qmtgan.runtime.shared import SharedModel
    from qmtgan.train.ingest import read_scene
    from qmtgan.train.pair import align_to_reference

    shared = SharedModel.read(shared_path)
    reference = read_scene(reference_path)
    target = align_to_reference(reference, read_scene(target_path))
    pair = PairData(Path(target_path).stem, reference, target, reference.valid & target.valid, None)
    encoder = SharedEncoder(pair, shared)
    got = encoder.prediction() if budget_bpp is None else encoder.hybrid(budget_bpp)
    fmt.write(out, got.payload)
    label = (f"shared generator {shared.sha256[:12]} over the linear base, {got.gate_fraction:.0%} of the "
             "blocks refined" + ("" if budget_bpp is None else " + JPEG2000 residual"))
    point = score(pair, "shared", label, got.recon, out.stat().st_size)
    return {"file_bytes": point.bytes, "bpp_file": point.bpp, "label": label, "snr_db": point.snr_db,
            "lmse": point.lmse, "gate_fraction": got.gate_fraction}
