"""What a user would fly instead of a generator, on the same pair and the same axes.

One small class per kind; each yields (label, reconstruction, bytes, requested bpp, extra), and
`Baseline.run` scores them all in one place (rd/points.py):

  reference         the reference itself as the prediction (0 bytes)
  gain-offset       per-band gain and offset fitted to the pair (2 x bands float32)
  linear            a bands x (bands + 1) spectral predictor, least squares (stored as a
                    payload stores a linear base: 12-bit taps, float32 offsets)
  linear-3x3        the same over each pixel's 3x3 neighbourhood, bands x (9 bands + 1): it
                    also absorbs a sub-pixel misregistration between the dates
  jpeg2000          JPEG2000 of the target at each requested rate
  linear+jpeg2000   the linear predictor plus JPEG2000 of its residual, at each total rate
  linear-3x3+jpeg2000  the same with the 3x3 predictor
  klt+jpeg2000      a spectral KLT (PCA over the bands) of the target, then JPEG2000 of its
                    components in one codestream, the transform's floats counted
  linear-3x3+klt+jpeg2000  the 3x3 predictor plus the same coding of its residual
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

from qmtgan.rd.points import PairData, RDPoint, score
from qmtgan.runtime import jpeg2000
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.klt import Klt
from qmtgan.runtime.linear import apply_linear
from qmtgan.runtime.linear_coding import CodedLinear
from qmtgan.runtime.residual import add_residual, residual_image
from qmtgan.train.linear_fit import fit_linear

log = logging.getLogger(__name__)

FLOAT_BYTES = 4


def linear_prediction(pair: PairData, kernel: int) -> tuple[CodedLinear, np.ndarray]:
    """(coefficients as stored, prediction from them) of the robust linear predictor, fitted
    once per pair and kernel; stored as a shared-predictor payload stores its base."""
    key = ("linear", kernel)
    if key not in pair.memo:
        coef = fit_linear(pair.reference.data, pair.target.data, pair.valid, kernel=kernel)
        stored = CodedLinear.code(coef)
        pair.memo[key] = (stored, apply_linear(stored.coef, pair.reference.data, pair.valid))
    return pair.memo[key]


class Baseline:
    family = ""
    rate_driven = False  # True: one point per requested rate

    def run(self, pair: PairData, rates: list[float]) -> list[RDPoint]:
        return [score(pair, self.family, label, recon, nbytes, requested, **extra)
                for label, recon, nbytes, requested, extra in self._run_impl(pair, rates)]

    def _run_impl(self, pair: PairData, rates: list[float]) -> Iterator[tuple]:
        raise NotImplementedError


class ReferenceAsPrediction(Baseline):
    family = "reference"

    def _run_impl(self, pair, rates):
        yield "reference as the prediction", pair.reference.data, 0, None, {}


class GainOffset(Baseline):
    family = "gain-offset"

    def _run_impl(self, pair, rates):
        coef = fit_linear(pair.reference.data, pair.target.data, pair.valid, cross=False)
        bands = coef.shape[0]
        yield ("per-band gain + offset", apply_linear(coef, pair.reference.data, pair.valid),
               2 * bands * FLOAT_BYTES, None, {})


class LinearPredictor(Baseline):
    family = "linear"
    kernel = 1

    def _run_impl(self, pair, rates):
        stored, prediction = linear_prediction(pair, self.kernel)
        what = "spectral" if self.kernel == 1 else f"{self.kernel}x{self.kernel} spatial-spectral"
        yield (
            f"linear {stored.coef.shape[0]}x{stored.coef.shape[1]} {what} predictor",
            prediction,
            stored.nbytes,
            None,
            {},
        )


class SpatialLinearPredictor(LinearPredictor):
    family = "linear-3x3"
    kernel = 3


class Jpeg2000OfTarget(Baseline):
    family = "jpeg2000"
    rate_driven = True

    def _run_impl(self, pair, rates):
        image = np.clip(np.rint(pair.target.data), 0, 65535).astype(np.uint16)
        for bpp, coded in zip(rates, jpeg2000.encode_at_rates(image, rates)):
            recon = jpeg2000.decode(coded.data, image.shape, "uint16").astype(np.float32)
            recon[:, ~pair.valid] = 0.0
            yield (f"JPEG2000 @ {bpp:g}", recon, len(coded.data), bpp,
                   {"quality": coded.quality, "rate_tries": coded.tries})


def code_residual(
    pair: PairData, prediction: np.ndarray, rates: list[float]
) -> Iterator[tuple[np.ndarray, "jpeg2000.RateResult"]]:
    """prediction + JPEG2000 of its residual at each of ``rates`` (bits per sample of the
    residual), one layered encode; each reconstruction is made when it is asked for (a scene
    each)."""
    residual = residual_image(pair.target.data, prediction, pair.valid)
    for coded in jpeg2000.encode_at_rates(residual, rates):
        decoded = jpeg2000.decode(coded.data, residual.shape, "int16")
        yield add_residual(prediction, decoded, pair.valid), coded


class LinearPlusJpeg2000(Baseline):
    family = "linear+jpeg2000"
    rate_driven = True
    kernel = 1

    def _run_impl(self, pair, rates):
        stored, prediction = linear_prediction(pair, self.kernel)
        side = stored.nbytes
        name = "linear" if self.kernel == 1 else f"linear {self.kernel}x{self.kernel}"
        coded_rates = code_residual(pair, prediction, [bpp - 8.0 * side / pair.samples for bpp in rates])
        for bpp, (recon, coded) in zip(rates, coded_rates):
            yield (f"{name} + JPEG2000 residual @ {bpp:g}", recon, side + len(coded.data), bpp,
                   {"quality": coded.quality, "rate_tries": coded.tries, "predictor_bytes": side})


class SpatialLinearPlusJpeg2000(LinearPlusJpeg2000):
    family = "linear-3x3+jpeg2000"
    kernel = 3


def klt_code(pair: PairData, image: np.ndarray,
             rates: list[float]) -> Iterator[tuple[np.ndarray, int, "jpeg2000.RateResult"]]:
    """`image` (float, bands-first) through the KLT and JPEG2000 at each of `rates` in all, the
    transform's floats included, from one layered encode: (decoded image, bytes, rate result)
    per rate. The transform is fitted once for all the rates."""
    klt = Klt.fit(image, pair.valid)
    comps = klt.forward(image, pair.valid)
    side_bpp = 8.0 * klt.side_bytes / pair.samples
    for coded in jpeg2000.encode_at_rates(comps, [bpp - side_bpp for bpp in rates]):
        decoded = klt.inverse(jpeg2000.decode(coded.data, comps.shape, "int16"))
        yield decoded, klt.side_bytes + len(coded.data), coded


class KltJpeg2000OfTarget(Baseline):
    family = "klt+jpeg2000"
    rate_driven = True

    def _run_impl(self, pair, rates):
        for bpp, (decoded, nbytes, coded) in zip(rates, klt_code(pair, pair.target.data, rates)):
            recon = np.clip(np.rint(decoded), 0, 65535).astype(np.float32)
            recon[:, ~pair.valid] = 0.0
            yield (f"KLT + JPEG2000 @ {bpp:g}", recon, nbytes, bpp,
                   {"quality": coded.quality, "rate_tries": coded.tries})


class SpatialLinearPlusKltJpeg2000(Baseline):
    family = "linear-3x3+klt+jpeg2000"
    rate_driven = True

    def _run_impl(self, pair, rates):
        stored, prediction = linear_prediction(pair, 3)
        side = stored.nbytes
        residual = pair.target.data - prediction
        coded_rates = klt_code(pair, residual, [bpp - 8.0 * side / pair.samples for bpp in rates])
        for bpp, (decoded, nbytes, coded) in zip(rates, coded_rates):
            recon = add_residual(prediction, decoded, pair.valid)
            yield (f"linear 3x3 + KLT + JPEG2000 residual @ {bpp:g}", recon, side + nbytes, bpp,
                   {"quality": coded.quality, "rate_tries": coded.tries, "predictor_bytes": side})


BASELINES: tuple[type[Baseline], ...] = (
    ReferenceAsPrediction,
    GainOffset,
    LinearPredictor,
    SpatialLinearPredictor,
    Jpeg2000OfTarget,
    LinearPlusJpeg2000,
    SpatialLinearPlusJpeg2000,
    KltJpeg2000OfTarget,
    SpatialLinearPlusKltJpeg2000,
)


def run_baselines(pair: PairData, rates: list[float]) -> tuple[list[RDPoint], list[str]]:
    """Every baseline on ``pair``; a baseline that cannot run (no JPEG2000 driver, a rate out of
    reach) becomes an error line, and the other rows are still computed."""
    points, errors = [], []
    for cls in BASELINES:
        # every rate from one layered encode; rate by rate only to tell which one fails
        chunks = [sorted(rates)] if cls.rate_driven else [[]]
        while chunks:
            chunk = chunks.pop(0)
            try:
                got = cls().run(pair, chunk)
            except QmtganError as exc:
                if len(chunk) > 1:
                    chunks = [[r] for r in chunk]
                    continue
                what = f"{cls.family}" + (f" @ {chunk[0]:g} bpp" if chunk else "")
                errors.append(f"{pair.name}: {what}: {exc}")
                log.info(f"  {what}: not computed: {exc}")
                continue
            for p in got:
                log.info(f"  {p.label}: {p.bpp:.4f} bpp, SNR {p.snr_db:.2f} dB")
            points.extend(got)
    return points, errors
