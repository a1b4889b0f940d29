"""Typed views of the header fields the core acts on (RFC 3261 §20, §25.1).

Parsing is on demand and cached per message (``message._cache``) so the
transaction layer can ask for the top Via or the CSeq as often as it likes.
Every parser raises ``ParseError`` (→ 400) on malformed input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from switch.sip.errors import ParseError
from switch.sip.message import Message, split_list
from switch.sip.uri import SipUri, Uri, parse_uri, split_hostport

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
MAGIC_COOKIE = "z9hG4bK"   # RFC 3261 §8.1.1.7
Params = tuple[tuple[str, str | None], ...]


def is_token(text: str) -> bool:
    return bool(_TOKEN.match(text))


def unquote(text: str) -> str:
    """A quoted-string's content with quoted-pairs resolved (RFC 3261 §25.1)."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        if "\\" not in inner:
            return inner
        out = []
        i = 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                i += 1
            out.append(inner[i])
            i += 1
        return "".join(out)
    return text


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scan_quoted(text: str, start: int) -> int:
    """Index just past the quoted-string that opens at ``start``."""
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise ParseError("unterminated quoted string")


def parse_params(text: str, what: str = "header") -> Params:
    """``;name[=value]`` generic-params (RFC 3261 §25.1) after a header value.

    ``text`` starts at the first ``;`` (or is empty). Quoted values keep their
    quotes so that re-encoding is exact; use ``unquote`` to read them.
    """
    if not text:
        return ()
    if _SIMPLE_PARAMS.fullmatch(text) is not None:
        # Tokens only, no blanks or quotes (nearly every tag, lr, expires):
        # C-level splits instead of the character loop below, same result.
        return _split_simple_params(text)
    params: list[tuple[str, str | None]] = []
    i = 0
    n = len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        if text[i] != ";":
            raise ParseError(f"unexpected {text[i]!r} in {what} parameters")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        start = i
        while i < n and text[i] not in "=; \t":
            i += 1
        name = text[start:i]
        if not name or not is_token(name):
            raise ParseError(f"bad parameter name {name!r} in {what}")
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                end = _scan_quoted(text, i)
                value = text[i:end]
                i = end
            else:
                start = i
                while i < n and text[i] not in "; \t":
                    i += 1
                value = text[start:i]
                if not value or not _valid_param_value(value):
                    raise ParseError(f"bad value for parameter {name!r} in {what}")
            params.append((name, value))
        else:
            params.append((name, None))
    return tuple(params)


_TOKEN_CLASS = r"[A-Za-z0-9\-.!%*_+`'~]"
_SIMPLE_PARAMS = re.compile(rf"(?:;{_TOKEN_CLASS}+(?:={_TOKEN_CLASS}+)?)+")


def _split_simple_params(text: str) -> Params:
    """``;name[=value]...`` already known to be tokens only, split (no checks)."""
    params: list[tuple[str, str | None]] = []
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        params.append((name, value if eq else None))
    return tuple(params)


def _valid_param_value(value: str) -> bool:
    # token / host (incl. IPv6 reference)
    return is_token(value) or bool(re.match(r"^\[[0-9A-Fa-f:.]+\]$", value)) or ":" in value \
        and bool(re.match(r"^[0-9A-Fa-f:.]+$", value))


# Parameter names the code asks for, already in lower case (saves a lower() per lookup).
_LOWER_PARAM_NAMES = frozenset({"tag", "branch", "received", "rport", "maddr", "transport",
                                "refresher", "lr", "ttl", "expires", "q", "user", "method"})


def get_param(params: Params, name: str) -> str | None:
    lname = name if name in _LOWER_PARAM_NAMES else name.lower()
    for key, value in params:
        # Parameters nearly always arrive in lower case: compare as is first.
        if key == lname or key.lower() == lname:
            return value if value is not None else ""
    return None


def encode_params(params: Params) -> str:
    text = ""
    for key, value in params:   # a loop, not a generator: there are one or two
        text += f";{key}" if value is None else f";{key}={value}"
    return text


# --- Via (RFC 3261 §20.42, §18.2.1, RFC 3581) -------------------------------

