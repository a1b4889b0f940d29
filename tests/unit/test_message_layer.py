"""The SIP message layer: parser, framer, encoder, URIs and typed header views."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.sip.errors import MessageTooLarge, ParseError, SipError, UnsupportedUriScheme
from switch.sip.headers import (
    contacts,
    cseq,
    from_header,
    parse_auth,
    parse_name_addr,
    parse_via,
    tag_of,
    to_header,
    top_via,
)
from switch.sip.message import Headers, Request, Response, make_response, split_list
from switch.sip.parser import Limits, StreamFramer, parse_message
from switch.sip.uri import AbsoluteUri, SipUri, TelUri, parse_request_uri, parse_uri

VECTORS = Path(__file__).parent.parent / "vectors" / "rfc4475"

OPTIONS = (
    b"OPTIONS sip:1001@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport\r\n"
    b"From: \"Alice\" <sip:1001@127.0.0.1>;tag=abc\r\n"
    b"To: <sip:1001@127.0.0.1>\r\n"
    b"Call-ID: opt-1@127.0.0.1\r\n"
    b"CSeq: 7 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)

INVITE_WITH_BODY = (
    b"INVITE sip:1002@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK77\r\n"
    b"f: <sip:1001@example.com>;tag=1\r\n"
    b"t: <sip:1002@example.com>\r\n"
    b"i: inv-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"m: <sip:1001@[2001:db8::1]:5070;transport=tcp>\r\n"
    b"c: application/sdp\r\n"
    b"l: 5\r\n\r\n"
    b"v=0\r\n"
)


def test_parse_request_basics() -> None:
    msg = parse_message(OPTIONS)
    assert isinstance(msg, Request)
    assert msg.method == "OPTIONS" and msg.uri == "sip:1001@127.0.0.1:5060"
    assert cseq(msg).seq == 7
    assert from_header(msg).display == "Alice" and from_header(msg).tag == "abc"
    assert to_header(msg).tag is None
    via = top_via(msg)
    assert (via.transport, via.host, via.port, via.branch, via.rport) == (
        "UDP", "127.0.0.1", 5061, "z9hG4bK-1", "")


def test_compact_forms_and_ipv6() -> None:
    msg = parse_message(INVITE_WITH_BODY, stream=True)
    assert msg.headers.get("Call-ID") == "inv-1"
    assert msg.headers.get("content-type") == "application/sdp"
    assert msg.body == b"v=0\r\n"
    via = top_via(msg)
    assert via.host == "[2001:db8::1]" and via.port == 5070 and via.transport == "TCP"
    (contact,) = contacts(msg)
    assert isinstance(contact.uri, SipUri) and contact.uri.host_unbracketed == "2001:db8::1"
    assert contact.uri.transport == "tcp"


def test_encode_round_trip_and_content_length() -> None:
    msg = parse_message(INVITE_WITH_BODY)
    data = msg.encode()
    assert b"Content-Length: 5\r\n\r\nv=0\r\n" in data
    again = parse_message(data)
    assert again.headers == msg.headers or list(again.headers)[:-1] == list(msg.headers)[:-1]
    assert again.body == msg.body


def test_stream_requires_content_length() -> None:
    data = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    assert parse_message(data).body == b""
    with pytest.raises(ParseError):
        parse_message(data, stream=True)


def test_size_limits() -> None:
    with pytest.raises(MessageTooLarge) as info:
        parse_message(OPTIONS, Limits(max_message_size=100))
    assert info.value.status == 513
    many = OPTIONS.replace(b"Max-Forwards: 70\r\n", b"X-A: 1\r\n" * 300)
    with pytest.raises(MessageTooLarge):
        parse_message(many, Limits(max_headers=100))


def test_leading_crlf_ignored() -> None:
    """RFC 3261 §7.5: CRLFs before the start line are ignored."""
    assert isinstance(parse_message(b"\r\n\r\n" + OPTIONS), Request)


def test_bare_lf_tolerated() -> None:
    msg = parse_message(OPTIONS.replace(b"\r\n", b"\n"))
    assert isinstance(msg, Request) and cseq(msg).method == "OPTIONS"


@pytest.mark.parametrize("bad", [
    b"",
    b"\x00\x01\x02garbage",
    b"OPTIONS sip:a@b SIP/2.0\r\n",                     # no blank line
    b"OPTIONS sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP x\r\n\r\n",  # no colon
    OPTIONS.replace(b"CSeq: 7 OPTIONS", b"CSeq: seven OPTIONS"),
    OPTIONS.replace(b"CSeq: 7 OPTIONS", b"CSeq: 2147483648 OPTIONS"),   # §8.1.1.5 < 2**31
    OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"),
    OPTIONS.replace(b"Max-Forwards: 70", "Max-Forwards: \u00b2".encode()),   # isdigit(), not int
    OPTIONS.replace(b"CSeq: 7 OPTIONS", "CSeq: \u0667 OPTIONS".encode()),      # Arabic-Indic 7
    OPTIONS.replace(b"Content-Length: 0", "Content-Length: \u00b9".encode()),
    OPTIONS.replace(b"Via: SIP/2.0/UDP 127.0.0.1:5061", b"Via: SIP/2.0/UDP 127.0.0.1:99999"),
    OPTIONS.replace(b"Call-ID: opt-1@127.0.0.1", b"Call-ID: "),
    OPTIONS.replace(b"SIP/2.0\r\n", b"SIP/2.0 \r\n", 1),
    b" " + OPTIONS,
])
def test_malformed_rejected(bad: bytes) -> None:
    with pytest.raises(SipError):
        parse_message(bad)


def test_partial_message_available_for_400() -> None:
    bad = OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: lots")
    with pytest.raises(ParseError) as info:
        parse_message(bad)
    partial = getattr(info.value, "partial", None)
    assert isinstance(partial, Request)
    response = make_response(partial, 400, to_tag="x")
    assert response.headers.get("call-id") == "opt-1@127.0.0.1"


def _framer_frames(chunks: list[bytes]) -> list[bytes]:
    framer = StreamFramer()
    frames: list[bytes] = []
    for chunk in chunks:
        frames.extend(framer.feed(chunk))
    assert framer.buffered == 0
    return frames


def test_framer_several_messages_in_one_read() -> None:
    stream = OPTIONS + INVITE_WITH_BODY + OPTIONS
    assert _framer_frames([stream]) == [OPTIONS, INVITE_WITH_BODY, OPTIONS]


def test_framer_byte_by_byte() -> None:
    stream = OPTIONS + b"\r\n\r\n" + INVITE_WITH_BODY
    frames = _framer_frames([bytes([b]) for b in stream])
    assert frames == [OPTIONS, INVITE_WITH_BODY]


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60))
def test_framer_any_split(cuts: list[int]) -> None:
    stream = OPTIONS + INVITE_WITH_BODY + OPTIONS
    chunks: list[bytes] = []
    pos = 0
    for cut in cuts:
        chunks.append(stream[pos:pos + cut])
        pos += cut
    chunks.append(stream[pos:])
    assert _framer_frames(chunks) == [OPTIONS, INVITE_WITH_BODY, OPTIONS]


def test_framer_keepalive_and_trailing_garbage() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.keepalive_pings == 1
    assert framer.feed(OPTIONS + b"GARBAGE") == [OPTIONS]
    assert framer.buffered == len(b"GARBAGE")


def test_framer_rejects_oversize_and_bad_length() -> None:
    with pytest.raises(MessageTooLarge):
        StreamFramer(Limits(max_message_size=200)).feed(b"X" * 300)
    with pytest.raises(ParseError):
        StreamFramer().feed(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: -1"))
    with pytest.raises(ParseError):
        StreamFramer().feed(OPTIONS.replace(b"Content-Length: 0\r\n", b""))


@pytest.mark.parametrize("name", sorted(p.name for p in VECTORS.glob("*.dat")))
def test_every_torture_vector_byte_by_byte_and_with_trailing_garbage(name: str) -> None:
    """DESIGN.md rule 6: every parser test also feeds its input in pieces and with garbage.

    Whatever the verdict on the whole datagram, feeding it with junk after it
    must give the same verdict (UDP ignores octets past Content-Length), and a
    stream framer fed byte by byte must never raise anything but a SipError.
    """
    data = (VECTORS / name).read_bytes()
    try:
        whole: object = type(parse_message(data))
    except SipError as exc:
        whole = exc.status
    if b"Content-Length" in data or b"\nl:" in data:
        try:
            padded: object = type(parse_message(data + b"\x00junk\r\n"))
        except SipError as exc:
            padded = exc.status
        assert padded == whole
    framer = StreamFramer()
    try:
        for byte in data:
            for frame in framer.feed(bytes([byte])):
                try:
                    parse_message(frame, stream=True)
                except SipError:
                    pass
    except SipError:
        pass


def test_make_response_copies_per_rfc3261_8_2_6_2() -> None:
    msg = parse_message(OPTIONS)
    assert isinstance(msg, Request)
    response = make_response(msg, 200, to_tag="srv")
    assert response.reason == "OK"
    assert response.headers.get("via") == msg.headers.get("via")
    assert to_tag_of(response) == "srv"
    assert response.headers.get("cseq") == "7 OPTIONS"
    trying = make_response(msg, 100, to_tag="srv")
    assert to_tag_of(trying) is None
    tagged = parse_message(OPTIONS.replace(b"To: <sip:1001@127.0.0.1>",
                                           b"To: <sip:1001@127.0.0.1>;tag=old"))
    assert isinstance(tagged, Request)
    assert to_tag_of(make_response(tagged, 200, to_tag="new")) == "old"


def to_tag_of(response: Response) -> str | None:
    return tag_of(response.headers.get("to") or "")


def test_headers_multimap() -> None:
    headers = Headers([("Via", "a"), ("v", "b"), ("X-Custom", "1")])
    assert headers.get_all("VIA") == ["a", "b"]
    headers.prepend("Via", "top")
    assert headers.get("via") == "top"
    headers.set("x-custom", "2")
    assert headers.get_all("X-CUSTOM") == ["2"]
    headers.remove("via")
    assert "via" not in headers and len(headers) == 1
    assert [name for name, _ in headers] == ["X-Custom"]


def test_split_list_respects_quotes_and_brackets() -> None:
    value = '"Doe, John" <sip:a@b;x=1,2>;q=0.5, <sip:c@d>, sip:e@f'
    assert split_list(value) == ['"Doe, John" <sip:a@b;x=1,2>;q=0.5', "<sip:c@d>", "sip:e@f"]


@pytest.mark.parametrize("text", [
    "sip:alice@example.com",
    "sips:alice:secret@example.com:5061;transport=tcp;lr?subject=hi",
    "sip:[2001:db8::1]:5060",
    "sip:+14155550101@10.0.0.1;user=phone",
    "sip:%61lice@example.com",
    "tel:+1-201-555-0123;phone-context=example.com",
])
def test_uri_round_trip(text: str) -> None:
    assert str(parse_uri(text)) == text


def test_uri_details_and_errors() -> None:
    uri = parse_uri("sip:%61lice@Example.COM:5070;Transport=TCP")
    assert isinstance(uri, SipUri)
    assert uri.user_unescaped == "alice" and uri.port == 5070 and uri.transport == "tcp"
    tel = parse_uri("tel:+1-201-555-0123")
    assert isinstance(tel, TelUri) and tel.digits == "+12015550123"
    assert isinstance(parse_uri("urn:service:sos"), AbsoluteUri)
    with pytest.raises(UnsupportedUriScheme) as info:
        parse_request_uri("nobodyKnowsThisScheme:totallyopaquecontent")
    assert info.value.status == 416
    for bad in ("sip:", "sip:user@", "sip:a@b:99999", "sip:a@b c", "sip:a@[::1", "nocolon"):
        with pytest.raises(ParseError):
            parse_uri(bad)


def test_name_addr_forms() -> None:
    quoted = parse_name_addr('"A \\"B\\"" <sip:a@b>;tag=1')
    assert quoted.display == 'A "B"' and quoted.tag == "1"
    token = parse_name_addr("Bob <sip:b@c>")
    assert token.display == "Bob"
    spec = parse_name_addr("sip:a@b;tag=9")
    assert spec.tag == "9" and isinstance(spec.uri, SipUri) and not spec.uri.params
    assert parse_name_addr("*", allow_wildcard=True).wildcard
    with pytest.raises(ParseError):
        parse_name_addr("*")
    assert str(parse_name_addr('"x" <sip:a@b>;tag=1')) == '"x" <sip:a@b>;tag=1'


def test_via_forms() -> None:
    via = parse_via("SIP / 2.0 / udp  host.example.com ; branch = z9hG4bKx ; received=1.2.3.4")
    assert (via.transport, via.host, via.port, via.branch, via.received) == (
        "UDP", "host.example.com", None, "z9hG4bKx", "1.2.3.4")
    assert str(parse_via("SIP/2.0/TCP 1.2.3.4:5;branch=z9hG4bKa;rport")) == \
        "SIP/2.0/TCP 1.2.3.4:5;branch=z9hG4bKa;rport"
    for bad in ("SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host;;", "SIP/2.0/UDP h:70000"):
        with pytest.raises(ParseError):
            parse_via(bad)


def test_parse_auth() -> None:
    creds = parse_auth('Digest username="1001", realm="switch.local", nonce="n,1", '
                       'uri="sip:switch.local", response="abc", qop=auth, nc=00000001, '
                       'cnonce="x y", algorithm=MD5')
    assert creds.scheme == "Digest"
    assert creds.get("username") == "1001" and creds.get("nonce") == "n,1"
    assert creds.get("qop") == "auth" and creds.get("cnonce") == "x y"
    with pytest.raises(ParseError):
        parse_auth("Digest username")


# --- hypothesis: generated messages survive encode → parse ------------------

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~", min_size=1,
                 max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                        blacklist_characters='",'),
                 min_size=1, max_size=30)


@settings(max_examples=200)
@given(method=st.sampled_from(["INVITE", "OPTIONS", "REGISTER", "BYE", "REFER", "X-NEW"]),
       user=_token, branch=_token, tag=_token, seq=st.integers(0, 2**31 - 1),
       extra=st.lists(st.tuples(_token.map(lambda t: "X-" + t), _value), max_size=8),
       body=st.binary(max_size=200))
def test_request_round_trip(method: str, user: str, branch: str, tag: str, seq: int,
                            extra: list[tuple[str, str]], body: bytes) -> None:
    headers = Headers([
        ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{branch}"),
        ("From", f"<sip:{user}@example.com>;tag={tag}"),
        ("To", f"<sip:{user}@example.com>"),
        ("Call-ID", f"{branch}@example.com"),
        ("CSeq", f"{seq} {method}"),
        ("Max-Forwards", "70"),
    ])
    for name, value in extra:
        headers.add(name, value)
    request = Request(method, f"sip:{user}@example.com", headers, body)
    for stream in (False, True):
        parsed = parse_message(request.encode(), stream=stream)
        assert isinstance(parsed, Request)
        assert parsed.method == method and parsed.uri == request.uri
        assert parsed.body == body
        assert parsed.headers == request.headers or all(
            parsed.headers.get_all(n) == request.headers.get_all(n) for n, _ in request.headers)
        assert cseq(parsed).seq == seq


@settings(max_examples=100)
@given(status=st.integers(100, 699), reason=st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF,
                           blacklist_categories=("Cs", "Cc")), max_size=30))
def test_response_round_trip(status: int, reason: str) -> None:
    response = Response(status, reason, Headers([
        ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa"), ("From", "<sip:a@b>;tag=1"),
        ("To", "<sip:a@b>;tag=2"), ("Call-ID", "c"), ("CSeq", "1 INVITE")]))
    parsed = parse_message(response.encode())
    assert isinstance(parsed, Response)
    assert parsed.status == status and parsed.reason == reason.rstrip() or \
        parsed.reason == reason


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_parser_never_raises_anything_but_sip_errors(data: bytes) -> None:
    try:
        parse_message(OPTIONS[:40] + data)
    except SipError:
        pass
    framer = StreamFramer()
    try:
        framer.feed(data)
    except SipError:
        pass
