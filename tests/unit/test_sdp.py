"""SDP parsing, encoding and offer/answer (switch.sip.sdp; RFC 8866, RFC 3264, RFC 4317)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.sip.errors import ParseError
from switch.sip.sdp import (
    G722,
    PCMA,
    PCMU,
    STATIC_PAYLOAD_TYPES,
    Answer,
    Bandwidth,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    NoCommonMedia,
    Origin,
    OriginState,
    Rtcp,
    RtpMap,
    SdpError,
    SdpLimits,
    SdpNotAcceptable,
    SdpTooLarge,
    SelectedFormat,
    SessionDescription,
    TimeDescription,
    addrtype_of,
    answer_direction,
    hold_direction,
    is_refresh,
    negotiate,
    parse_event_list,
    parse_rtpmap,
    parse_sdp,
    resume_direction,
    rewrite_connection,
    select_formats,
    set_direction,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "sdp"
ALL_VECTORS = sorted(p.name for p in VECTORS.glob("*.sdp"))
ENGINE = Origin("switch", "1000", 1000, "IN", "IP4", "203.0.113.1")


def text_of(name: str) -> str:
    return (VECTORS / name).read_bytes().decode()


def load(name: str) -> SessionDescription:
    return parse_sdp((VECTORS / name).read_bytes())


def answer_of(result: Answer | NoCommonMedia) -> Answer:
    assert isinstance(result, Answer), result
    return result


# ---------------------------------------------------------------------------
# Vectors: parse, exact round trip
# ---------------------------------------------------------------------------

def test_vectors_exist() -> None:
    assert len(ALL_VECTORS) >= 20


@pytest.mark.parametrize("name", ALL_VECTORS)
def test_vector_round_trips_exactly(name: str) -> None:
    raw = (VECTORS / name).read_bytes()
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    sdp = parse_sdp(raw)
    assert sdp.encode() == raw
    assert parse_sdp(sdp.encode()) == sdp
    assert parse_sdp(raw.decode()) == sdp          # str input too


@pytest.mark.parametrize("name", ALL_VECTORS)
def test_vector_tolerates_lf_and_trailing_whitespace(name: str) -> None:
    raw = text_of(name)
    # An all-blank value ("s= ") is a value, not trailing whitespace (RFC 8866 §5.3).
    sloppy = "".join(line + ("" if line.endswith("=") else " \t") + "\n"
                     for line in raw.split("\r\n")[:-1])
    assert parse_sdp(sloppy) == parse_sdp(raw)
    assert parse_sdp(raw.replace("\r\n", "\n")).encode() == raw.encode()
    # Padding blank lines after the last line are harmless.
    assert parse_sdp(raw + "\r\n\r\n") == parse_sdp(raw)


@pytest.mark.parametrize("name", ALL_VECTORS)
def test_vector_with_trailing_garbage_names_the_line(name: str) -> None:
    raw = text_of(name)
    lines = raw.count("\r\n")
    with pytest.raises(SdpError, match=rf"line {lines + 1} 'garbage'"):
        parse_sdp(raw + "garbage\r\n")


@pytest.mark.parametrize("name", ALL_VECTORS)
def test_vector_truncated_at_every_line_parses_or_raises_sdp_error(name: str) -> None:
    lines = text_of(name).split("\r\n")
    for cut in range(len(lines)):
        body = "\r\n".join(lines[:cut])
        try:
            parse_sdp(body)
        except SdpError:
            pass


def test_rfc4317_offer_fields() -> None:
    sdp = load("rfc4317_2.1_offer.sdp")
    assert sdp.origin == Origin("alice", "2890844526", 2890844526, "IN", "IP4",
                                "host.atlanta.example.com")
    assert sdp.session_name == ""
    assert sdp.connection == Connection("IN", "IP4", "host.atlanta.example.com")
    assert sdp.times == (TimeDescription(0, 0),)
    audio, video = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio", 49170, "RTP/AVP", ("0", "8", "97"))
    assert audio.rtpmap(97) == RtpMap(97, "iLBC", 8000)
    assert video.rtpmaps() == {31: RtpMap(31, "H261", 90000), 32: RtpMap(32, "MPV", 90000)}
    assert sdp.media_direction(0) is Direction.SENDRECV
    assert not sdp.is_hold()


def test_rfc8866_example_all_session_fields() -> None:
    sdp = load("rfc8866_5_example.sdp")
    assert sdp.information == "SDP Offer #1"
    assert sdp.uri == "http://www.jdoe.example.com/home.html"
    assert sdp.emails == ("Jane Doe <jane@jdoe.example.com>",)
    assert sdp.phones == ("+1 617 555-6011",)
    # Static payload type 0 without a=rtpmap (RFC 3551 table 4).
    assert sdp.media[0].rtpmap(0) == RtpMap(0, "PCMU", 8000, 1)
    assert sdp.media_connection(2) == Connection("IN", "IP6", "2001:db8::2")
    assert sdp.media_connection(1) == sdp.connection


def test_multicast_ttl_count_repeat_zone_port_count() -> None:
    sdp = load("multicast_rfc4566.sdp")
    assert sdp.connection == Connection("IN", "IP4", "224.2.17.12", ttl=127)
    assert sdp.times == (TimeDescription(2873397496, 2873404696, ("604800 3600 0 90000",),
                                         "2882844526 -1h 2898848070 0"),)
    video = sdp.media[1]
    assert (video.port, video.port_count) == (51372, 2)
    assert video.connection == Connection("IN", "IP4", "224.2.1.1", ttl=127, count=3)
    # Session-level recvonly is the default for every stream (RFC 8866 §6.7).
    assert sdp.media_direction(0) is Direction.RECVONLY
    assert sdp.media_direction(1) is Direction.RECVONLY


def test_baresip_offer() -> None:
    sdp = load("phone_baresip.sdp")
    audio = sdp.media[0]
    assert sdp.attribute("tool") == "baresip 3.10.1"
    assert audio.rtpmap(96) == RtpMap(96, "opus", 48000, 2)
    assert audio.fmtp(96) == "stereo=1;sprop-stereo=1"
    assert audio.telephone_event_pt() == 101
    assert audio.telephone_events(101) == frozenset(range(16))
    assert audio.ptime == 20
    assert audio.bandwidths == (Bandwidth("AS", 128),)
    assert audio.attribute("rtcp-rsize") == ""
    assert audio.attribute("rtcp") is None and audio.rtcp is None
    assert audio.direction_attribute is Direction.SENDRECV


def test_linphone_offer_telephone_event_per_clock_rate_and_rtcp() -> None:
    sdp = load("phone_linphone.sdp")
    audio = sdp.media[0]
    assert audio.telephone_event_pt(8000) == 100
    assert audio.telephone_event_pt(16000) == 99
    assert audio.telephone_event_pt(48000) == 101
    assert audio.rtcp == Rtcp(7079)
    assert len(audio.attribute_values("candidate")) == 3
    assert audio.rtpmap(18) == STATIC_PAYLOAD_TYPES[18]
    assert audio.fmtp(18) == "annexb=yes"
    assert sdp.attribute("ice-ufrag") == "8a1c4b2e"
    # No telephone-event fmtp: events 0-15 (RFC 4733 §7.1.1).
    assert audio.telephone_events(100) == frozenset(range(16))


def test_pjsua_offer_media_level_connection_and_rtcp_address() -> None:
    sdp = load("phone_pjsua.sdp")
    assert sdp.connection is None
    audio = sdp.media[0]
    assert sdp.media_connection(0) == Connection("IN", "IP4", "10.0.0.5")
    assert audio.rtcp == Rtcp(4001, "IN", "IP4", "10.0.0.5")
    assert sdp.bandwidths == (Bandwidth("AS", 84),)
    assert audio.bandwidths == (Bandwidth("TIAS", 64000),)
    assert audio.telephone_events(101) == frozenset(range(17))


def test_polycom_session_level_direction() -> None:
    sdp = load("phone_polycom.sdp")
    assert sdp.direction_attribute is Direction.SENDRECV
    assert sdp.media[0].direction_attribute is None
    assert sdp.media_direction(0) is Direction.SENDRECV
    assert sdp.media[0].rtpmap(102) == RtpMap(102, "G7221", 16000)


def test_ipv6_offer() -> None:
    sdp = load("phone_ipv6.sdp")
    assert sdp.origin.addrtype == "IP6"
    assert sdp.connection == Connection("IN", "IP6", "2001:db8::20")
    assert sdp.media[0].rtcp == Rtcp(5005, "IN", "IP6", "2001:db8::20")


def test_rejected_stream_without_format_is_tolerated() -> None:
    body = text_of("rfc4317_3.1_offer.sdp") + "m=video 0 RTP/AVP\r\n"
    sdp = parse_sdp(body)
    assert sdp.media[1].is_rejected and sdp.media[1].formats == ()
    assert sdp.encode().decode() == body


def test_empty_session_name_with_space_is_kept() -> None:
    body = text_of("rfc4317_3.1_offer.sdp").replace("s=\r\n", "s= \r\n")
    sdp = parse_sdp(body)
    assert sdp.session_name == " "
    assert sdp.encode().decode() == body


# ---------------------------------------------------------------------------
# Malformed bodies
# ---------------------------------------------------------------------------

GOOD = text_of("rfc4317_3.1_offer.sdp")


@pytest.mark.parametrize(("body", "pattern"), [
    ("", "empty SDP body"),
    (GOOD.replace("v=0\r\n", ""), r"line 1 'o=alice.*must start with v="),
    (GOOD.replace("v=0", "v=1"), r"line 1 'v=1'.*version 0"),
    (GOOD.replace("m=audio 49170", "m=audio abc"), r"line 6 'm=audio abc.*port 'abc' is not"),
    (GOOD.replace("m=audio 49170", "m=audio 70000"), r"line 6 .*port 70000 is out of range"),
    (GOOD.replace("m=audio 49170", "m=audio -1"), r"line 6 .*port '-1'"),
    (GOOD.replace("m=audio 49170", "m=audio 49170/0"), r"line 6 .*port count"),
    (GOOD.replace("RTP/AVP 0 97", "RTP/AVP 0 200"), r"line 6 .*payload type 200"),
    (GOOD.replace("RTP/AVP 0 97", "RTP/AVP 0 x"), r"line 6 .*payload type 'x'"),
    (GOOD.replace("RTP/AVP 0 97", "RTP/AVP"), r"line 6 .*no format"),
    (GOOD.replace("m=audio 49170 RTP/AVP 0 97", "m=audio 49170"), r"line 6 .*m= needs"),
    (GOOD.replace("c=IN IP4 host.atlanta.example.com", "c=IN IP4 999.1.1.1"),
     r"line 4 'c=IN IP4 999.1.1.1'.*not an IP4 address"),
    (GOOD.replace("c=IN IP4 host.atlanta.example.com", "c=IN IP4 1.2.3"),
     r"line 4 .*'1.2.3' is not an IP4"),
    (GOOD.replace("c=IN IP4 host.atlanta.example.com", "c=IN IP4 2001:db8::1"),
     r"line 4 .*not an IP4"),
    (GOOD.replace("c=IN IP4 host.atlanta.example.com", "c=IN IP6 192.0.2.1"),
     r"line 4 .*not an IP6"),
    (GOOD.replace("c=IN IP4 host.atlanta.example.com", "c=IN IP4 224.2.1.1/300"),
     r"line 4 .*TTL 300"),
    (GOOD.replace("c=IN IP4 host.atlanta.example.com", "c=IN IP6 ff15::101/3/2"),
     r"line 4 .*at most /<count>"),
    (GOOD.replace("c=IN IP4 host.atlanta.example.com", "c=IN IP4"), r"line 4 .*c= needs"),
    (GOOD.replace("c=IN IP4 host.atlanta.example.com\r\n", ""), r"no c= line"),
    (GOOD.replace("t=0 0\r\n", ""), r"missing t= line"),
    (GOOD.replace("t=0 0", "t=now 0"), r"line 5 .*start time"),
    (GOOD.replace("s=\r\n", ""), r"line 3 'c=IN.*s= must follow o="),
    (GOOD.replace("o=alice 2890844526 2890844526", "o=alice x 2890844526"), r"line 2 .*sess-id"),
    (GOOD.replace("o=alice 2890844526 2890844526", "o=alice 2890844526"), r"line 2 .*o= needs"),
    (GOOD.replace("s=\r\n", "s=\r\ns=again\r\n"), r"line 4 's=again'.*out of order"),
    (GOOD.replace("t=0 0\r\n", "t=0 0\r\nc=IN IP4 192.0.2.1\r\n"), r"line 6 'c=IN IP4 192.0.2.1'"),
    (GOOD.replace("t=0 0\r\n", "t=0 0\r\nx=unknown\r\n"), r"line 6 'x=unknown'.*unknown"),
    (GOOD + "a=sendrecv\r\nb=AS:64\r\n", r"line 10 'b=AS:64'.*out of order"),
    (GOOD + "y=1\r\n", r"line 9 'y=1'.*unknown"),
    (GOOD + "r=1 2 3\r\n", r"line 9 'r=1 2 3'.*unknown or misplaced"),
    (GOOD.replace("t=0 0\r\n", "r=1 2 3\r\nt=0 0\r\n"), r"line 5 'r=1 2 3'.*must follow a t="),
    (GOOD.replace("t=0 0\r\n", "t=0 0\r\nz=1 -1h\r\nz=2 0\r\n"), r"line 7 'z=2 0'"),
    (GOOD.replace("a=rtpmap:0 PCMU/8000", "a=rtp map:0"), r"line 7 .*attribute name"),
    (GOOD.replace("a=rtpmap:0 PCMU/8000", "a rtpmap"), r"line 7 'a rtpmap'.*<type>=<value>"),
    (GOOD.replace("a=rtpmap:0 PCMU/8000", "A=rtpmap:0 PCMU/8000"), r"line 7 .*<type>=<value>"),
    (GOOD.replace("t=0 0\r\n", "t=0 0\r\n\r\n"), r"line 6 ''.*<type>=<value>"),
    (GOOD.replace("RTP/AVP 0 97\r\n", "RTP/AVP 0 97\r\nb=AS\r\n"),
     r"line 7 'b=AS'.*<bwtype>:<bandwidth>"),
    (GOOD.replace("RTP/AVP 0 97\r\n", "RTP/AVP 0 97\r\nb=AS:x\r\n"),
     r"line 7 'b=AS:x'.*bandwidth 'x'"),
    (GOOD.replace("s=", "s=a\x00b"), r"line 3 .*NUL"),
    (GOOD.replace("s=\r\n", "s=a\rb\r\n"), r"line 3 .*CR"),
])
def test_malformed_bodies_raise_naming_the_line(body: str, pattern: str) -> None:
    with pytest.raises(SdpError, match=pattern) as info:
        parse_sdp(body)
    assert isinstance(info.value, ParseError)
    assert info.value.status == 400 and info.value.reason == "Bad Request"


def test_limits() -> None:
    with pytest.raises(SdpTooLarge) as info:
        parse_sdp(GOOD, SdpLimits(max_size=50))
    assert info.value.status == 513
    with pytest.raises(SdpTooLarge, match="lines"):
        parse_sdp(GOOD, SdpLimits(max_lines=5))
    many = GOOD + "m=audio 1 RTP/AVP 0\r\n" * 3
    with pytest.raises(SdpTooLarge, match="media"):
        parse_sdp(many, SdpLimits(max_media=3))
    assert len(parse_sdp(many, SdpLimits(max_media=4)).media) == 4


def test_long_line_is_shortened_in_the_message() -> None:
    body = GOOD.replace("t=0 0\r\n", "t=0 0\r\nq=" + "x" * 500 + "\r\n")
    with pytest.raises(SdpError) as info:
        parse_sdp(body)
    assert len(str(info.value)) < 200


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_raise_sdp_error(data: bytes) -> None:
    try:
        parse_sdp(data)
    except SdpError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_VECTORS), st.data())
def test_mutated_vectors_parse_or_raise_sdp_error(name: str, data: st.DataObject) -> None:
    raw = bytearray((VECTORS / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.sampled_from(b" /:=0a\r\n\x00\xff-"))
    try:
        sdp = parse_sdp(bytes(raw))
    except SdpError:
        return
    assert parse_sdp(sdp.encode()) == sdp


# ---------------------------------------------------------------------------
# Hypothesis round trip
# ---------------------------------------------------------------------------

TOKEN_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "\"(),/:;<=>?@[\\]{}")
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=8)
nums = st.integers(0, 2**40)
_text_chars = st.characters(codec="utf-8", exclude_characters="\r\n\x00")
# A value survives the trailing-whitespace tolerance if it does not end in
# blank, or (for a whole field, e.g. "s= ") is nothing but blanks.
texts = st.text(_text_chars, max_size=20).filter(
    lambda t: t.rstrip(" \t") == t or t.strip(" \t") == "")
nonblank = st.text(_text_chars, min_size=1, max_size=20).filter(
    lambda t: t.rstrip(" \t") == t and t.strip() != "")
words = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=10)
ip4 = st.ip_addresses(v=4).map(str)
ip6 = st.ip_addresses(v=6).map(str)


@st.composite
def connections(draw: st.DrawFn) -> Connection:
    kind = draw(st.sampled_from(["ip4", "ip4m", "ip6", "fqdn", "other"]))
    if kind == "ip4":
        return Connection("IN", "IP4", draw(ip4))
    if kind == "ip4m":
        ttl = draw(st.integers(0, 255))
        count = draw(st.none() | st.integers(1, 16))
        return Connection("IN", "IP4", draw(ip4), ttl, count)
    if kind == "ip6":
        return Connection("IN", "IP6", draw(ip6), None, draw(st.none() | st.integers(1, 16)))
    if kind == "fqdn":
        return Connection("IN", draw(st.sampled_from(["IP4", "IP6"])), "media.example.net")
    return Connection("ATM", "NSAP", draw(words))


attributes = st.tuples(tokens, st.none() | texts.filter(lambda t: t.rstrip(" \t") == t))


@st.composite
def media_descriptions(draw: st.DrawFn, need_connection: bool) -> MediaDescription:
    proto = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "RTP/AVPF",
                                  "udp", "TCP/MSRP", "TCP/TLS/BFCP"]))
    if "RTP" in proto.split("/"):
        fmt = st.integers(0, 127).map(str)
    else:
        fmt = tokens
    conns = draw(st.lists(connections(), min_size=1 if need_connection else 0, max_size=2))
    return MediaDescription(
        media=draw(st.sampled_from(["audio", "video", "application", "text", "message"])),
        port=draw(st.integers(0, 65535)), proto=proto,
        formats=tuple(draw(st.lists(fmt, min_size=1, max_size=6))),
        port_count=draw(st.none() | st.integers(1, 4)),
        title=draw(st.none() | texts), connections=tuple(conns),
        bandwidths=tuple(draw(st.lists(st.builds(Bandwidth, tokens, nums), max_size=2))),
        key=draw(st.none() | texts), attributes=tuple(draw(st.lists(attributes, max_size=6))))


@st.composite
def session_descriptions(draw: st.DrawFn) -> SessionDescription:
    addrtype = draw(st.sampled_from(["IP4", "IP6"]))
    origin = Origin(draw(words), str(draw(nums)), draw(nums), "IN", addrtype,
                    draw(ip4 if addrtype == "IP4" else ip6))
    session_conn = draw(st.none() | connections())
    media = draw(st.lists(media_descriptions(need_connection=session_conn is None),
                          max_size=4))
    times = draw(st.lists(st.builds(TimeDescription, nums, nums,
                                    st.lists(nonblank, max_size=2).map(tuple),
                                    st.none() | nonblank), min_size=1, max_size=3))
    return SessionDescription(
        origin=origin, session_name=draw(texts), information=draw(st.none() | texts),
        uri=draw(st.none() | texts), emails=tuple(draw(st.lists(texts, max_size=2))),
        phones=tuple(draw(st.lists(texts, max_size=2))), connection=session_conn,
        bandwidths=tuple(draw(st.lists(st.builds(Bandwidth, tokens, nums), max_size=2))),
        times=tuple(times), key=draw(st.none() | texts),
        attributes=tuple(draw(st.lists(attributes, max_size=5))), media=tuple(media))


@settings(max_examples=400, deadline=None)
@given(session_descriptions())
def test_round_trip_random_descriptions(sdp: SessionDescription) -> None:
    encoded = sdp.encode()
    parsed = parse_sdp(encoded)
    assert parsed == sdp
    assert parsed.encode() == encoded
    # Bare-LF form parses to the same value.
    assert parse_sdp(encoded.replace(b"\r\n", b"\n")) == sdp


# ---------------------------------------------------------------------------
# Helpers: rtpmap, events, static table, directions
# ---------------------------------------------------------------------------

def test_static_payload_types_rfc3551() -> None:
    expected = {0: ("PCMU", 8000), 3: ("GSM", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000),
                13: ("CN", 8000), 18: ("G729", 8000), 34: ("H263", 90000)}
    for pt, (name, rate) in expected.items():
        assert (STATIC_PAYLOAD_TYPES[pt].encoding, STATIC_PAYLOAD_TYPES[pt].clock_rate) == (
            name, rate)
    assert STATIC_PAYLOAD_TYPES[10].channels == 2
    assert 96 not in STATIC_PAYLOAD_TYPES and 1 not in STATIC_PAYLOAD_TYPES


def test_static_payload_type_applies_to_rtp_only() -> None:
    m = MediaDescription("audio", 1, "RTP/AVP", ("0", "96"))
    assert m.rtpmap(0) == STATIC_PAYLOAD_TYPES[0]
    assert m.rtpmap(96) is None                              # dynamic, unmapped
    assert m.rtpmaps() == {0: STATIC_PAYLOAD_TYPES[0]}
    assert MediaDescription("audio", 1, "udp", ("0",)).rtpmap(0) is None
    # An explicit rtpmap wins over the table.
    remapped = m.with_attributes([("rtpmap", "0 FOO/16000")])
    assert remapped.rtpmap(0) == RtpMap(0, "FOO", 16000)


def test_parse_rtpmap() -> None:
    assert parse_rtpmap("111 opus/48000/2") == RtpMap(111, "opus", 48000, 2)
    assert parse_rtpmap("101 telephone-event/8000").encode() == "101 telephone-event/8000"
    for bad in ("x PCMU/8000", "0 PCMU", "0 PCMU/x", "0 /8000", "200 PCMU/8000", "0 a/1/2/3"):
        with pytest.raises(SdpError):
            parse_rtpmap(bad)
    m = MediaDescription("audio", 1, "RTP/AVP", ("96",), attributes=(("rtpmap", "96 bad"),))
    assert m.rtpmap(96) is None


def test_parse_event_list() -> None:
    assert parse_event_list("0-15") == frozenset(range(16))
    assert parse_event_list("0-11,16, 32-34,x,9-3") == frozenset([*range(12), 16, 32, 33, 34])


def test_ptime_and_rtcp_edge_cases() -> None:
    m = MediaDescription("audio", 1, "RTP/AVP", ("0",))
    assert m.ptime is None and m.rtcp is None and m.maxptime is None
    assert m.with_attributes([("ptime", "22.5"), ("maxptime", "40")]).ptime == 22
    assert m.with_attributes([("maxptime", "40")]).maxptime == 40
    assert m.with_attributes([("ptime", "x")]).ptime is None
    assert m.with_attributes([("rtcp", "99999")]).rtcp is None
    assert m.with_attributes([("rtcp", "53020 IN IP4")]).rtcp is None


def test_direction_override_and_last_wins() -> None:
    sdp = load("phone_polycom.sdp")
    held = sdp.with_media(0, sdp.media[0].with_direction(Direction.SENDONLY))
    assert held.media_direction(0) is Direction.SENDONLY     # media overrides session
    assert held.is_hold()
    twice = MediaDescription("audio", 1, "RTP/AVP", ("0",),
                             attributes=(("sendrecv", None), ("x", "1"), ("inactive", None)))
    assert twice.direction_attribute is Direction.INACTIVE
    assert twice.with_direction(Direction.RECVONLY).attributes == (
        ("recvonly", None), ("x", "1"))


@pytest.mark.parametrize(("offered", "local", "expected"), [
    # RFC 3264 §6.1
    (Direction.SENDRECV, Direction.SENDRECV, Direction.SENDRECV),
    (Direction.SENDONLY, Direction.SENDRECV, Direction.RECVONLY),
    (Direction.RECVONLY, Direction.SENDRECV, Direction.SENDONLY),
    (Direction.INACTIVE, Direction.SENDRECV, Direction.INACTIVE),
    (Direction.SENDRECV, Direction.SENDONLY, Direction.SENDONLY),
    (Direction.SENDRECV, Direction.RECVONLY, Direction.RECVONLY),
    (Direction.SENDRECV, Direction.INACTIVE, Direction.INACTIVE),
    (Direction.SENDONLY, Direction.SENDONLY, Direction.INACTIVE),
    (Direction.RECVONLY, Direction.RECVONLY, Direction.INACTIVE),
])
def test_answer_direction_table(offered: Direction, local: Direction,
                                expected: Direction) -> None:
    assert answer_direction(offered, local) is expected


def test_hold_and_resume_directions() -> None:
    # RFC 3264 §8.4
    assert hold_direction(Direction.SENDRECV) is Direction.SENDONLY
    assert hold_direction(Direction.RECVONLY) is Direction.INACTIVE
    assert hold_direction(Direction.SENDONLY) is Direction.SENDONLY
    assert hold_direction(Direction.INACTIVE) is Direction.INACTIVE
    for d in Direction:
        assert resume_direction(hold_direction(d)) is Direction.of(d.sends, True)


def test_hold_detection_vectors() -> None:
    assert load("phone_yealink_hold.sdp").is_hold()
    assert not load("phone_yealink.sdp").is_hold()
    assert load("rfc4317_3.1_hold_offer.sdp").is_hold()
    assert not load("rfc4317_3.1_hold_answer.sdp").is_hold()    # recvonly is not hold
    assert not load("rfc4317_3.1_resume_offer.sdp").is_hold()
    assert load("rfc4317_3.2_hold_offer.sdp").is_hold()
    legacy = load("legacy_rfc2543_hold.sdp")
    assert legacy.media_direction(0) is Direction.SENDRECV
    assert legacy.is_stream_held(0) and legacy.is_hold()


def test_hold_with_ipv6_unspecified_and_session_level_only() -> None:
    sdp = load("phone_ipv6.sdp")
    assert not sdp.is_hold()
    held = replace(sdp, connection=Connection("IN", "IP6", "::"))
    assert held.is_hold()
    # Session c=0.0.0.0 but a media-level real address: not held.
    legacy = load("legacy_rfc2543_hold.sdp")
    media = replace(legacy.media[0], connections=(Connection("IN", "IP4", "192.0.2.5"),))
    assert not legacy.with_media(0, media).is_hold()


def test_hold_ignores_rejected_streams() -> None:
    sdp = load("rfc4317_2.2_answer.sdp")        # video rejected
    assert not sdp.is_stream_held(1)
    held = set_direction(sdp, Direction.SENDONLY, 0)
    assert held.is_hold()
    assert not replace(sdp, media=(sdp.media[1],)).is_hold()    # nothing active


def test_set_direction_pushes_session_default_down() -> None:
    sdp = load("multicast_rfc4566.sdp")             # session-level recvonly
    one = set_direction(sdp, Direction.INACTIVE, 1)
    assert one.direction_attribute is None
    assert one.media_direction(0) is Direction.RECVONLY
    assert one.media_direction(1) is Direction.INACTIVE
    every = set_direction(sdp, Direction.SENDRECV)
    assert [every.media_direction(i) for i in range(2)] == [Direction.SENDRECV] * 2


# ---------------------------------------------------------------------------
# Offer/answer
# ---------------------------------------------------------------------------

def test_negotiate_rfc4317_2_1_matches_bobs_answer() -> None:
    offer = load("rfc4317_2.1_offer.sdp")
    expected = load("rfc4317_2.1_answer.sdp")
    result = answer_of(negotiate(
        offer, [PCMU, Codec("MPV", 90000)], origin=expected.origin,
        address="host.biloxi.example.com", ports=[49174, 49170],
        media_types=("audio", "video")))
    got = result.sdp
    assert [m.formats for m in got.media] == [m.formats for m in expected.media]
    assert [m.port for m in got.media] == [49174, 49170]
    assert got.connection == expected.connection
    assert got.times == offer.times
    assert [m.rtpmap(int(m.formats[0])) for m in got.media] == [
        m.rtpmap(int(m.formats[0])) for m in expected.media]
    # Ours adds an explicit direction and s=-; the rest is Bob's answer.
    assert [replace(m, attributes=m.attributes[:-1]) for m in got.media] == list(expected.media)
    assert parse_sdp(got.encode()) == got


def test_negotiate_rfc4317_2_2_rejects_video_keeping_mline() -> None:
    offer = load("rfc4317_2.2_offer.sdp")
    expected = load("rfc4317_2.2_answer.sdp")
    result = answer_of(negotiate(offer, [PCMU, PCMA], origin=expected.origin,
                                 address="host.biloxi.example.com", ports=[49172, 0]))
    audio, video = result.sdp.media
    assert audio.formats == expected.media[0].formats == ("0", "8")
    assert (video.media, video.port, video.proto) == ("video", 0, "RTP/AVP")
    assert video.formats == offer.media[1].formats        # any offered format is legal
    assert video.attributes == ()
    assert [s.accepted for s in result.streams] == [True, False]
    assert result.streams[1].reason == "media type video not supported"


def test_negotiate_rfc4317_2_6_keeps_telephone_event() -> None:
    offer = load("rfc4317_2.6_offer.sdp")
    expected = load("rfc4317_2.6_answer.sdp")
    got = answer_of(negotiate(offer, [PCMU], origin=expected.origin,
                              address="host.biloxi.example.com", ports=[49172])).sdp
    audio = got.media[0]
    assert audio.formats == ("0", "101")
    assert audio.fmtp(101) == "0-11"
    assert audio.telephone_event_pt() == 101
    assert replace(got, session_name="", media=(replace(audio, attributes=audio.attributes[:-1]),)
                   ) == expected


def test_negotiate_keeps_offerer_order_and_payload_numbers() -> None:
    offer = load("phone_yealink.sdp")       # 0 8 18 9 101
    got = answer_of(negotiate(offer, [PCMA, G722, PCMU], origin=ENGINE,
                              address="203.0.113.1", ports=[30000])).sdp
    assert got.media[0].formats == ("0", "8", "9", "101")
    assert got.media[0].direction_attribute is Direction.SENDRECV


def test_negotiate_dynamic_payload_numbers_are_kept() -> None:
    offer = load("phone_baresip.sdp")       # opus 96 first
    got = answer_of(negotiate(offer, [Codec("opus", 48000, 2), PCMU], origin=ENGINE,
                              address="203.0.113.1", ports=[30000], ptime=20)).sdp
    audio = got.media[0]
    assert audio.formats == ("96", "0", "101")
    assert audio.rtpmap(96) == RtpMap(96, "opus", 48000, 2)
    assert audio.fmtp(96) == "stereo=1;sprop-stereo=1"     # echoed from the offer
    assert audio.ptime == 20
    # Encoding names compare case-insensitively, channels must agree (opus/48000/2).
    stereo = answer_of(negotiate(offer, [Codec("OPUS", 48000, 2)], origin=ENGINE,
                                 address="203.0.113.1", ports=[30000]))
    assert stereo.sdp.media[0].formats == ("96",)
    mono = negotiate(offer, [Codec("opus", 48000, 1)], origin=ENGINE,
                     address="203.0.113.1", ports=[30000])
    assert isinstance(mono, NoCommonMedia)


def test_negotiate_codec_fmtp_overrides_offer() -> None:
    offer = load("phone_polycom.sdp")
    got = answer_of(negotiate(offer, [Codec("G729", 8000, fmtp="annexb=yes")], origin=ENGINE,
                              address="203.0.113.1", ports=[30000])).sdp
    assert got.media[0].formats == ("18", "127")
    assert got.media[0].fmtp(18) == "annexb=yes"


def test_negotiate_telephone_event_follows_kept_clock_rates() -> None:
    offer = load("phone_linphone.sdp")
    got = answer_of(negotiate(offer, [PCMU, PCMA], origin=ENGINE,
                              address="203.0.113.1", ports=[30000])).sdp
    assert got.media[0].formats == ("0", "8", "100")     # 8 kHz events only
    none = answer_of(negotiate(offer, [PCMU], origin=ENGINE, address="203.0.113.1",
                               ports=[30000], telephone_event=False)).sdp
    assert none.media[0].formats == ("0",)


def test_negotiate_no_common_codec_gives_488() -> None:
    offer = load("opus_only.sdp")
    result = negotiate(offer, [PCMU, PCMA], origin=ENGINE, address="203.0.113.1",
                       ports=[30000])
    assert isinstance(result, NoCommonMedia)
    assert "no common codec (offered opus/48000, telephone-event/48000)" in result.detail
    error = result.to_error()
    assert isinstance(error, SdpNotAcceptable)
    assert (error.status, error.reason) == (488, "Not Acceptable Here")


def test_telephone_event_alone_is_not_a_common_codec() -> None:
    offer = load("opus_only.sdp")
    assert select_formats(offer.media[0], [Codec("telephone-event", 48000)]) == ()
    assert select_formats(offer.media[0], [PCMU]) == ()


def test_select_formats_comfort_noise_is_auxiliary() -> None:
    m = MediaDescription("audio", 1, "RTP/AVP", ("13", "0", "101"),
                         attributes=(("rtpmap", "101 telephone-event/8000"),
                                     ("fmtp", "101 0-16")))
    cn = Codec("CN", 8000)
    assert select_formats(m, [cn]) == ()
    assert select_formats(m, [PCMU, cn]) == (
        SelectedFormat("13", STATIC_PAYLOAD_TYPES[13]),
        SelectedFormat("0", STATIC_PAYLOAD_TYPES[0]),
        SelectedFormat("101", RtpMap(101, "telephone-event", 8000), "0-16"))


def test_negotiate_srtp_only_and_no_media() -> None:
    srtp = negotiate(load("phone_srtp_only.sdp"), [PCMU], origin=ENGINE,
                     address="203.0.113.1", ports=[30000])
    assert isinstance(srtp, NoCommonMedia)
    assert "transport RTP/SAVP not supported" in srtp.detail
    empty = negotiate(replace(load("phone_yealink.sdp"), media=()), [PCMU], origin=ENGINE,
                      address="203.0.113.1", ports=[])
    assert isinstance(empty, NoCommonMedia) and empty.detail == "offer has no media"
    with pytest.raises(ValueError):
        negotiate(load("phone_yealink.sdp"), [PCMU], origin=ENGINE, address="203.0.113.1",
                  ports=[])


def test_negotiate_rejected_offer_stream_stays_rejected() -> None:
    offer = load("rfc4317_2.2_answer.sdp")        # audio + rejected video, as an offer
    result = answer_of(negotiate(offer, [PCMU], origin=ENGINE, address="203.0.113.1",
                                 ports=[30000, 30002], media_types=("audio", "video")))
    assert result.sdp.media[1].port == 0
    assert result.streams[1].reason == "rejected in the offer"


def test_hold_offer_answer_rfc4317_3_1() -> None:
    hold = load("rfc4317_3.1_hold_offer.sdp")
    alice = load("rfc4317_3.1_hold_answer.sdp")
    got = answer_of(negotiate(hold, [PCMU, Codec("iLBC", 8000)], origin=alice.origin,
                              address="host.atlanta.example.com", ports=[49170])).sdp
    assert got.media[0].direction_attribute is Direction.RECVONLY
    assert replace(got, session_name="") == alice
    inactive = set_direction(hold, Direction.INACTIVE)
    got = answer_of(negotiate(inactive, [PCMU], origin=ENGINE, address="203.0.113.1",
                              ports=[1])).sdp
    assert got.media[0].direction_attribute is Direction.INACTIVE
    resume = load("rfc4317_3.1_resume_offer.sdp")
    got = answer_of(negotiate(resume, [PCMU], origin=ENGINE, address="203.0.113.1",
                              ports=[1])).sdp
    assert got.media[0].direction_attribute is Direction.SENDRECV
    # We hold while answering: local sendonly against a sendrecv offer.
    got = answer_of(negotiate(resume, [PCMU], origin=ENGINE, address="203.0.113.1",
                              ports=[1], local_direction=Direction.SENDONLY)).sdp
    assert got.media[0].direction_attribute is Direction.SENDONLY


def test_negotiate_ipv6() -> None:
    got = answer_of(negotiate(load("phone_ipv6.sdp"), [PCMA], origin=ENGINE,
                              address="2001:db8::1", ports=[30000])).sdp
    assert got.connection == Connection("IN", "IP6", "2001:db8::1")
    assert got.media[0].formats == ("8", "101")


_DYNAMIC = ["opus/48000/2", "PCMU/8000", "pcma/8000", "telephone-event/8000",
            "telephone-event/48000", "iLBC/8000", "CN/8000", "G722/8000/2"]


@st.composite
def audio_offers(draw: st.DrawFn) -> SessionDescription:
    """Offers shaped like a phone's: static and dynamic PTs, rtpmaps, fmtp, directions."""
    streams = []
    for _ in range(draw(st.integers(1, 3))):
        pts = draw(st.lists(st.sampled_from([0, 3, 8, 9, 13, 18, 96, 97, 98, 101, 110]),
                            min_size=1, max_size=6, unique=True))
        attrs: list[tuple[str, str | None]] = []
        for pt in pts:
            if pt >= 96:
                attrs.append(("rtpmap", f"{pt} {draw(st.sampled_from(_DYNAMIC))}"))
                if draw(st.booleans()):
                    attrs.append(("fmtp", f"{pt} 0-15"))
        direction = draw(st.none() | st.sampled_from(list(Direction)))
        if direction is not None:
            attrs.append((direction.value, None))
        streams.append(MediaDescription(
            draw(st.sampled_from(["audio", "audio", "video"])), draw(st.integers(0, 65535)),
            draw(st.sampled_from(["RTP/AVP", "RTP/AVP", "RTP/SAVP"])),
            tuple(str(pt) for pt in pts), attributes=tuple(attrs)))
    return SessionDescription(origin=ENGINE, connection=Connection("IN", "IP4", "192.0.2.9"),
                              media=tuple(streams))


