"""The .qmtg payload: a quantized generator as bytes (numpy only; spec in docs/qmtg-format.md).

    magic      8 bytes  b"QMTG\\r\\n\\x1a\\n"
    version    u16 major, u16 minor (little-endian, like every integer here)
    count      u32 number of sections
    directory  count x (4-byte tag, u64 length, u32 CRC32 of the section)
    sections   in directory order: HEAD (UTF-8 JSON, raw-deflated from version 2.3, against the
               preset dictionary of runtime/header_dictionary.py from 2.6), SIDE
               (float32), CODE (the codes of every quantized tensor, in header order: one
               continuous bitstream, or from version 2.4 entropy coded as the header's
               "code_coder" says, runtime/entropy.py),
               FLT (float32 tensors kept unquantized), and from version 2 RES (the coded
               residual of the hybrid mode, empty without one)
    sha256     32 bytes over everything before it

Version 1 files (four sections, no residual generator) still read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmtgan.runtime import entropy
from qmtgan.runtime.atomic import atomic_file
from qmtgan.runtime.dequant import dequantize
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.header_dictionary import HEADER_DICTIONARY

MAGIC = b"QMTG\r\n\x1a\n"
# 2.1: the residual record may carry a spectral KLT; 2.2: a shared-generator predictor; 2.3: the
# header is deflated (it is most of a small scene's payload besides the residual); 2.4: the codes
# may be entropy coded, and the kmeans / pwl codebooks; 2.5: a residual's KLT as float32 in RES
# (codec "jpeg2000+klt-in-res"), the CRS as its authority code, and no generator record in a
# shared-predictor payload; 2.6: the header deflated against a preset dictionary (its keys and
# structure are most of a shared payload's header); 2.7: the "linear-base" predictor (a shared
# payload whose gate keeps the base everywhere)
VERSION = (2, 7)
HEADER_DEFLATED_FROM = (2, 3)
HEADER_DICTIONARY_FROM = (2, 6)
CODED_FROM = (2, 4)
SECTIONS_BY_MAJOR = {1: (b"HEAD", b"SIDE", b"CODE", b"FLT "),
                     2: (b"HEAD", b"SIDE", b"CODE", b"FLT ", b"RES ")}
SECTIONS = SECTIONS_BY_MAJOR[VERSION[0]]
_PREFIX = struct.Struct("<8sHHI")
_DIR_ENTRY = struct.Struct("<4sQI")
FLOAT_BITS = 32
# Limits a hostile header cannot push past: far above the paper's generator (2.6 M parameters,
# about 10 MB in float) and a whole Sentinel-2 tile's residual at a high rate.
MAX_PAYLOAD_BYTES = 1 << 30
MAX_HEADER_BYTES = 1 << 20
MAX_PARAMETERS = 1 << 26
MAX_DIMS = 6


@dataclass
class Payload:
    header: dict                  # JSON header (see docs/qmtg-format.md)
    codes: list[np.ndarray | None]  # per tensor: uint32 codes (None when float)
    sides: list[np.ndarray | None]  # per tensor: float32 side info (None when float)
    floats: list[np.ndarray | None]  # per tensor: float32 values when not quantized
    residual: bytes = b""         # the coded residual (hybrid mode; header["residual"] says how)

    def weights(self) -> list[np.ndarray]:
        """Dequantized float32 tensors in header order."""
        out = []
        for t, c, s, f in zip(self.header["tensors"], self.codes, self.sides, self.floats):
            out.append(f if c is None else dequantize(t["method"], c, s, t["bits"], t["channel_axis"]))
        return out


def encode(payload: Payload, coder: str | None = None) -> bytes:
    """The file's bytes; the codes coded by ``coder`` (runtime/entropy.py), or by whichever
    coder gives the fewest bytes when None."""
    return encode_with_coder(payload, coder)[0]


def encode_with_coder(payload: Payload, coder: str | None = None) -> tuple[bytes, str]:
    """The file's bytes and the coder its codes went through."""
    tensors = payload.header["tensors"]
    if not (len(tensors) == len(payload.codes) == len(payload.sides) == len(payload.floats)):
        raise QmtganError("payload: header and tensor lists differ in length")
    shared = payload.header.get("shared_side", False)
    side_parts, float_parts = [], []
    stream_codes, stream_bits = [], []
    for t, c, s, f in zip(tensors, payload.codes, payload.sides, payload.floats):
        if c is None:
            float_parts.append(np.asarray(f, "<f4").ravel())
            continue
        if not (shared and side_parts):
            side_parts.append(np.asarray(s, "<f4").ravel())
        stream_codes.append(np.asarray(c, np.uint32).ravel())
        stream_bits.append(t["bits"])
    code_coder, code_bytes = entropy.encode(stream_codes, stream_bits, coder)
    header = {**payload.header, "code_coder": code_coder}
    sections = {b"HEAD": pack_header(json.dumps(header, separators=(",", ":")).encode()),
                b"SIDE": b"".join(p.tobytes() for p in side_parts),
                b"CODE": code_bytes,
                b"FLT ": b"".join(p.tobytes() for p in float_parts),
                b"RES ": bytes(payload.residual)}
    if bool(payload.residual) != bool(payload.header.get("residual")):
        raise QmtganError("payload: residual bytes and the header's residual record must come together")
    return pack_sections(VERSION, [(tag, sections[tag]) for tag in SECTIONS]), code_coder


