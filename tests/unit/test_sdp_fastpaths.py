"""The SDP module's fast paths agree with the plain definitions they replace.

The parser checks common tokens against a set before the regex, caches the
parse of repeated c=/t=/rtpmap values, and answers attribute lookups from an
index built once per attribute list; ``OriginState.stamp`` builds descriptions
by the constructor.  Each is compared here with the straightforward version.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sdp import ENGINE, attributes, session_descriptions

from switch.sip import sdp
from switch.sip.sdp import (
    STATIC_PAYLOAD_TYPES,
    Direction,
    MediaDescription,
    OriginState,
    RtpMap,
    SdpError,
    SessionDescription,
    parse_rtpmap,
    parse_sdp,
)


def test_common_tokens_are_tokens() -> None:
    assert all(sdp._TOKEN.match(token) for token in sdp._COMMON_TOKENS)
    assert all(sdp._PROTO.match(proto) for proto in sdp._COMMON_PROTOS)


# ---------------------------------------------------------------------------
# Attribute lookups: the definitions (RFC 8866 §6, a linear scan each)
# ---------------------------------------------------------------------------

def _attribute(m: MediaDescription, name: str) -> str | None:
    for key, value in m.attributes:
        if key.lower() == name.lower():
            return value if value is not None else ""
    return None


def _rtpmap(m: MediaDescription, payload_type: int) -> RtpMap | None:
    prefix = f"{payload_type} "
    for key, value in m.attributes:
        if key.lower() == "rtpmap" and value is not None and value.startswith(prefix):
            try:
                return parse_rtpmap(value)
            except SdpError:
                return None
    return STATIC_PAYLOAD_TYPES.get(payload_type) if m.is_rtp else None


def _fmtp(m: MediaDescription, payload_type: int) -> str | None:
    prefix = f"{payload_type} "
    for key, value in m.attributes:
        if key.lower() == "fmtp" and value is not None and value.startswith(prefix):
            return value[len(prefix):].strip()
    return None


def _direction(m: MediaDescription) -> Direction | None:
    found = None
    for key, value in m.attributes:
        if value is None and key in {d.value for d in Direction}:
            found = Direction(key)
    return found


_PTS = [0, 8, 18, 96, 101, 127]
_NAMES = ["rtpmap", "RTPMAP", "fmtp", "Fmtp", "ptime", "sendrecv", "sendonly", "inactive",
          "recvonly", "x"]
_VALUES = ["0 PCMU/8000", "8 PCMA/8000/1", "96 opus/48000/2", "101 telephone-event/8000",
           "101 0-15", "96  useinbandfec=1 ", "18 annexb=no", "0", "96", "96 bad", "20", "x"]
phone_attributes = st.lists(
    st.tuples(st.sampled_from(_NAMES), st.none() | st.sampled_from(_VALUES)), max_size=8)


@settings(max_examples=400, deadline=None)
@given(st.lists(attributes, max_size=6) | phone_attributes,
       st.sampled_from(["RTP/AVP", "RTP/SAVP", "udp"]))
def test_attribute_lookups_agree_with_a_scan(attrs: list[tuple[str, str | None]],
                                             proto: str) -> None:
    m = MediaDescription("audio", 4000, proto, tuple(str(pt) for pt in _PTS),
                         attributes=tuple(attrs))
    for pt in _PTS:
        assert m.rtpmap(pt) == _rtpmap(m, pt)
        assert m.fmtp(pt) == _fmtp(m, pt)
    for name in {*_NAMES, *(key for key, _ in attrs)}:
        assert m.attribute(name) == _attribute(m, name)
    assert m.direction_attribute == _direction(m)
    assert m.rtpmaps() == {pt: r for pt in _PTS if (r := _rtpmap(m, pt)) is not None}
    session = SessionDescription(ENGINE, attributes=tuple(attrs))
    assert session.direction_attribute == _direction(m)
    assert session.attribute("ptime") == _attribute(m, "ptime")


# ---------------------------------------------------------------------------
# Caches and constructors
# ---------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(session_descriptions())
def test_stamp_is_replace_of_the_origin(description: SessionDescription) -> None:
    state = OriginState.create(sess_id=7, address="192.0.2.1")
    state, first = state.stamp(description)
    assert first == replace(description, origin=state.origin)
    again, same = state.stamp(description)
    assert same == first and again.origin.sess_version == 7
    changed = replace(description, session_name=description.session_name + "x")
    bumped_state, bumped = again.stamp(changed)
    assert bumped == replace(changed, origin=replace(state.origin, sess_version=8))
    assert bumped_state == OriginState(bumped.origin, bumped)


@pytest.mark.parametrize("line, why", [
    ("c=IN IP4 1.2.3", "is not an IP4 address"),
    ("c=IN IP4 192.0.2.1/300", "TTL 300 is out of range"),
    ("t=0 x", "stop time 'x' is not a number"),
])
def test_cached_field_parsers_fail_every_time(line: str, why: str) -> None:
    # lru_cache does not keep exceptions: a bad value is rejected on every body.
    body = f"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n{line}\r\n"
    for _ in range(2):
        with pytest.raises(SdpError, match=f"SDP line 4 .*{why}"):
            parse_sdp(body)


def test_cached_values_are_shared_and_frozen() -> None:
    body = ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    a, b = parse_sdp(body), parse_sdp(body)
    assert a == b and a.connection is b.connection
    assert a.media[0].rtpmap(0) is b.media[0].rtpmap(0)
    with pytest.raises(AttributeError):
        a.connection.address = "x"  # type: ignore[misc, union-attr]