@settings(max_examples=120, deadline=None)
@given(session_descriptions() | audio_offers(), st.lists(st.sampled_from(
    [PCMU, PCMA, G722, Codec("H261", 90000), Codec("x", 8000)]), max_size=4))
def test_answer_formats_are_an_ordered_subset_of_the_offer(
        offer: SessionDescription, supported: list[Codec]) -> None:
    result = negotiate(offer, supported, origin=ENGINE, address="203.0.113.1",
                       ports=list(range(2000, 2000 + 2 * len(offer.media), 2)),
                       media_types=("audio", "video"),
                       protos=("RTP/AVP", "RTP/SAVP", "udp", "RTP/AVPF"))
    if isinstance(result, NoCommonMedia):
        assert all(not s.accepted and s.reason for s in result.streams)
        return
    assert parse_sdp(result.sdp.encode()) == result.sdp
    assert result.sdp.times == offer.times
    for i, (offered, answered) in enumerate(zip(offer.media, result.sdp.media, strict=True)):
        assert (answered.media, answered.proto) == (offered.media, offered.proto)
        assert answered.is_rejected is not result.streams[i].accepted
        if answered.is_rejected:
            # RFC 3264 §6: a rejected stream keeps its m-line, formats as offered.
            continue
        positions = [offered.formats.index(f) for f in answered.formats]
        assert positions == sorted(positions)
        assert answered.port == 2000 + 2 * i
        names = set()
        for f in answered.formats:
            mapping = answered.rtpmap(int(f))
            assert mapping is not None and mapping == offered.rtpmap(int(f))
            names.add(mapping.encoding.lower())
            if mapping.encoding.lower() == "telephone-event":
                assert answered.fmtp(int(f)) == offered.fmtp(int(f))
        assert names - {"telephone-event", "cn"}, "a real codec is always kept"
        assert result.sdp.media_direction(i) is answer_direction(offer.media_direction(i))


