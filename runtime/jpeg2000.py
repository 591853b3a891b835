"""JPEG2000 coding of band-first integer images through GDAL's JP2OpenJPEG driver (rasterio).

Used for the JPEG2000 baselines and for the residual of the hybrid mode, whose decoder runs on
the device: numpy and rasterio only. Rates are bits per sample, bpp = 8 x bytes / (bands x H x W),
from the encoded bytes (the codestream, as written).

One image at several rates is coded once with a quality layer per rate (`encode_at_rates`):
the stream's first k layers are itself a JPEG2000 stream at the k-th rate (`first_layers`
keeps them), so the wavelet transform and the block coding, which are nearly all of an
encode's time, run once instead of once per rate.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import numpy as np

from qmtgan.runtime.errors import QmtganError

DRIVER = "JP2OpenJPEG"
# No GeoJP2 / GMLJP2 boxes: the grid travels elsewhere, and the boxes would cost bytes.
_OPTIONS = {"GMLJP2": "NO", "GeoJP2": "NO", "YCC": "NO"}
DTYPES = ("uint16", "int16")


def require_driver() -> None:
    import rasterio

    with rasterio.Env() as env:
        if DRIVER not in env.drivers():
            raise QmtganError(f"GDAL has no {DRIVER} driver here (rasterio {rasterio.__version__}, GDAL "
                              f"{rasterio.__gdal_version__}): install a rasterio wheel built with OpenJPEG")


@contextlib.contextmanager
def _quiet():
    """The coded images carry no georeference on purpose; rasterio would warn about it."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def bits_per_sample(nbytes: int, shape: tuple[int, ...]) -> float:
    return 8.0 * nbytes / float(np.prod(shape))


def encode(image: np.ndarray, quality: float | None) -> bytes:
    """(bands, H, W) uint16/int16 -> JP2 bytes. ``quality``: GDAL's QUALITY, the size as a
    percentage of the uncompressed image; None codes losslessly (reversible 5/3 wavelet)."""
    options = ({"REVERSIBLE": "YES", "QUALITY": "100"} if quality is None else
               {"REVERSIBLE": "NO", "QUALITY": _quality(quality)})
    return _encode(image, options)


def _quality(quality: float) -> str:
    return f"{min(max(quality, 1e-4), 100.0):.6f}"


def encode_layers(image: np.ndarray, qualities: list[float]) -> bytes:
    """One stream with a quality layer per entry of ``qualities`` (increasing), layer by layer
    (LRCP) with each tile-part's packet lengths (PLT) so that `first_layers` can cut it."""
    if any(b <= a for a, b in zip(qualities, qualities[1:])):
        raise QmtganError(f"JPEG2000 layer qualities must increase, got {qualities}")
    return _encode(image, {"REVERSIBLE": "NO", "QUALITY": ",".join(_quality(q) for q in qualities),
                           "PROGRESSION": "LRCP", "PLT": "YES"})


def _encode(image: np.ndarray, coding: dict) -> bytes:
    from rasterio.io import MemoryFile

    if image.ndim != 3 or image.dtype.name not in DTYPES:
        raise QmtganError(f"JPEG2000 codes (bands, H, W) {'/'.join(DTYPES)} images, got {image.dtype} "
                          f"{image.shape}")
    require_driver()
    bands, h, w = image.shape
    options = {**_OPTIONS, **coding}
    with _quiet(), MemoryFile() as mem:
        with mem.open(driver=DRIVER, width=w, height=h, count=bands, dtype=image.dtype.name,
                      **options) as dst:
            dst.write(image)
        return bytes(mem.read())


def decode(data: bytes, shape: tuple[int, int, int], dtype: str) -> np.ndarray:
    """JP2 bytes -> (bands, H, W) of ``dtype``; the shape and type must be the expected ones."""
    import rasterio
    from rasterio.io import MemoryFile

    require_driver()
    try:
        with _quiet(), MemoryFile(data) as mem, mem.open() as src:
            got = (src.count, src.height, src.width)
            if got != tuple(shape) or src.dtypes[0] != dtype:
                raise QmtganError(
                    f"JPEG2000 stream is {got} {src.dtypes[0]}, expected {tuple(shape)} {dtype}"
                )
            return src.read()
    except rasterio.errors.RasterioError as exc:
        raise QmtganError(f"JPEG2000 stream does not decode ({exc})") from exc


@dataclass(frozen=True)
class RateResult:
    data: bytes
    quality: float
    bpp: float
    requested_bpp: float
    tries: int

    @property
    def rate_error(self) -> float:
        return self.bpp / self.requested_bpp - 1.0


