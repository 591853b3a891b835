"""A per-block choice between two predictions of a scene (1: the generator's, 0: the linear
base), as the few bytes a payload carries: the block side, the grid's rows and columns, and the
packed bits, deflated and base64-coded in the header."""

from __future__ import annotations

import base64
import binascii
import math
import zlib

import numpy as np

from qmtgan.runtime.errors import QmtganError

MAX_BLOCK = 4096


def block_grid(shape: tuple[int, int], block: int) -> tuple[int, int]:
    """Rows and columns of blocks covering an (H, W) scene (the last ones may be partial)."""
    return math.ceil(shape[0] / block), math.ceil(shape[1] / block)


def expand(gate: np.ndarray, block: int, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) pixel mask of a (rows, cols) block gate."""
    return np.repeat(np.repeat(gate, block, axis=0), block, axis=1)[: shape[0], : shape[1]]


def apply(gate: np.ndarray, block: int, chosen: np.ndarray, base: np.ndarray) -> np.ndarray:
    """(bands, H, W): ``chosen`` where the gate is 1, ``base`` elsewhere."""
    return np.where(expand(gate, block, base.shape[1:])[None], chosen, base)


def block_errors(target: np.ndarray, recon: np.ndarray, valid: np.ndarray, block: int) -> np.ndarray:
    """(rows, cols) squared error of ``recon`` over each block's valid pixels, all bands."""
    rows, cols = block_grid(valid.shape, block)
    err = np.where(valid[None], (np.asarray(target, np.float64) - recon) ** 2, 0.0).sum(axis=0)
    padded = np.zeros((rows * block, cols * block))
    padded[: err.shape[0], : err.shape[1]] = err
    return padded.reshape(rows, block, cols, block).sum(axis=(1, 3))


def to_record(gate: np.ndarray, block: int) -> dict:
    packed = zlib.compress(np.packbits(gate.astype(bool).ravel()).tobytes(), 9)
    return {"block": block, "rows": int(gate.shape[0]), "cols": int(gate.shape[1]),
            "bits": base64.b64encode(packed).decode("ascii")}


def from_record(record: object, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """(gate, block) of a header record, checked against the (H, W) scene before the bits are
    inflated (bounded by the grid's own size)."""
    if not isinstance(record, dict):
        raise QmtganError(f"gate record is {type(record).__name__}, not an object")
    block = record.get("block")
    if type(block) is not int or not 1 <= block <= MAX_BLOCK:
        raise QmtganError(f"gate block {block!r} is not in 1..{MAX_BLOCK}")
    rows, cols = block_grid(shape, block)
    if (record.get("rows"), record.get("cols")) != (rows, cols):
        raise QmtganError(f"gate grid {record.get('rows')!r}x{record.get('cols')!r} does not cover a "
                          f"{shape[0]}x{shape[1]} px scene in {block} px blocks ({rows}x{cols})")
    need = math.ceil(rows * cols / 8)
    try:
        text = record.get("bits")
        if not isinstance(text, str):
            raise ValueError("no bits")
        inflater = zlib.decompressobj()
        packed = inflater.decompress(base64.b64decode(text.encode("ascii"), validate=True), need + 1)
        if not inflater.eof or inflater.unconsumed_tail or len(packed) != need:
            raise ValueError(f"they inflate to other than {need} bytes")
    except (ValueError, binascii.Error, zlib.error, UnicodeEncodeError) as exc:
        raise QmtganError(f"gate bits are damaged ({exc})") from exc
    bits = np.unpackbits(np.frombuffer(packed, np.uint8))[: rows * cols]
    return bits.reshape(rows, cols).astype(bool), block