_VIA_PROTOCOL = re.compile(r"^\s*([^\s/]+)\s*/\s*([^\s/]+)\s*/\s*([^\s/]+)\s+(.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Via:
    transport: str          # upper case as on the wire: UDP, TCP, TLS, WS, SCTP, ...
    host: str
    port: int | None
    params: Params
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return get_param(self.params, "received")

    @property
    def rport(self) -> str | None:
        """'' when the flag is present without a value (RFC 3581 §3), None when absent."""
        return get_param(self.params, "rport")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{encode_params(self.params)}"


# Building a frozen dataclass through its generated __init__ costs one
# object.__setattr__ per field (~8 k instructions for a Via); the parsers below
# build them by setting the slots directly, with the same result.
_new = object.__new__
_via_transport, _via_host, _via_port, _via_params, _via_protocol = (
    Via.__dict__[name].__set__ for name in Via.__slots__)


def _make_via(transport: str, host: str, port: int | None, params: Params,
              protocol: str = "SIP/2.0") -> Via:
    via = _new(Via)
    _via_transport(via, transport)
    _via_host(via, host)
    _via_port(via, port)
    _via_params(via, params)
    _via_protocol(via, protocol)
    return via


@lru_cache(maxsize=1024)
def parse_via(value: str) -> Via:
    """One Via value; cached (``Via`` is immutable): a retransmission, the
    ACK of a non-2xx response and every response to one request carry the same text."""
    fast = _SIMPLE_VIA.match(value)
    if fast is not None:
        # The shape nearly every phone sends: no LWS, no quotes, no IPv6 (hot path).
        transport, host, port_text, param_text = fast.groups()
        port = int(port_text) if port_text else None
        if port is None or port <= 65535:
            simple: list[tuple[str, str | None]] = []
            if param_text:
                for part in param_text[1:].split(";"):
                    pname, eq, pvalue = part.partition("=")
                    simple.append((pname, pvalue if eq else None))
            return _make_via(transport.upper(), host, port, tuple(simple))
    match = _VIA_PROTOCOL.match(value)
    if not match:
        raise ParseError(f"malformed Via {value!r}")
    name, version, transport, rest = match.groups()
    if not is_token(name) or not is_token(version) or not is_token(transport):
        raise ParseError(f"malformed Via protocol in {value!r}")
    rest = rest.strip()
    semi = rest.find(";")
    sent_by = (rest if semi < 0 else rest[:semi]).strip()
    param_text = "" if semi < 0 else rest[semi:]
    host, port = _parse_hostport(sent_by, "Via")
    params = parse_params(param_text, "Via")
    return _make_via(transport.upper(), host, port, params, f"{name.upper()}/{version}")


_SIMPLE_VIA = re.compile(r"^SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-]+)(?::(\d{1,5}))?"
                         r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:]+)?)*)$")


def _parse_hostport(text: str, what: str) -> tuple[str, int | None]:
    host, port = split_hostport(text.replace(" ", "").replace("\t", ""), what)
    if not re.match(r"^[A-Za-z0-9\-.\[\]:]+$", host):
        raise ParseError(f"bad host {host!r} in {what}")
    return host, port


def vias(message: Message) -> list[Via]:
    cached = message._cache.get("vias")
    if cached is None:
        cached = [parse_via(item) for item in message.headers.get_list("via")]
        message._cache["vias"] = cached
    return cached  # type: ignore[return-value]


def top_via(message: Message) -> Via:
    cached = message._cache.get("top_via")
    if cached is None:
        first = message.headers.get("via")
        if first is None:
            raise ParseError("no Via")
        item = split_list(first)[0] if "," in first else first
        cached = parse_via(item)
        message._cache["top_via"] = cached
    return cached  # type: ignore[return-value]


# --- CSeq (RFC 3261 §20.16) --------------------------------------------------

@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@lru_cache(maxsize=1024)
def parse_cseq(value: str) -> CSeq:
    """``seq method``; cached: phones repeat the same few values ("1 INVITE",
    "2 INVITE", "102 BYE") call after call, and ``CSeq`` is immutable."""
    parts = value.split()
    if len(parts) != 2 or not (parts[0].isascii() and parts[0].isdigit()) or not is_token(parts[1]):
        raise ParseError(f"malformed CSeq {value!r}")
    seq = int(parts[0])
    if seq >= 2**31:   # §8.1.1.5: the sequence number MUST be less than 2**31
        raise ParseError(f"CSeq number out of range: {parts[0]}")
    return CSeq(seq, parts[1])