def encode_at_bpp(image: np.ndarray, bpp: float, tolerance: float = 0.05, max_tries: int = 12) -> RateResult:
    """Code ``image`` at ``bpp`` bits per sample, measured from the bytes, within ``tolerance``.

    GDAL's QUALITY is a target, not a guarantee (headers, and rate allocation on whole coding
    passes), so it is corrected by the secant method on log(bytes) against log(QUALITY); the
    result is the closest try at or below the budget when no try lands within the tolerance."""
    if bpp <= 0:
        raise QmtganError(f"a JPEG2000 rate must be positive, got {bpp} bpp")
    full = 8 * image.dtype.itemsize
    if bpp >= full:
        raise QmtganError(f"{bpp} bpp is not below the {full} bits of an uncompressed {image.dtype} sample")
    tries: list[tuple[float, float, bytes]] = []  # (quality, bpp, data)
    quality = 100.0 * bpp / full
    for _ in range(max_tries):
        data = encode(image, quality)
        got = bits_per_sample(len(data), image.shape)
        tries.append((quality, got, data))
        if abs(got / bpp - 1.0) <= tolerance:
            break
        quality = _next_quality(tries, bpp, full)
    return _best(tries, bpp, tolerance)


def encode_at_rates(image: np.ndarray, rates: list[float], tolerance: float = 0.05,
                    max_tries: int = 12) -> list[RateResult]:
    """`encode_at_bpp` at each of ``rates`` (increasing), from one layered encode per try: the
    k-th result is the stream's first k layers. A rate whose layer misses the tolerance gets
    its quality corrected as `encode_at_bpp` would, and the image is coded again (a
    QmtganError if two corrected qualities meet: the caller then codes rate by rate)."""
    from qmtgan.runtime.j2k_layers import first_layers

    if list(rates) != sorted(set(rates)):
        raise QmtganError(f"JPEG2000 rates must increase, got {rates}")
    full = 8 * image.dtype.itemsize
    for bpp in rates:
        if not 0 < bpp < full:
            raise QmtganError(f"a JPEG2000 rate must be positive and below {full} bpp, got {bpp}")
    tries: list[list[tuple[float, float, bytes]]] = [[] for _ in rates]
    qualities = [100.0 * bpp / full for bpp in rates]
    for _ in range(max_tries):
        stream = encode_layers(image, sorted(qualities))
        order = sorted(range(len(rates)), key=lambda i: qualities[i])
        for layer, i in enumerate(order, start=1):
            data = first_layers(stream, layer)
            tries[i].append((qualities[i], bits_per_sample(len(data), image.shape), data))
        missing = [i for i, bpp in enumerate(rates) if not _within(tries[i], bpp, tolerance)]
        if not missing:
            break
        for i in missing:
            qualities[i] = _next_quality(tries[i], rates[i], full)
    return [_best(t, bpp, tolerance) for t, bpp in zip(tries, rates)]


def _within(tries: list[tuple[float, float, bytes]], bpp: float, tolerance: float) -> bool:
    return any(abs(got / bpp - 1.0) <= tolerance for _, got, _ in tries)


def _best(tries: list[tuple[float, float, bytes]], bpp: float, tolerance: float) -> RateResult:
    """The closest try within the tolerance, else the largest at or below the budget."""
    inside = [t for t in tries if abs(t[1] / bpp - 1.0) <= tolerance]
    below = [t for t in tries if t[1] <= bpp]
    if inside:
        q, got, data = min(inside, key=lambda t: abs(t[1] - bpp))
    elif below:
        q, got, data = max(below, key=lambda t: t[1])
    else:
        smallest = min(t[1] for t in tries)
        raise QmtganError(f"JPEG2000 cannot reach {bpp:.4g} bpp on this image: its smallest stream "
                          f"is {smallest:.4g} bpp")
    return RateResult(data, q, got, bpp, len(tries))


def _next_quality(tries: list[tuple[float, float, bytes]], bpp: float, full: int) -> float:
    (q1, b1, _) = tries[-1]
    if len(tries) == 1 or math.isclose(b1, tries[-2][1]):
        return q1 * bpp / b1
    q0, b0, _ = tries[-2]
    slope = (math.log(b1) - math.log(b0)) / (math.log(q1) - math.log(q0))
    if not math.isfinite(slope) or slope <= 0.05:
        return q1 * bpp / b1
    return float(np.clip(math.exp(math.log(q1) + (math.log(bpp) - math.log(b1)) / slope),
                         1e-4, 100.0 * 0.999 * (full - 1) / full))