def pack_header(text: bytes, version: tuple[int, int] = VERSION) -> bytes:
    """The HEAD section of a version: the header's JSON, raw-deflated from 2.3, against the
    preset dictionary from 2.6."""
    if version < HEADER_DEFLATED_FROM:
        return text
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, **_dictionary(version))
    return packer.compress(text) + packer.flush()


def _dictionary(version: tuple[int, int]) -> dict:
    return {"zdict": HEADER_DICTIONARY} if version >= HEADER_DICTIONARY_FROM else {}


def unpack_header(chunk: bytes, version: tuple[int, int], name: str) -> bytes:
    """The header's JSON from a HEAD section, inflated (from 2.3) no further than
    MAX_HEADER_BYTES, so that a small section cannot claim a large allocation."""
    if version < HEADER_DEFLATED_FROM:
        return chunk
    inflater = zlib.decompressobj(-15, **_dictionary(version))
    try:
        text = inflater.decompress(chunk, MAX_HEADER_BYTES + 1)
    except zlib.error as exc:
        raise QmtganError(f"{name}: its header is not a valid deflate stream ({exc})") from exc
    if len(text) > MAX_HEADER_BYTES:
        raise QmtganError(f"{name}: its header inflates past {MAX_HEADER_BYTES} bytes")
    if not inflater.eof:
        raise QmtganError(f"{name}: its header's deflate stream is cut short (corrupted)")
    if inflater.unused_data:
        raise QmtganError(f"{name}: bytes after its header's deflate stream (corrupted)")
    return text


def pack_sections(version: tuple[int, int], sections: list[tuple[bytes, bytes]]) -> bytes:
    """Prefix, directory, the sections and the SHA-256: the container of every version."""
    head = _PREFIX.pack(MAGIC, *version, len(sections))
    head += b"".join(_DIR_ENTRY.pack(tag, len(data), zlib.crc32(data)) for tag, data in sections)
    body = head + b"".join(data for _, data in sections)
    return body + hashlib.sha256(body).digest()


def write(path: str | os.PathLike, payload: Payload, coder: str | None = None) -> Path:
    data = encode(payload, coder)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def decode(data: bytes, name: str = "payload") -> Payload:
    """Parse and verify; every defect is one QmtganError naming it."""
    if len(data) < _PREFIX.size + 32:
        raise QmtganError(f"{name}: truncated ({len(data)} bytes is shorter than any .qmtg file)")
    magic, major, minor, count = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise QmtganError(f"{name}: not a .qmtg payload (wrong magic {magic!r})")
    if major > VERSION[0]:
        raise QmtganError(f"{name}: format version {major}.{minor} is newer than this qmtgan reads "
                          f"({VERSION[0]}.x); upgrade qmtgan")
    if major not in SECTIONS_BY_MAJOR:
        raise QmtganError(f"{name}: format version {major}.{minor} does not exist (corrupted header)")
    tags = SECTIONS_BY_MAJOR[major]
    if count != len(tags):
        raise QmtganError(f"{name}: {count} sections, version {major} has {len(tags)} (corrupted header)")
    offset = _PREFIX.size + count * _DIR_ENTRY.size
    if len(data) < offset + 32:
        raise QmtganError(f"{name}: truncated inside its section directory")
    directory = [_DIR_ENTRY.unpack_from(data, _PREFIX.size + i * _DIR_ENTRY.size) for i in range(count)]
    if directory[0][1] > MAX_HEADER_BYTES:
        raise QmtganError(
            f"{name}: its header declares {directory[0][1]} bytes, more than {MAX_HEADER_BYTES}")
    expected = offset + sum(length for _, length, _ in directory) + 32
    if [tag for tag, _, _ in directory] != list(tags):
        raise QmtganError(f"{name}: unexpected section tags {[t for t, _, _ in directory]} (corrupted)")
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise QmtganError(f"{name}: {what}: {len(data)} bytes, its directory says {expected}")
    sections = {}
    for tag, length, crc in directory:
        chunk = data[offset : offset + length]
        if zlib.crc32(chunk) != crc:
            raise QmtganError(f"{name}: section {tag.decode().strip()} fails its CRC32 (corrupted)")
        sections[tag] = chunk
        offset += length
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise QmtganError(f"{name}: SHA-256 mismatch (corrupted)")
    try:
        header = json.loads(unpack_header(sections[b"HEAD"], (major, minor), name).decode())
        payload = _split(header, sections, name, (major, minor))
    except QmtganError:
        raise
    except (
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        OverflowError,
        RecursionError,
    ) as exc:
        raise QmtganError(f"{name}: malformed header ({type(exc).__name__}: {exc})") from exc
    payload.residual = sections.get(b"RES ", b"")
    if bool(payload.residual) != bool(header.get("residual")):
        raise QmtganError(f"{name}: residual section and header disagree (corrupted)")
    return payload


