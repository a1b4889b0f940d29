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


# ---------------------------------------------------------------------------
# Templates: a body parsed from the template of an earlier one (o= and ports re-read)
# ---------------------------------------------------------------------------

TEMPLATE_BODY = ("v=0\r\no=phone 100 100 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
                 "t=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                 "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
                 "m=video {video} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")


def _uncached(body: str) -> SessionDescription | str:
    try:
        return sdp._parse_text(body, sdp.DEFAULT_SDP_LIMITS)
    except SdpError as exc:
        return f"{type(exc).__name__}: {exc}"


def _cached(body: str) -> SessionDescription | str:
    try:
        return parse_sdp(body)
    except SdpError as exc:
        return f"{type(exc).__name__}: {exc}"


origin_values = st.one_of(
    st.builds(lambda a, b: f"phone {a} {b} IN IP4 192.0.2.1",
              st.integers(0, 2**64), st.integers(0, 2**64)),
    st.sampled_from(["", " ", "phone 1 1 IN IP4 192.0.2.1 \t", "phone 1 x IN IP4 192.0.2.1",
                     "phone 1 1 IN IP4", "phone\x001 1 IN IP4 192.0.2.1",
                     "- 1 1 IN IP6 ::1", "phone  1 1 IN IP4 192.0.2.1"]),
    st.text(st.characters(blacklist_characters="\r\n"), max_size=40))
port_values = st.one_of(st.integers(0, 70000).map(str),
                        st.sampled_from(["0", "00", "0100", "4000/2", "x", "", "65535", "65536"]))


@settings(max_examples=300)
@given(origin_values, port_values, port_values, st.booleans())
def test_template_parse_agrees_with_the_full_parse(origin: str, port: str, video: str,
                                                   bare_lf: bool) -> None:
    parse_sdp(TEMPLATE_BODY.format(port=4000, video=5000))     # the template
    body = TEMPLATE_BODY.format(port=port, video=video).replace(
        "o=phone 100 100 IN IP4 192.0.2.1", f"o={origin}")
    if bare_lf:
        body = body.replace("\r\n", "\n")
        parse_sdp(TEMPLATE_BODY.format(port=4000, video=5000).replace("\r\n", "\n"))
    assert _cached(body) == _uncached(body)
    assert _cached(body) == _uncached(body)     # and once it is a template itself


def test_template_hit_keeps_the_other_fields() -> None:
    first = parse_sdp(TEMPLATE_BODY.format(port=4000, video=5000))
    again = parse_sdp(TEMPLATE_BODY.format(port=4000, video=5000))
    assert again is first
    other = parse_sdp(TEMPLATE_BODY.format(port=4002, video=5002).replace(" 100 100 ", " 7 8 "))
    assert other.origin.sess_id == "7" and other.origin.sess_version == 8
    assert [m.port for m in other.media] == [4002, 5002]
    assert other.media[0].attributes is first.media[0].attributes


def test_templates_are_bounded() -> None:
    for port in range(2 * sdp._TEMPLATES_MAX):
        parse_sdp(f"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=x{port}\r\nc=IN IP4 192.0.2.1\r\n"
                  f"t=0 0\r\nm=audio {port + 1} RTP/AVP 0\r\n")
    assert len(sdp._templates) <= sdp._TEMPLATES_MAX


def test_other_limits_bypass_the_templates() -> None:
    body = TEMPLATE_BODY.format(port=4000, video=5000)
    parse_sdp(body)
    with pytest.raises(SdpError, match="more than 1 media"):
        parse_sdp(body, sdp.SdpLimits(max_media=1))


@given(session_descriptions())
def test_encode_with_cached_attribute_blocks_is_the_lines(description: SessionDescription) -> None:
    text = "\r\n".join(description.encode_lines()) + "\r\n"
    assert description.to_text() == text
    assert description.encode() == text.encode("utf-8", "surrogateescape")


def test_repeated_bodies_bytes_or_text_parse_alike() -> None:
    body = TEMPLATE_BODY.format(port=4100, video=5100)
    as_text, as_bytes = parse_sdp(body), parse_sdp(body.encode())
    assert as_text == as_bytes == _uncached(body)
    assert parse_sdp(body.encode()) is as_bytes          # the exact body again
    bad = body.replace("o=phone 100 100", "o=phone 100 x")
    for _ in range(2):                                    # errors are never kept
        with pytest.raises(SdpError, match="sess-version"):
            parse_sdp(bad.encode())
