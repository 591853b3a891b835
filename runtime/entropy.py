"""Entropy coding of the quantized integers: the CODE section of a payload (numpy + stdlib).

The codes are written as symbols, one byte each for widths up to 8 bits and two (little-endian)
above, every quantized tensor after the other in header order, then coded by one of:

  packed   no entropy coding: the codes bit-packed at their own widths (bitpack.py); what every
           payload before 2.4 holds, and the fallback when no coder gains
  ppmd     PPMd variant H of order 2 (the `pyppmd` package, 7-Zip's coder): an adaptive range
           coder whose model is the two previous symbols; it comes within a few per cent of
           each tensor's order-0 entropy
  lzma     raw LZMA2 (the standard library's liblzma): an adaptive binary range coder
  zstd     Zstandard (the `zstandard` package: Huffman and tANS), the floor

The encoder keeps whichever is smallest, and keeps a PPMd stream only after decoding it back to
the same symbols. The decoder is told the exact number of symbols by
the header, inflates no further than that, and checks every code against its width, so that a
hostile section can neither claim memory nor hand the dequantizer an out-of-range code.
"""

from __future__ import annotations

import io
import lzma

import numpy as np

from qmtgan.runtime import bitpack
from qmtgan.runtime.errors import QmtganError

# The coders' settings are fixed here, so that a header names a coder and never sets the
# decoder's memory: LZMA2's dictionary, PPMd's order and model memory.
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 23}]
_PPMD_ORDER, _PPMD_MEMORY = 2, 16 << 20
CODERS = ("packed", "ppmd", "lzma", "zstd")


def symbol_width(bits: int) -> int:
    """Bytes per symbol for codes of ``bits`` bits."""
    return 1 if bits <= 8 else 2


def symbol_bytes(counts: list[int], widths: list[int]) -> int:
    return sum(n * symbol_width(b) for n, b in zip(counts, widths))


def _symbols(arrays: list[np.ndarray], widths: list[int]) -> bytes:
    parts = [
        np.asarray(c).ravel().astype("u1" if symbol_width(b) == 1 else "<u2") for c, b in zip(arrays, widths)
    ]
    return b"".join(p.tobytes() for p in parts)


def _library(module: str, coder: str):
    """A coder's library, imported when a payload uses it (a board needs only its payloads')."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise QmtganError(f"{coder}-coded codes need the `{module}` package (pip install {module})") from exc


def _ppmd_encode(raw: bytes) -> bytes | None:
    """The PPMd stream of ``raw``, or None when it does not decode back to ``raw``."""
    pyppmd = _library("pyppmd", "ppmd")
    coder = pyppmd.Ppmd7Encoder(_PPMD_ORDER, _PPMD_MEMORY)
    data = coder.encode(raw) + coder.flush(endmark=False)
    try:
        back = pyppmd.Ppmd7Decoder(_PPMD_ORDER, _PPMD_MEMORY).decode(data, len(raw))
    except ValueError:
        return None
    return data if back == raw else None


def encode(arrays: list[np.ndarray], widths: list[int], coder: str | None = None) -> tuple[str, bytes]:
    """(coder, CODE section bytes): the given coder, or the smallest of all when None."""
    if coder is not None and coder not in CODERS:
        raise QmtganError(f"unknown code coder '{coder}' (choose from {', '.join(CODERS)})")
    packed = bitpack.pack_stream(arrays, widths)  # also checks every code against its width
    if coder == "packed" or not arrays:
        return "packed", packed
    raw = _symbols(arrays, widths)
    found = {"packed": packed} if coder is None else {}
    wanted = CODERS[1:] if coder is None else (coder,)
    if "ppmd" in wanted:
        data = _ppmd_encode(raw)
        if data is not None:
            found["ppmd"] = data
        elif coder == "ppmd":
            raise QmtganError("PPMd did not decode these codes back to themselves; choose another coder")
    if "lzma" in wanted:
        found["lzma"] = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if "zstd" in wanted:
        found["zstd"] = _library("zstandard", "zstd").ZstdCompressor(level=22).compress(raw)
    best = min(found, key=lambda k: (len(found[k]), CODERS.index(k)))
    return best, found[best]


def decode(coder: str, data: bytes, counts: list[int], widths: list[int], name: str) -> list[np.ndarray]:
    """The uint32 codes of every quantized tensor, checked against their widths."""
    if coder == "packed":
        need = bitpack.packed_size(sum(n * b for n, b in zip(counts, widths)))
        if len(data) != need:
            raise QmtganError(f"{name}: CODE section has {len(data)} bytes, the header's tensors need {need}")
        return bitpack.unpack_stream(data, counts, widths)
    if coder not in CODERS:
        raise QmtganError(f"{name}: unknown code coder {coder!r} (this qmtgan reads {', '.join(CODERS)})")
    need = symbol_bytes(counts, widths)
    raw = _inflate(coder, data, need, name)
    if len(raw) > need:
        raise QmtganError(
            f"{name}: its {coder}-coded codes run past the {need} bytes the header's tensors need"
        )
    if len(raw) < need:
        raise QmtganError(
            f"{name}: its {coder}-coded codes hold {len(raw)} bytes, the header's tensors need {need}"
        )
    out, offset = [], 0
    for n, bits in zip(counts, widths):
        size = symbol_width(bits)
        codes = np.frombuffer(raw, "u1" if size == 1 else "<u2", count=n, offset=offset).astype(np.uint32)
        if n and int(codes.max()) >> bits:
            raise QmtganError(
                f"{name}: a code ({int(codes.max())}) does not fit its {bits}-bit tensor (corrupted)"
            )
        out.append(codes)
        offset += n * size
    return out


def _inflate(coder: str, data: bytes, need: int, name: str) -> bytes:
    """At most need + 1 bytes of the coded stream, so that the excess is seen without being made."""
    try:
        if coder == "zstd":
            zstandard = _library("zstandard", "zstd")
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=False) as r:
                raw = r.read(need + 1)
                if len(raw) == need and r.read(1):
                    raise QmtganError(f"{name}: its zstd-coded codes run past the header's {need} bytes")
            return raw
        if coder == "ppmd":  # the stream has no end mark: it decodes to exactly `need` bytes
            return _library("pyppmd", "ppmd").Ppmd7Decoder(_PPMD_ORDER, _PPMD_MEMORY).decode(data, need)
        inflater = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        raw = inflater.decompress(data, max_length=need + 1)
    except QmtganError:
        raise
    except Exception as exc:  # the libraries report damage as their own exception types
        raise QmtganError(
            f"{name}: its {coder}-coded codes do not decode ({type(exc).__name__}: {exc})"
        ) from exc
    if len(raw) == need and not inflater.eof:
        raise QmtganError(
            f"{name}: its {coder}-coded codes are cut short or run past {need} bytes (corrupted)"
        )
    if inflater.unused_data:
        raise QmtganError(f"{name}: bytes after its {coder}-coded codes (corrupted)")
    return raw
