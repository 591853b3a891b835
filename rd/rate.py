"""Generator payloads as rate-distortion points, hybrid payloads (prediction + coded residual),
and rate control: which trained generator at which bit width meets a byte budget best.

Every rate is the length of the real .qmtg bytes, and every reconstruction is what
`qmtgan decode` computes from them (the numpy generator, plus the residual)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmtgan.quantize.codec import scene_header, to_payload
from qmtgan.quantize.model import quantize_tensors
from qmtgan.quantize.policy import Policy, generator_tensors
from qmtgan.rd.points import PairData, RDPoint, score
from qmtgan.runtime import jpeg2000
from qmtgan.runtime import payload as fmt
from qmtgan.runtime.decode import predict
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.klt import Klt
from qmtgan.runtime.residual import (DTYPE, KLT_CODEC, add_residual, decode_residual, klt_residual,
                                     residual_bytes, residual_image)

log = logging.getLogger(__name__)

# Bit widths rate control chooses from (32 = float32), uniform symmetric per tensor.
RATE_BITS = (2, 3, 4, 5, 6, 8, 10, 12, 16, 32)


@dataclass
class Candidate:
    """One generator at one bit width, as the bytes a decoder gets."""

    run: Path
    label: str
    bits: int
    payload: fmt.Payload
    nbytes: int

    def prediction(self, pair: PairData) -> np.ndarray:
        return predict(self.payload, pair.reference, self.label)


def generator_label(cfg) -> str:
    """How a generator configuration reads in tables: name, width, depth and residual."""
    residual = "" if cfg.residual == "none" else f", residual {cfg.residual}"
    if cfg.residual == "linear" and cfg.spectral_kernel != 1:
        residual += f" {cfg.spectral_kernel}x{cfg.spectral_kernel}"
    return f"{cfg.name} ngf {cfg.ngf} depth {cfg.depth}{residual}"


def candidates(
    runs: list[Path], bits_list: tuple[int, ...], pair: PairData, seed: int = 0, method: str = "symmetric"
) -> list[Candidate]:
    """Every (run, bits) payload, encoded for ``pair``'s reference (cheap: no inference)."""
    from qmtgan.train.model_io import load_model

    out = []
    for run in runs:
        generator, cfg, norm, meta = load_model(run)
        data = meta.get("data", {})
        if (data.get("height"), data.get("width")) not in ((None, None), pair.reference.shape):
            raise QmtganError(f"{run} was trained on a {data.get('height')}x{data.get('width')} px scene, "
                              f"the pair is {pair.reference.shape[0]}x{pair.reference.shape[1]} px")
        tensors = generator_tensors(generator)
        header = scene_header(pair.reference, cfg.patch_size)
        for bits in bits_list:
            qmodel = quantize_tensors(tensors, Policy(method, bits=bits), seed)
            payload = to_payload(qmodel, cfg.to_dict(), norm, header)
            kind = "" if method == "symmetric" else f" {method}"
            label = f"{generator_label(cfg)}, {'float32' if bits == 32 else f'{bits}-bit{kind}'}"
            out.append(Candidate(run, label, bits, payload, len(fmt.encode(payload))))
    return out


def with_residual(payload: fmt.Payload, pair: PairData, prediction: np.ndarray, residual_bpp: float,
                  klt: bool = True) -> tuple[fmt.Payload, np.ndarray, jpeg2000.RateResult]:
    """The hybrid payload: ``payload`` plus the residual target - prediction at ``residual_bpp``
    (bits per sample of the residual alone, its transform included), and the reconstruction a
    decoder gets from it. The residual goes through a spectral KLT before JPEG2000 (``klt``),
    or is coded band by band as int16."""
    transform, image = _residual_to_code(pair, prediction, klt)
    coded = jpeg2000.encode_at_bpp(image, residual_bpp - _side_bpp(transform, pair))
    return _hybrid(payload, pair, prediction, klt, transform, coded, image.shape)


def with_residuals(payload: fmt.Payload, pair: PairData, prediction: np.ndarray, residual_bpps: list[float],
                   klt: bool = True) -> Iterator:
    """`with_residual` at each of ``residual_bpps`` (increasing), the residual coded once with a
    quality layer per rate (`jpeg2000.encode_at_rates`), each reconstruction made when it is
    asked for. An entry is the QmtganError of a rate the codec cannot make (then every rate is
    coded on its own, to tell which)."""
    transform, image = _residual_to_code(pair, prediction, klt)
    try:
        coded = jpeg2000.encode_at_rates(image, [r - _side_bpp(transform, pair) for r in residual_bpps])
    except QmtganError:
        coded = None
    if coded is None:
        for bpp in residual_bpps:
            try:
                yield with_residual(payload, pair, prediction, bpp, klt)
            except QmtganError as exc:
                yield exc
        return
    for c in coded:
        yield _hybrid(payload, pair, prediction, klt, transform, c, image.shape)


