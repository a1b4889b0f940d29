"""RTP header parsing and building (RFC 3550 §5.1, §5.3.1)."""

from __future__ import annotations

import struct

import pytest

from switch.media.errors import MalformedRtp
from switch.media.rtp import HEADER, build_rtp, is_rtcp, parse_rtp, payload_bounds


def test_fixed_header_round_trip() -> None:
    data = build_rtp(payload_type=0, sequence=65535, timestamp=0xFFFFFFFF, ssrc=0xDEADBEEF,
                     payload=b"\xff" * 160, marker=True)
    assert len(data) == 172
    assert data[0] == 0x80 and data[1] == 0x80
    packet = parse_rtp(data)
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (
        0, 65535, 0xFFFFFFFF, 0xDEADBEEF)
    assert packet.marker and packet.payload == b"\xff" * 160
    assert packet.csrcs == () and packet.extension is None and packet.padding == 0


def test_csrc_extension_and_padding() -> None:
    data = build_rtp(payload_type=8, sequence=7, timestamp=1234, ssrc=1, payload=b"abcd",
                     csrcs=(11, 22, 33), extension=(0xBEDE, b"\x10\x01\x00\x00"), padding=4)
    # V=2, P, X, CC=3
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert payload_bounds(data) == (12 + 12 + 4 + 4, len(data) - 4)
    packet = parse_rtp(data)
    assert packet.csrcs == (11, 22, 33)
    assert packet.extension == (0xBEDE, b"\x10\x01\x00\x00")
    assert packet.payload == b"abcd" and packet.padding == 4


@pytest.mark.parametrize("data", [
    b"",
    b"\x80\x00\x00",
    b"\x80" + bytes(10),                                  # 11 octets
    bytes((0x83,)) + bytes(11 + 8),                       # CC=3 but two CSRCs present
    bytes((0x90,)) + bytes(11) + b"\x00\x00\x00\x05",     # extension of 5 words, none present
    bytes((0x90,)) + bytes(11) + b"\x00\x00",             # extension header cut short
    bytes((0xA0,)) + bytes(11) + b"ab\x00",               # padding count 0
    bytes((0xA0,)) + bytes(11) + b"ab\x09",               # padding longer than the payload
    bytes((0xA0,)) + bytes(11),                           # padding bit, no octets at all
])
def test_malformed_headers(data: bytes) -> None:
    assert payload_bounds(data) is None
    with pytest.raises(MalformedRtp):
        parse_rtp(data)


@pytest.mark.parametrize("version", [0, 1, 3])
def test_version_other_than_2_is_refused(version: int) -> None:
    data = HEADER.pack(version << 6, 0, 1, 2, 3) + b"x"
    with pytest.raises(MalformedRtp):
        parse_rtp(data)


def test_padding_only_payload() -> None:
    data = bytes((0xA0,)) + bytes(11) + b"\x00\x00\x03"
    assert payload_bounds(data) == (12, 12)
    assert parse_rtp(data).payload == b""


def test_build_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        build_rtp(payload_type=128, sequence=0, timestamp=0, ssrc=0, payload=b"")
    with pytest.raises(ValueError):
        build_rtp(payload_type=0, sequence=0, timestamp=0, ssrc=0, payload=b"",
                  extension=(1, b"abc"))


def test_is_rtcp() -> None:
    receiver_report = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
    assert is_rtcp(receiver_report)
    assert not is_rtcp(build_rtp(payload_type=0, sequence=0, timestamp=0, ssrc=0,
                                 payload=b"12345678"))
    assert not is_rtcp(b"\x80\xc9")
