"""RTP fixed header (RFC 3550 §5.1), CSRC list, header extension (§5.3.1), padding.

The relay's per-packet path does not build ``RtpPacket`` objects: it unpacks
the fixed 12 octets with ``HEADER.unpack_from`` and only calls
``payload_bounds`` when the first octet says there is a CSRC list, an
extension or padding (``data[0] & 0x3F``).  ``parse_rtp`` and ``build_rtp``
are the readable forms, for tests and the (per-tick) packetiser.

    0                   1                   2                   3
    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |V=2|P|X|  CC   |M|     PT      |       sequence number         |
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |                           timestamp                           |
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |           synchronization source (SSRC) identifier            |
   +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from switch.media.errors import MalformedRtp

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "REWRITE",
    "RTP_VERSION",
    "RtpPacket",
    "build_rtp",
    "is_rtcp",
    "parse_rtp",
    "payload_bounds",
]

RTP_VERSION: Final = 2
HEADER_SIZE: Final = 12
HEADER: Final = struct.Struct("!BBHII")
"""V/P/X/CC, M/PT, sequence number, timestamp, SSRC."""
REWRITE: Final = struct.Struct("!HII")
"""The part of the fixed header a translator rewrites: sequence, timestamp, SSRC (offset 2)."""


def payload_bounds(data: bytes) -> tuple[int, int] | None:
    """``(start, end)`` of the payload, or None if the header does not fit the packet.

    Walks the CSRC list (§5.1, 4 octets per CC), the header extension
    (§5.3.1: 16-bit profile, 16-bit length in 32-bit words, then the words)
    and the padding (§5.1: the last octet counts the padding octets, itself
    included).  The version is not checked here.
    """
    n = len(data)
    if n < HEADER_SIZE:
        return None
    first = data[0]
    start = HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:
        if start + 4 > n:
            return None
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    if start > n:
        return None
    end = n
    if first & 0x20:
        if end == start:
            return None
        pad = data[-1]
        if pad == 0 or pad > end - start:
            return None
        end -= pad
    return start, end


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpPacket:
    """One parsed RTP packet (RFC 3550 §5.1)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    """(profile-defined 16 bits, extension words) of §5.3.1."""
    padding: int = 0


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet; raise ``MalformedRtp`` for a short or version ≠ 2 one."""
    bounds = payload_bounds(data)
    if bounds is None:
        raise MalformedRtp(f"RTP header does not fit in {len(data)} octets")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise MalformedRtp(f"RTP version {first >> 6}, not 2")
    count = first & 0x0F
    csrcs = struct.unpack_from(f"!{count}I", data, HEADER_SIZE) if count else ()
    extension = None
    if first & 0x10:
        at = HEADER_SIZE + 4 * count
        profile, words = struct.unpack_from("!HH", data, at)
        extension = (profile, bytes(data[at + 4:at + 4 + 4 * words]))
    start, end = bounds
    return RtpPacket(payload_type=second & 0x7F, marker=bool(second & 0x80), sequence=sequence,
                     timestamp=timestamp, ssrc=ssrc, payload=bytes(data[start:end]),
                     csrcs=tuple(csrcs), extension=extension, padding=len(data) - end)


def build_rtp(*, payload_type: int, sequence: int, timestamp: int, ssrc: int,
              payload: bytes, marker: bool = False, csrcs: tuple[int, ...] = (),
              extension: tuple[int, bytes] | None = None, padding: int = 0) -> bytes:
    """Serialise an RTP packet (RFC 3550 §5.1; extension words must be a multiple of 4 octets)."""
    if not 0 <= payload_type < 128 or len(csrcs) > 15:
        raise ValueError("payload type must be 0..127 and at most 15 CSRCs")
    first = RTP_VERSION << 6 | len(csrcs) | (0x10 if extension else 0) | (0x20 if padding else 0)
    parts = [HEADER.pack(first, payload_type | (0x80 if marker else 0), sequence & 0xFFFF,
                         timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)]
    if csrcs:
        parts.append(struct.pack(f"!{len(csrcs)}I", *csrcs))
    if extension is not None:
        profile, words = extension
        if len(words) % 4:
            raise ValueError("RTP header extension must be whole 32-bit words")
        parts.append(struct.pack("!HH", profile, len(words) // 4) + words)
    parts.append(payload)
    if padding:
        if not 0 < padding < 256:
            raise ValueError("padding must be 1..255 octets")
        parts.append(bytes(padding - 1) + bytes((padding,)))
    return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """Version 2 and a packet type of SR..APP (RFC 3550 §6.4–6.7; 200–204) or the
    feedback types of RFC 4585 (205, 206): the checks of §A.2 on the first packet."""
    return len(data) >= 8 and data[0] >> 6 == RTP_VERSION and 200 <= data[1] <= 206