def _side_bpp(transform: Klt | None, pair: PairData) -> float:
    return 8.0 * (transform.side_bytes if transform else 0) / pair.samples


def _hybrid(payload: fmt.Payload, pair: PairData, prediction: np.ndarray, klt: bool, transform: Klt | None,
            coded: jpeg2000.RateResult, coded_shape: tuple[int, ...]) -> tuple[fmt.Payload, np.ndarray,
                                                                               jpeg2000.RateResult]:
    # bpp and quality are for the record only
    record = {"codec": KLT_CODEC if klt else "jpeg2000", "dtype": DTYPE, "shape": list(prediction.shape),
              "bpp": round(coded.bpp, 6), "quality": round(coded.quality, 4)}
    data = residual_bytes(transform, coded.data)
    hybrid = fmt.Payload({**payload.header, "residual": record}, payload.codes, payload.sides, payload.floats,
                         data)
    recon = add_residual(prediction, decode_residual(data, record, coded_shape), pair.valid)
    return hybrid, recon, coded


_LAST_RESIDUAL: list = []  # [(pair, weak reference to the prediction, klt), (transform, image)]


def _residual_to_code(pair: PairData, prediction: np.ndarray, klt: bool) -> tuple[Klt | None, np.ndarray]:
    """The residual's transform and the integer image JPEG2000 codes. Callers try one prediction
    at several rates in a row, and the transform does not depend on the rate: the last one is
    kept for as long as its prediction array lives."""
    if _LAST_RESIDUAL:
        (last_pair, last_prediction, last_klt), result = _LAST_RESIDUAL
        if last_pair is pair and last_prediction() is prediction and last_klt == klt:
            return result
    if klt:
        result = klt_residual(pair.target.data, prediction, pair.valid)
    else:
        result = (None, residual_image(pair.target.data, prediction, pair.valid))
    _LAST_RESIDUAL[:] = [(pair, weakref.ref(prediction), klt), result]
    return result


def generator_points(pair: PairData, cands: list[Candidate], hybrid_rates: list[float],
                     project_pixels: int | None = None) -> tuple[list[RDPoint], list[str]]:
    """A point per candidate, and a hybrid point per total rate its own bytes leave room for;
    and the hybrids the residual codec could not make. With ``project_pixels``, also each
    hybrid projected to a scene of that many pixels (family "hybrid-projected")."""
    points, errors = [], []
    for c in cands:
        prediction = c.prediction(pair)
        p = score(pair, "generator", c.label, prediction, c.nbytes, bits=c.bits, run=str(c.run))
        log.info(f"  {p.label}: {p.bpp:.4f} bpp, SNR {p.snr_db:.2f} dB")
        points.append(p)
        if project_pixels:
            got, errs = projected_hybrids(pair, c, prediction, hybrid_rates, project_pixels)
            points += got
            errors += errs
        totals = [t for t in sorted(hybrid_rates) if t - p.bpp > 0.1 * t]  # else the weights use it all
        coded = with_residuals(c.payload, pair, prediction, [t - p.bpp for t in totals]) if totals else []
        for total, got in zip(totals, coded):
            if isinstance(got, QmtganError):
                errors.append(f"{pair.name}: {c.label} + residual @ {total:g}: {got}")
                log.info(f"  {c.label} + residual @ {total:g}: not computed: {got}")
                continue
            hybrid, recon, _ = got
            h = score(pair, "hybrid", f"{c.label} + JPEG2000 residual @ {total:g}", recon,
                      len(fmt.encode(hybrid)), total, bits=c.bits, run=str(c.run))
            log.info(f"  {h.label}: {h.bpp:.4f} bpp, SNR {h.snr_db:.2f} dB")
            points.append(h)
    return points, errors


def projected_hybrids(pair: PairData, c: Candidate, prediction: np.ndarray, rates: list[float],
                      pixels: int) -> tuple[list[RDPoint], list[str]]:
    """The hybrid as it would be on a scene of ``pixels`` pixels, assuming the generator's
    per-pixel quality holds there: the same weights spread over that many samples, the residual
    coded at the rate they leave, measured on this scene. Its bytes are given per this scene's
    samples (residual bytes + weight bytes x this scene's pixels / ``pixels``), so its bpp is
    the projected total rate."""
    points, errors = [], []
    h, w = pair.reference.shape
    weights = c.nbytes * (h * w) / pixels
    totals = sorted(rates)
    coded = with_residuals(c.payload, pair, prediction, [t - 8.0 * weights / pair.samples for t in totals])
    for total, got in zip(totals, coded):
        if isinstance(got, QmtganError):
            errors.append(f"{pair.name}: {c.label} + residual @ {total:g}, projected: {got}")
            continue
        hybrid, recon, _ = got
        label = f"{c.label} + JPEG2000 residual @ {total:g}, projected"
        points.append(score(pair, "hybrid-projected", label, recon, round(weights + len(hybrid.residual)),
                            total, bits=c.bits, run=str(c.run), pixels=pixels, weight_bytes=c.nbytes))
    return points, errors