def _shape(t: dict, name: str) -> tuple[int, ...]:
    """A tensor's shape: 1..MAX_DIMS positive integers, checked before anything is sized by it."""
    shape = t["shape"]
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS
            or not all(type(v) is int and 1 <= v <= MAX_PARAMETERS for v in shape)
            or math.prod(shape) > MAX_PARAMETERS):
        raise QmtganError(f"{name}: tensor {t.get('name')!r} has shape {shape!r}, not 1..{MAX_DIMS} positive "
                          f"sizes of at most {MAX_PARAMETERS} values")
    return tuple(shape)


def _split(header: dict, sections: dict, name: str, version: tuple[int, int]) -> Payload:
    tensors, shared = header["tensors"], bool(header.get("shared_side", False))
    side = np.frombuffer(sections[b"SIDE"], "<f4")
    floats_all = np.frombuffer(sections[b"FLT "], "<f4")
    sizes = [math.prod(_shape(t, name)) for t in tensors]
    if sum(sizes) > MAX_PARAMETERS:
        raise QmtganError(f"{name}: its tensors hold {sum(sizes)} values, more than {MAX_PARAMETERS}")
    quantized = [t for t in tensors if t["bits"] != FLOAT_BITS]
    for t in quantized:
        if type(t["bits"]) is not int or not 2 <= t["bits"] <= 16:
            raise QmtganError(f"{name}: tensor {t['name']} has bit width {t['bits']}")
    counts = [math.prod(t["shape"]) for t in quantized]
    widths = [int(t["bits"]) for t in quantized]
    coder = header.get("code_coder", "packed")
    if coder != "packed" and version < CODED_FROM:
        raise QmtganError(
            f"{name}: a version {version[0]}.{version[1]} payload cannot hold {coder!r}-coded codes")
    stream = iter(entropy.decode(coder, sections[b"CODE"], counts, widths, name))
    codes, sides, floats = [], [], []
    s_off = f_off = 0
    for t in tensors:
        shape, bits, size = tuple(t["shape"]), int(t["bits"]), math.prod(t["shape"])
        if bits == FLOAT_BITS:
            if f_off + size > floats_all.size:
                raise QmtganError(f"{name}: FLT section too short for tensor {t['name']}")
            floats.append(floats_all[f_off : f_off + size].astype(np.float32).reshape(shape))
            codes.append(None)
            sides.append(None)
            f_off += size
            continue
        n_side = t["side"]
        if type(n_side) is not int or n_side < 0:
            raise QmtganError(f"{name}: tensor {t['name']} has {n_side!r} side values")
        start = 0 if shared else s_off
        if start + n_side > side.size:
            raise QmtganError(f"{name}: SIDE section too short for tensor {t['name']}")
        sides.append(side[start : start + n_side].astype(np.float32))
        s_off = n_side if shared else s_off + n_side
        codes.append(next(stream).reshape(shape))
        floats.append(None)
    if s_off != side.size or f_off != floats_all.size:
        raise QmtganError(f"{name}: SIDE/FLT sections have {side.size}/{floats_all.size} values, "
                          f"the header accounts for {s_off}/{f_off}")
    return Payload(header, codes, sides, floats)


def read(path: str | os.PathLike) -> Payload:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_PAYLOAD_BYTES:
            raise QmtganError(
                f"{path}: {size} bytes, more than a payload may hold ({MAX_PAYLOAD_BYTES}); refused")
        data = path.read_bytes()
    except OSError as exc:
        raise QmtganError(f"{path}: cannot read payload ({exc})") from exc
    return decode(data, str(path))
