"""Dense big-endian bit packing of unsigned integer codes (numpy only).

A stream holds several arrays of different widths one after the other, bit to bit:
n codes of b bits take exactly n*b bits, and the stream is padded to a whole byte once.
"""

from __future__ import annotations

import numpy as np

from qmtgan.runtime.errors import QmtganError

MAX_BITS = 32


def packed_size(total_bits: int) -> int:
    return (total_bits + 7) // 8


def _check(codes: np.ndarray, bits: int) -> np.ndarray:
    if not 1 <= bits <= MAX_BITS:
        raise QmtganError(f"cannot pack {bits}-bit codes")
    c = np.asarray(codes).ravel()
    if c.size and (c.min() < 0 or int(c.max()) >> bits):
        raise QmtganError(f"a code does not fit in {bits} unsigned bits (range {c.min()}..{c.max()})")
    return c.astype(np.uint64)


def pack_stream(arrays: list[np.ndarray], widths: list[int]) -> bytes:
    planes = []
    for codes, bits in zip(arrays, widths):
        c = _check(codes, bits)
        shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
        planes.append(((c[:, None] >> shifts) & np.uint64(1)).astype(np.uint8).ravel())
    return np.packbits(np.concatenate(planes)).tobytes() if planes else b""


def unpack_stream(data: bytes, counts: list[int], widths: list[int]) -> list[np.ndarray]:
    """Inverse of pack_stream: ``counts[i]`` codes of ``widths[i]`` bits each (uint32)."""
    total = sum(n * b for n, b in zip(counts, widths))
    if len(data) < packed_size(total):
        raise QmtganError(f"bitstream too short: {len(data)} bytes, {packed_size(total)} needed")
    flat = np.unpackbits(np.frombuffer(data, np.uint8, count=packed_size(total)))
    out, offset = [], 0
    for n, bits in zip(counts, widths):
        plane = flat[offset : offset + n * bits].reshape(n, bits).astype(np.uint64)
        out.append((plane @ (np.uint64(1) << np.arange(bits - 1, -1, -1, dtype=np.uint64))).astype(np.uint32))
        offset += n * bits
    return out


def pack(codes: np.ndarray, bits: int) -> bytes:
    return pack_stream([codes], [bits])


def unpack(data: bytes, count: int, bits: int) -> np.ndarray:
    return unpack_stream(data, [count], [bits])[0]
