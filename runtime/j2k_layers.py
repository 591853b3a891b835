"""The first k quality layers of a JPEG2000 codestream, as a codestream of its own
(ISO/IEC 15444-1, Annex A).

The stream must be layer-progressive (LRCP), with one tile-part per tile and each tile-part's
packet lengths in PLT marker segments, as `jpeg2000.encode_layers` writes it. Every layer of a
tile has the same number of packets (one per resolution, component and precinct), in layer
order, so the first k layers of a tile are its first k/L of packets. The cut stream keeps the
main header with the layer count set to k, each tile-part's SOT (new length) and SOD followed by
those packets, drops the PLT segments (an index a decoder does not need) and ends with EOC.
"""

from __future__ import annotations

import struct

from qmtgan.runtime.errors import QmtganError

SOC, SOT, SOD, EOC, COD, PLT = 0xFF4F, 0xFF90, 0xFF93, 0xFFD9, 0xFF52, 0xFF58
LRCP = 0


def _marker(stream: bytes, at: int) -> tuple[int, int]:
    """(marker, segment length including its 2 length bytes) at ``at``."""
    if at + 4 > len(stream):
        raise QmtganError(f"JPEG2000 stream ends inside a marker at byte {at}")
    marker, length = struct.unpack_from(">HH", stream, at)
    if marker >> 8 != 0xFF or length < 2 or at + 2 + length > len(stream):
        raise QmtganError(f"JPEG2000 stream: bad marker segment {marker:#06x} at byte {at}")
    return marker, length


def _packet_lengths(segment: bytes) -> list[int]:
    """A PLT segment's body after Zplt: lengths coded 7 bits a byte, high bit = more follows."""
    lengths, value = [], 0
    for byte in segment:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            lengths.append(value)
            value = 0
    if value:
        raise QmtganError("JPEG2000 stream: a PLT packet length runs past its segment")
    return lengths


def layer_count(stream: bytes) -> int:
    return _main_header(stream)[1]


def _main_header(stream: bytes) -> tuple[int, int, int]:
    """(offset of the first SOT, the COD's layer count, the offset of that count)."""
    if len(stream) < 2 or struct.unpack_from(">H", stream, 0)[0] != SOC:
        raise QmtganError("not a JPEG2000 codestream (no SOC marker)")
    at, layers, layers_at = 2, None, None
    while True:
        marker, length = _marker(stream, at)
        if marker == SOT:
            break
        if marker == COD:
            if length < 7:
                raise QmtganError("JPEG2000 stream: COD segment too short")
            progression, layers = stream[at + 5], struct.unpack_from(">H", stream, at + 6)[0]
            if progression != LRCP:
                raise QmtganError(f"JPEG2000 stream is not layer-progressive (progression {progression})")
            layers_at = at + 6
        at += 2 + length
    if layers is None:
        raise QmtganError("JPEG2000 stream: no COD segment in the main header")
    return at, layers, layers_at


def first_layers(stream: bytes, keep: int) -> bytes:
    """The codestream of the first ``keep`` quality layers of ``stream``."""
    at, layers, layers_at = _main_header(stream)
    if not 1 <= keep <= layers:
        raise QmtganError(f"JPEG2000 stream has {layers} layers; cannot keep {keep}")
    head = bytearray(stream[:at])
    struct.pack_into(">H", head, layers_at, keep)
    out = [bytes(head)]
    while True:
        marker = struct.unpack_from(">H", stream, at)[0] if at + 2 <= len(stream) else None
        if marker == EOC:
            break
        if marker != SOT:
            raise QmtganError(f"JPEG2000 stream: expected a tile-part or EOC at byte {at}")
        _, lsot = _marker(stream, at)
        tile, psot, part, parts = struct.unpack_from(">HIBB", stream, at + 4)
        if lsot != 10 or psot < 14 or at + psot > len(stream) or part != 0 or parts not in (0, 1):
            raise QmtganError(f"JPEG2000 stream: tile-part at byte {at} is not the whole of one tile")
        end, cursor, kept, lengths = at + psot, at + 12, [], []
        while True:
            marker = struct.unpack_from(">H", stream, cursor)[0] if cursor + 2 <= end else None
            if marker == SOD:
                break
            marker, length = _marker(stream, cursor)
            if cursor + 2 + length > end:
                raise QmtganError(f"JPEG2000 stream: tile {tile}'s header runs past its tile-part")
            if marker == PLT:
                lengths += _packet_lengths(stream[cursor + 5:cursor + 2 + length])  # after Lplt, Zplt
            elif marker == COD:
                raise QmtganError(f"JPEG2000 stream: tile {tile} has its own coding style")
            else:
                kept.append(stream[cursor:cursor + 2 + length])
            cursor += 2 + length
        body = cursor + 2
        if not lengths or sum(lengths) != end - body or len(lengths) % layers:
            raise QmtganError(f"JPEG2000 stream: tile {tile}'s packet lengths do not match its data")
        data = stream[body:body + sum(lengths[:len(lengths) // layers * keep])]
        header = b"".join(kept)
        out.append(struct.pack(">HHHIBB", SOT, 10, tile, 12 + len(header) + 2 + len(data), part, parts))
        out += [header, struct.pack(">H", SOD), data]
        at = end
    out.append(struct.pack(">H", EOC))
    return b"".join(out)