# ---------------------------------------------------------------------------
# Media anchoring and o= versions
# ---------------------------------------------------------------------------

def test_rewrite_connection_session_level() -> None:
    sdp = load("phone_linphone.sdp")
    out = rewrite_connection(sdp, "203.0.113.1", [40000])
    assert out.connection == Connection("IN", "IP4", "203.0.113.1")
    audio = out.media[0]
    assert audio.port == 40000 and audio.connections == ()
    assert audio.rtcp is None
    assert audio.attribute_values("candidate") == ()
    assert out.attribute("ice-ufrag") is None and out.attribute("ice-pwd") is None
    assert out.attribute("record") == "off"                # other attributes untouched
    assert audio.formats == sdp.media[0].formats
    assert out.origin == sdp.origin                        # o= is the OriginState's job
    kept = rewrite_connection(sdp, "203.0.113.1", [40000], strip_ice=False)
    assert len(kept.media[0].attribute_values("candidate")) == 3


def test_rewrite_connection_media_level_and_ipv6() -> None:
    sdp = load("phone_pjsua.sdp")
    out = rewrite_connection(sdp, "2001:db8::1", [40000])
    assert out.connection is None
    assert out.media[0].connections == (Connection("IN", "IP6", "2001:db8::1"),)
    assert out.media[0].rtcp is None
    assert parse_sdp(out.encode()) == out