def cseq(message: Message) -> CSeq:
    cached = message._cache.get("cseq")
    if cached is None:
        value = message.headers.get("cseq")
        if value is None:
            raise ParseError("no CSeq")
        cached = parse_cseq(value)
        message._cache["cseq"] = cached
    return cached  # type: ignore[return-value]


# --- name-addr / addr-spec: From, To, Contact, Route, Refer-To ... (§20.10, §25.1)

@dataclass(frozen=True, slots=True)
class NameAddr:
    uri: Uri
    display: str | None = None      # unquoted display name
    params: Params = ()
    wildcard: bool = False          # Contact: *

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    @property
    def sip_uri(self) -> SipUri:
        if not isinstance(self.uri, SipUri):
            raise ParseError(f"not a SIP URI: {self.uri}")
        return self.uri

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        display = f"{quote(self.display)} " if self.display else ""
        return f"{display}<{self.uri}>{encode_params(self.params)}"


WILDCARD = NameAddr(uri=parse_uri("sip:invalid"), wildcard=True)


_na_uri, _na_display, _na_params, _na_wildcard = (
    NameAddr.__dict__[name].__set__ for name in NameAddr.__slots__)


def _make_name_addr(uri: Uri, display: str | None, params: Params) -> NameAddr:
    """``NameAddr(uri, display, params)`` without the generated __init__ (see _make_via)."""
    name_addr = _new(NameAddr)
    _na_uri(name_addr, uri)
    _na_display(name_addr, display)
    _na_params(name_addr, params)
    _na_wildcard(name_addr, False)
    return name_addr


def parse_name_addr(value: str, *, allow_wildcard: bool = False) -> NameAddr:
    name_addr = _parse_name_addr(value)
    if name_addr is WILDCARD and not allow_wildcard:
        raise ParseError("'*' not allowed here")
    return name_addr


@lru_cache(maxsize=2048)
def _parse_name_addr(value: str) -> NameAddr:
    """``parse_name_addr`` with the wildcard allowed; cached (``NameAddr`` is
    immutable): a dialog's From and To come back in every message of the call."""
    text = value.strip()
    if text == "*":
        return WILDCARD
    display: str | None = None
    i = 0
    n = len(text)
    if text.startswith('"'):
        end = _scan_quoted(text, 0)
        display = unquote(text[:end])
        i = end
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "<":
            raise ParseError(f"display name without <URI> in {value!r}")
    lt = text.find("<", i)
    if lt >= 0:
        if display is None:
            token_display = text[i:lt].strip()
            if token_display:
                # RFC 3261 §25.1 allows only tokens here; RFC 4475 §3.1.2.15 lets an
                # element be liberal with other characters, which phones do send.
                display = " ".join(token_display.split())
        gt = text.find(">", lt)
        if gt < 0:
            raise ParseError(f"unterminated <URI> in {value!r}")
        uri = parse_uri(text[lt + 1:gt].strip())
        params = parse_params(text[gt + 1:], "name-addr")
        return _make_name_addr(uri, display, params)
    # addr-spec: no <>, so ';' starts header parameters and the URI has none (§20.10)
    semi = text.find(";", i)
    uri_text = (text[i:] if semi < 0 else text[i:semi]).strip()
    if " " in uri_text or "\t" in uri_text:
        raise ParseError(f"whitespace in addr-spec {value!r}")
    uri = parse_uri(uri_text)
    params = parse_params(text[semi:] if semi >= 0 else "", "addr-spec")
    return _make_name_addr(uri, None, params)


def from_header(message: Message) -> NameAddr:
    return _cached_name_addr(message, "from")


def to_header(message: Message) -> NameAddr:
    return _cached_name_addr(message, "to")


def _cached_name_addr(message: Message, key: str) -> NameAddr:
    cached = message._cache.get(key)
    if cached is None:
        value = message.headers.get(key)
        if value is None:
            raise ParseError(f"no {key} header")
        cached = parse_name_addr(value)
        message._cache[key] = cached
    return cached  # type: ignore[return-value]