def choose(
    pair: PairData, cands: list[Candidate], budget_bpp: float
) -> tuple[Candidate, RDPoint, np.ndarray]:
    """The candidate with the best measured SNR whose bytes fit ``budget_bpp``, its point and
    its prediction."""
    fitting = [c for c in cands if 8.0 * c.nbytes / pair.samples <= budget_bpp]
    if not fitting:
        smallest = min(cands, key=lambda c: c.nbytes)
        raise QmtganError(
            f"no configuration meets {budget_bpp:g} bpp on this scene: the smallest, "
            f"{smallest.label}, takes {8.0 * smallest.nbytes / pair.samples:.5f} bpp "
            f"({smallest.nbytes:,} bytes); train a narrower generator (--ngf) or raise the budget"
        )
    best = None
    for c in fitting:
        prediction = c.prediction(pair)
        p = score(pair, "generator", c.label, prediction, c.nbytes, bits=c.bits)
        log.info(f"  {c.label}: {p.bpp:.5f} bpp, SNR {p.snr_db:.2f} dB")
        if best is None or p.snr_db > best[1].snr_db:
            best = (c, p, prediction)
    return best


def allocated_candidate(run: Path, pair: PairData, method: str, budget_bpp: float | None, seed: int = 0,
                        attempts: int = 60, max_loss_db: float | None = None,
                        quantizer=quantize_tensors) -> Candidate:
    """The run's generator with per-layer widths chosen from measured sensitivities
    (quantize/allocate.py) so that the whole payload, on disk, fits ``budget_bpp``, or (with
    ``max_loss_db`` instead) the narrowest whose summed per-layer drops stay within it and
    quantized by ``quantizer`` (tensors, policy, seed); the allocation is logged layer by layer."""
    from qmtgan.quantize.allocate import (allocate, allocate_within_loss, allocation_policy, describe,
                                          layer_options)
    from qmtgan.quantize.sweep import Evaluator
    from qmtgan.train.dataset import make_patch_set
    from qmtgan.train.model_io import load_model

    generator, cfg, norm, _ = load_model(run)
    tensors = generator_tensors(generator)
    patches = make_patch_set(pair.reference, pair.target, cfg.patch_size, normalization=norm)
    evaluator = Evaluator(generator, patches, pair.target.data, pair.valid)
    options = layer_options(tensors, method, lambda w: evaluator.measure(w)[0]["snr_db"])
    header = scene_header(pair.reference, cfg.patch_size)
    encode = lambda policy: to_payload(quantize_tensors(tensors, policy, seed), cfg.to_dict(), norm, header)
    if max_loss_db is not None:
        allocation = allocate_within_loss(options, max_loss_db)
        policy = allocation_policy(method, allocation)
        payload = to_payload(quantizer(tensors, policy, seed), cfg.to_dict(), norm, header)
        log.info(f"allocation within {max_loss_db:g} dB of float:\n{describe(allocation, options)}")
        return Candidate(run, f"{generator_label(cfg)}, {policy.label}", max(allocation.values()), payload,
                         len(fmt.encode(payload)))
    budget = budget_bpp * pair.samples / 8.0
    widest = {o.layer: o for o in options if o.bits == max(x.bits for x in options)}
    overhead = len(fmt.encode(encode(allocation_policy(method, {k: o.bits for k, o in widest.items()})))) - \
        sum(o.nbytes for o in widest.values())
    room = budget - overhead
    for _ in range(attempts):
        allocation = allocate(options, room)
        policy = allocation_policy(method, allocation)
        payload = encode(policy)
        nbytes = len(fmt.encode(payload))
        if nbytes <= budget:
            log.info(f"allocation for {budget_bpp:g} bpp ({nbytes:,} of {budget:,.0f} bytes):\n"
                     f"{describe(allocation, options)}")
            return Candidate(run, f"{generator_label(cfg)}, {policy.label}", max(allocation.values()),
                             payload, nbytes)
        log.debug(f"allocation for {room:,.0f} bytes of layers: the file takes {nbytes:,} of {budget:,.0f}")
        # coded together, the layers took more than apart: ask for less, a little more each time
        room = min(room - (nbytes - budget), 0.97 * room)
    raise QmtganError(f"no allocation of {run} fits {budget_bpp:g} bpp after {attempts} tries")
