"""The message layer's fast paths agree with the general code they short-cut.

The parser reads the header block in one tight loop and the start line with one
match when they have the usual shape, and falls back to the line-by-line code
otherwise; Headers looks names up as given before translating them; tag_of and
_has_tag use one regex.  Each is checked here against the general path (or the
code it replaced) on generated input.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import ExitStack
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from switch.sip import headers as headers_module
from switch.sip import parser
from switch.sip.errors import SipError
from switch.sip.headers import get_param, parse_via, tag_of
from switch.sip.message import (
    CANONICAL_NAMES,
    COMPACT_FORMS,
    Headers,
    Request,
    _has_tag,
    make_response,
)
from switch.sip.parser import Limits, parse_message

# Characters that exercise every branch: token chars, blanks, the colon, CR and
# LF on their own, other whitespace str.strip removes, non-ASCII, quotes, <>.
_CHARS = st.sampled_from(list("aZ-.!~: \t\r\n\x0b\x1f\x85\xa0\u2028é\"<>;=,@0"))
_NAMES = st.sampled_from(["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq",
                          "Max-Forwards", "Contact", "m", "Content-Length", "l",
                          "X-Custom", "x-custom", "VIA", "Expires", "Route", "a.b!c",
                          "Bad Name", "", " Via", "Via\t", "Subject"])
_VALUES = st.text(_CHARS, max_size=12)
_LINE = st.one_of(
    st.builds(lambda n, sep, v: f"{n}{sep}{v}", _NAMES,
              st.sampled_from([":", ": ", " : ", "\t:", ":\t ", "", " "]), _VALUES),
    st.text(_CHARS, max_size=15),
    # a field name after a bare CR or LF is not the start of a line
    st.sampled_from(["X: a\nVia: b", "X: a\rVia: b", "X: a\r\rVia: b", "X:\nVia:b", "\nVia: b",
                     "X: a\r", "X: a \r", " folded", "\tfolded: x", "X: a\n", "X: \x85a\xa0"]),
)


def _slow(data: bytes, limits: Limits) -> object:
    """parse_message with every parser fast path switched off."""
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(parser, "_parse_block", lambda *a: None))
        stack.enter_context(mock.patch.object(parser, "_parse_start_line",
                                              parser._parse_start_line_checked))
        stack.enter_context(mock.patch.object(parser, "_PLAIN_NAME_ADDR",
                                              mock.Mock(fullmatch=lambda value: None)))
        return _outcome(data, limits)


def _outcome(data: bytes, limits: Limits) -> object:
    try:
        message = parse_message(data, limits)
    except SipError as exc:
        partial = getattr(exc, "partial", None)
        return (type(exc).__name__, str(exc),
                None if partial is None else (partial.start_line(), list(partial.headers)))
    return (message.start_line(), list(message.headers), dict(message.headers._names),
            message.body, dict(message._cache))


_BASE = ["Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1", "From: <sip:a@b>;tag=1",
         "To: <sip:c@d>", "Call-ID: x@y", "CSeq: 1 INVITE", "Max-Forwards: 70",
         "Content-Length: 0"]


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(_LINE, max_size=6), keep=st.lists(st.booleans(), min_size=7, max_size=7),
       start=st.sampled_from(["INVITE sip:a@b SIP/2.0", "SIP/2.0 200 OK", "SIP/2.0 180",
                              "SIP/2.0 200 ", "OPTIONS sip:a@b SIP/2.0", "INVITE <sip:a@b> SIP/2.0",
                              "INVITE sip:a@b SIP/3.0", "sip/2.0 200 OK", "SIP/2.0 099 x",
                              "INVITE  sip:a@b SIP/2.0", "BYE sipab SIP/2.0", "SIP/2.0 2000 OK"]),
       small=st.booleans())
def test_fast_parse_agrees_with_the_line_by_line_parser(
        lines: list[str], keep: list[bool], start: str, small: bool) -> None:
    fields = [line for line, k in zip(_BASE, keep, strict=True) if k] + lines
    data = ("\r\n".join([start, *fields]) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    limits = Limits(max_headers=6, max_header_line=60) if small else Limits()
    assert _outcome(data, limits) == _slow(data, limits)


@settings(max_examples=200, deadline=None)
@given(name=_NAMES, value=_VALUES, twice=st.booleans())
def test_one_field_fast_and_slow(name: str, value: str, twice: bool) -> None:
    fields = [*_BASE, f"{name}: {value}"] + ([f"{name}:{value}"] if twice else [])
    data = ("\r\n".join(["INVITE sip:a@b SIP/2.0", *fields]) + "\r\n\r\n").encode(
        "utf-8", "surrogateescape")
    assert _outcome(data, Limits()) == _slow(data, Limits())


def test_fast_block_is_taken_for_usual_messages() -> None:
    block = "\r\n".join([*_BASE, "Subject:", "X-Odd :  spaced value \t"])
    headers = Headers()
    assert parser._parse_block(block, headers, Limits()) is False
    assert headers.get("subject") == ""
    assert headers.get("x-odd") == "spaced value"
    assert parser._parse_block(block + "\r\nVia: second", Headers(), Limits()) is True
    # folding, a name that is not a token, no colon: the line-by-line way, from
    # empty headers
    for odd in ("Subject: a\r\n b", "Bad Name: x", "Subject", "Via\n: x"):
        headers = Headers()
        assert parser._parse_block(block + "\r\n" + odd, headers, Limits()) is None
        assert len(headers) == 0
    # a bare LF or CR inside a line stays in the value, as line by line
    for odd in ("Subject: a\nb", "Subject: a\r", "Subject: a\rb"):
        fast, slow = Headers(), Headers()
        assert parser._parse_block(block + "\r\n" + odd, fast, Limits()) is True
        parser._parse_fields(["start", *(block + "\r\n" + odd).split("\r\n")], slow, Limits())
        assert list(fast) == list(slow)


# --- Headers: lookups by any spelling --------------------------------------------

_SPELLINGS = [*CANONICAL_NAMES, *CANONICAL_NAMES.values(), *COMPACT_FORMS,
              *(c.upper() for c in COMPACT_FORMS), "X-Foo", "x-foo", "X-FOO", "g", "G"]


def _reference_key(name: str) -> str:
    key = name.lower()
    return COMPACT_FORMS.get(key, key) if len(key) == 1 else key


@settings(max_examples=200, deadline=None)
@given(added=st.lists(st.tuples(st.sampled_from(_SPELLINGS), st.sampled_from(["a", "b, c", ""])),
                      max_size=8),
       asked=st.sampled_from(_SPELLINGS))
def test_headers_lookups_by_any_spelling(added: list[tuple[str, str]], asked: str) -> None:
    headers = Headers(added)
    key = _reference_key(asked)
    lines = [value for name, value in added if _reference_key(name) == key]
    assert headers.get(asked) == (lines[0] if lines else None)
    assert headers.get_all(asked) == lines
    assert (asked in headers) == bool(lines)
    expected_items = [item.strip() for line in lines for item in line.split(",") if item.strip()]
    assert headers.get_list(asked) == expected_items
    first_spelling = next((name for name, _ in added if _reference_key(name) == key), None)
    if first_spelling is not None:
        assert headers._names[key] == CANONICAL_NAMES.get(key, first_spelling)
    assert 3 not in headers  # type: ignore[operator]


# --- tag_of, _has_tag, get_param: against the code they replaced ----------------

def _old_tag_of(value: str) -> str | None:
    idx = value.lower().rfind(";tag=")
    if idx < 0:
        return None
    close = value.rfind(">")
    if close > idx:
        return None
    end = value.find(";", idx + 5)
    return value[idx + 5:end if end >= 0 else None].strip()


def _old_has_tag(name_addr: str) -> bool:
    close = name_addr.rfind(">")
    params = name_addr[close + 1:] if close >= 0 else name_addr
    return any(part.strip().lower().startswith("tag=") for part in params.split(";")[1:])


_TAG_CHARS = st.sampled_from(list("<>;=tagTAG x\t\r\n\x0b\u2028é1"))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["<sip:a@b>", "<sip:a@b;tag=u>", ";tag=", ";TaG=", "; tag=",
                                 ";tag =", "abc", " x ", ";", ">", "<", "\t", "é"]),
                max_size=7).map("".join) | st.text(_TAG_CHARS, max_size=20))
def test_tag_helpers_match_the_old_code(value: str) -> None:
    # The old tag_of lower-cased the whole value and used the indices on the
    # original: only U+0130 changes length when lowered, so it stays out here.
    assert tag_of(value) == _old_tag_of(value)
    assert _has_tag(value) == _old_has_tag(value)


def _old_get_param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    lname = name.lower()
    for key, value in params:
        if key.lower() == lname:
            return value if value is not None else ""
    return None


@given(st.lists(st.tuples(st.sampled_from(["tag", "TAG", "Tag", "branch", "rport", "x"]),
                          st.one_of(st.none(), st.sampled_from(["1", "2", ""]))), max_size=5),
       st.sampled_from(["tag", "TAG", "branch", "Branch", "rport", "maddr", "x"]))
def test_get_param_matches_the_old_code(params: list[tuple[str, str | None]], name: str) -> None:
    assert get_param(tuple(params), name) == _old_get_param(tuple(params), name)


def test_simple_via_params() -> None:
    via = parse_via("SIP/2.0/udp 10.0.0.1:5060;branch=z9hG4bK-1;rport;received=10.0.0.2")
    assert via.transport == "UDP" and via.port == 5060
    assert via.params == (("branch", "z9hG4bK-1"), ("rport", None), ("received", "10.0.0.2"))
    assert parse_via("SIP/2.0/UDP h").params == ()


def test_make_response_copies_lists_without_sharing_them() -> None:
    request = Request("INVITE", "sip:a@b", Headers([
        ("v", "SIP/2.0/UDP a;branch=z9hG4bK-1"), ("Via", "SIP/2.0/UDP b;branch=z9hG4bK-2"),
        ("f", "<sip:a@b>;tag=1"), ("t", "<sip:c@d>"), ("i", "x@y"), ("CSeq", "1 INVITE"),
        ("Timestamp", "54"), ("Contact", "<sip:a@b>")]))
    response = make_response(request, 100, extra=[("Server", "s")])
    assert list(response.headers) == [
        ("Via", "SIP/2.0/UDP a;branch=z9hG4bK-1"), ("Via", "SIP/2.0/UDP b;branch=z9hG4bK-2"),
        ("From", "<sip:a@b>;tag=1"), ("To", "<sip:c@d>"), ("Call-ID", "x@y"),
        ("CSeq", "1 INVITE"), ("Timestamp", "54"), ("Server", "s")]
    response.headers.prepend("Via", "SIP/2.0/UDP c")
    assert request.headers.count("via") == 2
    ok = make_response(request, 200, to_tag="t1")
    assert ok.headers.get("to") == "<sip:c@d>;tag=t1"
    assert "timestamp" not in ok.headers
    assert ok.encode().startswith(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK-1\r\n")
    assert ok.encode().endswith(b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


_OLD_AUTH_PARAM = re.compile(
    r'[ \t]*([^=\s,]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^\s,"]*)[ \t]*(?:,|$)')


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(list('a=", \\\t\nxé')), max_size=24), st.integers(0, 3))
def test_auth_param_pattern_matches_the_old_one(text: str, pos: int) -> None:
    old = _OLD_AUTH_PARAM.match(text, pos)
    new = headers_module._AUTH_PARAM.match(text, pos)
    assert (old and (old.span(), old.groups())) == (new and (new.span(), new.groups()))


# --- parse_params, parse_name_addr, parse_via: fast paths and caches ------------

def _params_slow(text: str) -> object:
    """parse_params with its tokens-only fast path switched off."""
    with mock.patch.object(headers_module, "_SIMPLE_PARAMS", mock.Mock(fullmatch=lambda t: None)):
        try:
            return headers_module.parse_params(text)
        except SipError as exc:
            return type(exc).__name__


@settings(max_examples=400, deadline=None)
@given(st.text(st.sampled_from(list(';=aZ0-.!~`:" \t[]@,\\')), max_size=20))
def test_params_fast_path_agrees_with_the_loop(text: str) -> None:
    try:
        fast: object = headers_module.parse_params(text)
    except SipError as exc:
        fast = type(exc).__name__
    assert fast == _params_slow(text)


_NAME_ADDR_PARTS = st.sampled_from(['"Al \\"x\\" ice"', "Bob", "<sip:a@b:5060;lr>", "sip:c@d",
                                    "<tel:+1-2>", ";tag=1", ";TAG=x", "; q=0.5", ";ex", "*",
                                    " ", "<", ">", '"', ";", "=", "sip:a@b;x"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_NAME_ADDR_PARTS, max_size=4), st.booleans())
def test_cached_name_addr_and_via_match_a_fresh_parse(parts: list[str], wildcard: bool) -> None:
    value = "".join(parts)

    def outcome(parse: Callable[[], object]) -> object:
        try:
            return parse()
        except SipError as exc:
            return type(exc).__name__

    def fresh() -> object:
        headers_module._parse_name_addr.cache_clear()
        return headers_module.parse_name_addr(value, allow_wildcard=wildcard)

    for _ in range(2):   # the second one from the cache (errors are not cached)
        cached = outcome(lambda: headers_module.parse_name_addr(value, allow_wildcard=wildcard))
        assert cached == outcome(fresh)
        assert outcome(lambda: tag_of(value)) == outcome(lambda: tag_of.__wrapped__(value))


def test_fast_built_values_equal_the_dataclass_ones() -> None:
    via = parse_via("SIP/2.0/UDP h:5060;branch=z9hG4bK-1")
    assert via == headers_module.Via("UDP", "h", 5060, (("branch", "z9hG4bK-1"),))
    assert hash(via) == hash(headers_module.Via("UDP", "h", 5060, (("branch", "z9hG4bK-1"),)))
    assert parse_via("SIP/2.0/UDP h:5060;branch=z9hG4bK-1") is via     # cached
    name_addr = headers_module.parse_name_addr('"A" <sip:a@b>;tag=1')
    assert name_addr == headers_module.NameAddr(headers_module.parse_uri("sip:a@b"), "A",
                                                (("tag", "1"),))
    assert not name_addr.wildcard and name_addr.tag == "1"


def _auth_outcome(value: str) -> object:
    try:
        credentials = headers_module.parse_auth(value)
    except SipError as exc:
        return type(exc).__name__
    return credentials.scheme, credentials.params


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(
    st.text(st.sampled_from(list('a=", \\\t\x1fé;:')), max_size=8),
    st.sampled_from(['username="1001"', 'realm="a b"', "nc=00000001", "qop=auth", ",", " ",
                     'uri="sip:a@b,c"', 'x="\\"q\\""', "a = b", 'e=""', "f=", "=g", 'h="i'])),
    max_size=6))
def test_auth_split_agrees_with_the_regex_loop(pieces: list[str]) -> None:
    value = "Digest " + ",".join(pieces)
    with mock.patch.object(headers_module, "_split_auth_params", lambda text: None):
        slow = _auth_outcome(value)
    assert _auth_outcome(value) == slow


def test_auth_split_is_taken_for_a_usual_header() -> None:
    assert headers_module._split_auth_params(
        ' username="1001",realm="switch.local", nc=00000001 ,qop=auth') == {
        "username": "1001", "realm": "switch.local", "nc": "00000001", "qop": "auth"}