def test_rewrite_connection_keeps_rejected_ports_and_count() -> None:
    sdp = load("rfc4317_2.2_answer.sdp")
    out = rewrite_connection(sdp, "203.0.113.1", [40000, 40002])
    assert [m.port for m in out.media] == [40000, 0]
    multi = rewrite_connection(load("multicast_rfc4566.sdp"), "203.0.113.1", [1, 2])
    assert multi.media[1].port_count is None
    with pytest.raises(ValueError):
        rewrite_connection(sdp, "203.0.113.1", [40000])


def test_rewrite_connection_turns_legacy_hold_into_direction() -> None:
    sdp = load("legacy_rfc2543_hold.sdp")
    out = rewrite_connection(sdp, "203.0.113.1", [40000])
    assert out.connection == Connection.for_address("203.0.113.1")
    assert out.media[0].connections == (Connection.for_address("203.0.113.1"),)
    assert out.media_direction(0) is Direction.SENDONLY
    assert out.is_hold()
    recvonly = set_direction(sdp, Direction.RECVONLY)
    assert rewrite_connection(recvonly, "203.0.113.1", [1]).media_direction(0) is \
        Direction.INACTIVE


def test_origin_state_versions_rfc3264_8() -> None:
    state = OriginState.create(sess_id=2808844564, address="198.51.100.1", username="switch")
    assert state.origin == Origin("switch", "2808844564", 2808844564, "IN", "IP4",
                                  "198.51.100.1")
    offer = rewrite_connection(load("rfc4317_3.1_offer.sdp"), "198.51.100.1", [40000])
    state, first = state.stamp(offer)
    assert first.origin.sess_version == 2808844564
    state, again = state.stamp(offer)                      # session refresh: same version
    assert again == first and is_refresh(first, again)
    held = set_direction(offer, Direction.SENDONLY)
    state, second = state.stamp(held)
    assert second.origin.sess_version == 2808844565
    assert not is_refresh(first, second)
    state, same = state.stamp(held)
    assert same.origin.sess_version == 2808844565
    state, third = state.stamp(set_direction(offer, Direction.SENDRECV))
    assert third.origin.sess_version == 2808844566
    assert {third.origin.sess_id, third.origin.username} == {"2808844564", "switch"}
    v6 = OriginState.create(sess_id="7", address="2001:db8::1", sess_version=0)
    assert (v6.origin.addrtype, v6.origin.sess_version) == ("IP6", 0)