def contacts(message: Message) -> list[NameAddr]:
    return [parse_name_addr(item, allow_wildcard=True)
            for item in message.headers.get_list("contact")]


# The last ";tag=" (any case), its value up to the next ';', and no '>' after it
# (a ";tag=" before the URI's closing '>' belongs to the URI).
_LAST_TAG = re.compile(r".*;tag=([^;>]*)[^>]*", re.IGNORECASE | re.DOTALL)


@lru_cache(maxsize=2048)
def tag_of(value: str) -> str | None:
    """The tag parameter of a From/To value without a full parse (hot path).

    Cached: the same few From/To values are asked about ~20 times a call."""
    match = _LAST_TAG.fullmatch(value)
    return match.group(1).strip() if match is not None else None


# --- Authorization / WWW-Authenticate (RFC 3261 §20.7, §20.44; RFC 7616 §3) --

@dataclass(frozen=True, slots=True)
class Credentials:
    scheme: str                     # "Digest" (case as sent)
    params: dict[str, str]          # names lower-cased, values unquoted

    def get(self, name: str) -> str | None:
        return self.params.get(name.lower())


# One auth-param (RFC 7616 §3.3): name = token / quoted-string, then a comma or the end.
# (The quoted-string is written as an unrolled loop, "[^"\\]*(?:\\.[^"\\]*)*": the
# same strings as "(?:[^"\\]|\\.)*", without an alternation per character.)
_AUTH_PARAM = re.compile(r'[ \t]*([^=\s,]+)[ \t]*=[ \t]*'
                         r'("[^"\\]*(?:\\.[^"\\]*)*"|[^\s,"]*)[ \t]*(?:,|$)')


def _split_auth_params(text: str) -> dict[str, str] | None:
    """parse_auth's parameters by splitting on commas, or None when some piece
    is not plainly ``name=token`` or ``name="text"`` (then the regex loop reads
    them and reports errors).  Printable ASCII without a backslash only: the
    one blank is then the space, found with ``in``, no ``\\s`` class needed.
    (The regex loop cost ~110k instructions for a SIPp Proxy-Authorization.)"""
    if not (text.isascii() and text.isprintable()) or "\\" in text:
        return None
    params: dict[str, str] = {}
    for piece in text.split(","):
        name, eq, raw = piece.partition("=")
        name = name.strip(" ")
        raw = raw.strip(" ")
        if not (eq and name and raw) or " " in name or " " in raw:
            if piece.strip(" "):
                return None
            continue        # nothing between two commas
        if raw[0] == '"':
            if raw[-1] != '"' or raw.count('"') != 2:
                return None
            params[name.lower()] = raw[1:-1]
        elif '"' in raw:
            return None
        else:
            params[name.lower()] = raw
    return params


def parse_auth(value: str) -> Credentials:
    """``scheme param=value, param="value", ...`` (comma-separated auth-params)."""
    text = value.strip()
    space = 0
    while space < len(text) and text[space] not in " \t":
        space += 1
    scheme = text[:space]
    if not scheme or not is_token(scheme):
        raise ParseError(f"bad auth scheme in {value!r}")
    params = _split_auth_params(text[space:])
    if params is not None:
        return Credentials(scheme, params)
    params = {}
    pos = space
    n = len(text)
    while pos < n and text[pos] in " \t,":
        pos += 1
    match_at = _AUTH_PARAM.match
    while pos < n:
        match = match_at(text, pos)
        if match is None:
            raise ParseError(f"bad auth parameter in {value!r}")
        name, raw = match.groups()
        if raw.startswith('"'):
            params[name.lower()] = unquote(raw)
        elif not raw:
            raise ParseError(f"empty auth parameter {name!r}")
        else:
            params[name.lower()] = raw
        pos = match.end()
        while pos < n and text[pos] in " \t,":
            pos += 1
    return Credentials(scheme, params)


# --- small scalar fields ------------------------------------------------------

def parse_uint(value: str, what: str, *, maximum: int = 2**32 - 1) -> int:
    text = value.strip()
    # isascii: str.isdigit() is also true of '²' and other digits int() refuses.
    if not (text.isascii() and text.isdigit()) or int(text) > maximum:
        raise ParseError(f"bad {what} {value!r}")
    return int(text)