def test_rfc4317_3_1_versions_increase() -> None:
    versions = [load(n).origin.sess_version for n in (
        "rfc4317_3.1_answer.sdp", "rfc4317_3.1_hold_offer.sdp",
        "rfc4317_3.1_resume_offer.sdp")]
    assert versions == [2808844564, 2808844565, 2808844566]


def test_b2bua_flow_offer_in_answer_out() -> None:
    """Leg A offers; the engine anchors it toward leg B, answers leg A from B's answer."""
    leg_a_offer = load("phone_yealink.sdp")
    leg_b = OriginState.create(sess_id=1, address="203.0.113.1", username="switch")
    leg_b, to_b = leg_b.stamp(rewrite_connection(leg_a_offer, "203.0.113.1", [40000]))
    assert to_b.origin.username == "switch" and to_b.media[0].port == 40000
    b_answer = answer_of(negotiate(to_b, [PCMA], origin=load("phone_polycom.sdp").origin,
                                   address="10.1.1.50", ports=[2222])).sdp
    leg_a = OriginState.create(sess_id=2, address="203.0.113.1", username="switch")
    leg_a, to_a = leg_a.stamp(rewrite_connection(b_answer, "203.0.113.1", [40002]))
    assert to_a.media[0].formats == ("8", "101")
    assert to_a.connection == Connection("IN", "IP4", "203.0.113.1")
    assert parse_sdp(to_a.encode()) == to_a


def test_addrtype_of() -> None:
    assert addrtype_of("192.0.2.1") == "IP4"
    assert addrtype_of("2001:db8::1") == "IP6"
    assert addrtype_of("host.example.com") == "IP4"
    assert ipaddress.ip_address("::ffff:192.0.2.1").version == 6
    assert addrtype_of("::ffff:192.0.2.1") == "IP6"
