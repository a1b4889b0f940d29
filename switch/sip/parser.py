"""Bytes → SIP message (RFC 3261 §7, §18.3, §25), bounded and incremental.

``parse_message`` takes one whole message: a UDP datagram, or a frame that
``StreamFramer`` cut out of a TCP byte stream.  It checks what every element
must check before acting on a message (RFC 3261 §8.2, §16.3 item 1, RFC 4475):
the start line, header field syntax, the presence and uniqueness of the
mandatory fields, CSeq against the method, Content-Length against the body,
Via syntax, and numeric fields within their ranges.  Anything else is parsed
on demand by ``switch.sip.headers``.

Errors carry the status to answer with; a message the parser rejects before
it knows enough to build a response (a bad response, no Via) is dropped by the
caller.  ``ParseError.partial`` carries whatever was understood so that the
endpoint can still form a 400 when the headers needed for it are there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from switch.sip.errors import MessageTooLarge, ParseError, VersionNotSupported
from switch.sip.headers import parse_cseq, parse_uint, parse_via, vias
from switch.sip.message import (
    _FIELD_NAMES,
    CANONICAL_NAMES,
    COMPACT_FORMS,
    Headers,
    Message,
    Request,
    Response,
    _field_entry,
)

_METHOD = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_FIELD_NAME = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VERSION = re.compile(r"^SIP/(\d+)\.(\d+)$", re.IGNORECASE)

# The start lines nearly every message has, in one match each; anything else
# (other versions, odd spacing, lower-case "sip/") takes the general path,
# which accepts a superset of these and reports the errors.
_REQUEST_LINE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+) ([^ \t<][^ \t]*) SIP/2\.0")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-9][0-9][0-9])(?: (.*))?", re.DOTALL)

# Fields that may appear once only (RFC 3261 §7.3.1 and §20: not list-valued).
SINGLE_FIELDS = ("to", "from", "call-id", "cseq", "max-forwards", "content-length",
                 "content-type", "expires", "min-expires")
REQUIRED_REQUEST_FIELDS = ("via", "to", "from", "call-id", "cseq")


@dataclass(frozen=True, slots=True)
class Limits:
    """Configurable bounds (DESIGN.md rule 6)."""

    max_message_size: int = 65535
    max_headers: int = 256
    max_header_line: int = 8192


DEFAULT_LIMITS = Limits()


class PartialMessage(Exception):
    """Not an error: a stream framer needs more bytes."""


def _find_head_end(data: bytes, start: int = 0) -> tuple[int, int]:
    """(index of the blank line, length of the separator) or (-1, 0)."""
    idx = data.find(b"\r\n\r\n", start)
    if idx >= 0:
        return idx, 4
    # Be liberal: bare-LF line ends (RFC 3261 §7 says CRLF, some stacks send LF).
    idx = data.find(b"\n\n", start)
    if idx >= 0:
        return idx, 2
    return -1, 0


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS, *, stream: bool = False
                  ) -> Message:
    """Parse one SIP message.

    ``stream`` is True for a frame cut from TCP: Content-Length is then
    mandatory (RFC 3261 §18.3) and the frame holds exactly the message.  Over
    UDP, octets past Content-Length are ignored (RFC 4475 §3.1.1.8) and a
    missing Content-Length means "the rest of the datagram".
    """
    if len(data) > limits.max_message_size:
        raise MessageTooLarge(f"message of {len(data)} bytes exceeds {limits.max_message_size}")
    # RFC 3261 §7.5: implementations SHOULD ignore CRLFs before the start line.
    offset = 0
    first = data[:1]
    if first == b"\r" or first == b"\n":
        while data.startswith(b"\r\n", offset) or data.startswith(b"\n", offset):
            offset += 2 if data.startswith(b"\r\n", offset) else 1
    head_end = data.find(b"\r\n\r\n", offset)
    if head_end >= 0:
        sep = 4
    else:
        head_end, sep = _find_head_end(data, offset)
        if head_end < 0:
            raise ParseError("no blank line after the header fields")
    head = data[offset:head_end].decode("utf-8", "surrogateescape")
    eol = head.find("\r\n")
    if eol >= 0:
        start_line = head[:eol]
        lines = None
    else:
        lines = head.split("\n")
        start_line = lines[0]
    version_error: VersionNotSupported | None = None
    try:
        message = _parse_start_line(start_line)
    except VersionNotSupported as exc:
        # Parse on so the caller can still answer 505 (RFC 3261 §21.5.7 needs
        # Via, From, To, Call-ID and CSeq for the response, §8.2.6.2).
        parts = start_line.split(" ")
        if len(parts) != 3 or start_line.upper().startswith("SIP/"):
            raise
        version_error = exc
        message = Request(parts[0], parts[1])
    headers = message.headers
    duplicates: bool | None = True
    if lines is None:
        duplicates = _parse_block(head[eol + 2:], headers, limits)
        if duplicates is None:
            lines = head.split("\r\n")
    if lines is not None:
        _parse_fields(lines, headers, limits)
        duplicates = True
    try:
        if version_error is not None:
            raise version_error
        _check_fields(message, duplicates is not False)
        body_start = head_end + sep
        values = headers._values
        length_text = values["content-length"][0] if "content-length" in values else None
        if length_text is None:
            if stream:
                raise ParseError("no Content-Length on a stream transport")
            body = data[body_start:]
        else:
            # parse_uint without the call for the usual digits-only value
            length = (int(length_text) if length_text.isascii() and length_text.isdigit()
                      and len(length_text) < 10
                      else parse_uint(length_text, "Content-Length"))
            available = len(data) - body_start
            if length > available:
                raise ParseError(f"Content-Length {length} larger than the {available}-byte body")
            body = data[body_start:body_start + length]
        message.body = body
    except ParseError as exc:
        exc.partial = message  # type: ignore[attr-defined]
        raise
    return message


def _parse_start_line(line: str) -> Message:
    if line.startswith("SIP/2.0 "):
        match = _STATUS_LINE.fullmatch(line)
        if match is not None:
            code, reason = match.groups()
            return Response(int(code), reason or "")
    else:
        match = _REQUEST_LINE.fullmatch(line)
        if match is not None:
            method, uri = match.groups()
            if ":" in uri:
                return Request(method, uri)
    return _parse_start_line_checked(line)


def _parse_start_line_checked(line: str) -> Message:
    if line.startswith("SIP/") or line[:4].upper() == "SIP/":
        parts = line.split(" ", 2)
        if len(parts) < 2:
            raise ParseError(f"malformed status line {line!r}")
        version, code = parts[0], parts[1]
        _check_version(version)
        if len(code) != 3 or not (code.isascii() and code.isdigit()) or code[0] == "0":
            raise ParseError(f"bad status code {code!r}")
        reason = parts[2] if len(parts) == 3 else ""
        return Response(int(code), reason)
    # RFC 3261 §25.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF,
    # exactly one SP each (RFC 4475 §3.1.2.8-10).
    parts = line.split(" ")
    if len(parts) != 3:
        raise ParseError(f"malformed request line {line!r}")
    method, uri, version = parts
    if not method or not _METHOD.match(method):
        raise ParseError(f"bad method {method!r}")
    _check_version(version)
    if not uri or uri[0] == "<" or "\t" in uri or ":" not in uri:
        raise ParseError(f"bad Request-URI {uri!r}")
    return Request(method, uri)


def _check_version(version: str) -> None:
    match = _VERSION.match(version)
    if not match:
        raise ParseError(f"bad SIP-Version {version!r}")
    if match.groups() != ("2", "0"):
        raise VersionNotSupported(f"SIP-Version {version!r}")


def _parse_fields(lines: list[str], headers: Headers, limits: Limits) -> None:
    if len(lines) - 1 > limits.max_headers:
        raise MessageTooLarge(f"more than {limits.max_headers} header fields")
    values = headers._values
    names = headers._names
    max_line = limits.max_header_line
    name = ""
    value = ""
    key = ""
    for line in lines[1:]:
        if len(line) > max_line:
            raise MessageTooLarge(f"header line longer than {max_line}")
        if line and (line[0] == " " or line[0] == "\t"):
            # Header folding (RFC 3261 §7.3.1): a continuation line joins the previous one.
            if not name:
                raise ParseError("continuation line before the first header field")
            value = f"{value} {line.strip()}" if value else line.strip()
            continue
        if name:
            _store(values, names, key, name, value)
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not name or not _FIELD_NAME.match(name):
            raise ParseError(f"malformed header line {line[:40]!r}")
        value = value.strip()
        key = name.lower()
        if len(key) == 1:
            key = COMPACT_FORMS.get(key, key)
    if name:
        _store(values, names, key, name, value)


def _parse_block(block: str, headers: Headers, limits: Limits) -> bool | None:
    """The header fields after the start line, the common case in one tight loop.

    Returns whether some field has more than one line, or None when some line
    is not of the simple shape (folding, a name that is not a token, no colon)
    or the block might break a limit:
    ``_parse_fields`` then does it line by line and raises the precise error.
    Both store the same fields in the same order.  (This was one regex
    ``findall`` over the block: ~35 k instructions for an INVITE's, about twice
    the split and the loop.)
    """
    if len(block) > limits.max_header_line:
        return None     # some line might be too long: let _parse_fields tell
    lines = block.split("\r\n")
    if len(lines) > limits.max_headers:
        raise MessageTooLarge(f"more than {limits.max_headers} header fields")
    values = headers._values
    names = headers._names
    known = _TOKEN_NAMES
    duplicates = False
    for line in lines:
        name, colon, value = line.partition(":")
        if name in known and colon:
            key, spelling = known[name]
        else:
            entry = _new_token_name(name) if colon else None
            if entry is None:
                values.clear()      # _parse_fields starts over
                names.clear()
                return None
            key, spelling = entry
        value = value.strip()
        if key in values:
            values[key].append(value)
            duplicates = True
        else:
            values[key] = [value]
            names[key] = spelling
    return duplicates


# Field names as written → (lookup key, spelling), for names known to be tokens
# (what _parse_block looks names up in; _FIELD_NAMES may also hold whatever the
# code asked for).  Bounded: names come from the network.
_TOKEN_NAMES: dict[str, tuple[str, str]] = {
    name: entry for name, entry in _FIELD_NAMES.items() if _TOKEN.fullmatch(name)}
_TOKEN_NAMES_MAX = 2048


def _new_token_name(name: str) -> tuple[str, str] | None:
    """The (key, spelling) of a field name _parse_block has not seen (blanks
    before the colon allowed), or None when it is not a token (which includes a
    folded line's leading blanks)."""
    token = name.rstrip(" \t")
    if _TOKEN.fullmatch(token) is None:
        return None
    entry = _FIELD_NAMES[token] if token in _FIELD_NAMES else _field_entry(token)
    if len(_TOKEN_NAMES) < _TOKEN_NAMES_MAX:
        _TOKEN_NAMES[name] = entry
    return entry


def _store(values: dict[str, list[str]], names: dict[str, str], key: str, name: str,
           value: str) -> None:
    existing = values.get(key)
    if existing is None:
        values[key] = [value]
        names[key] = CANONICAL_NAMES.get(key, name)
    else:
        existing.append(value)


# A From/To value that passes _check_name_addr_shape without a quote to count:
# no '"', and either no '<' or a '>' after the first '<'.
_PLAIN_NAME_ADDR = re.compile(r'[^"<]*<[^"]*>[^"]*|[^"<]+', re.DOTALL)


# The Max-Forwards values parse_uint accepts without a call (a set lookup).
_MAX_FORWARDS = frozenset(str(hops) for hops in range(256))


def _check_fields(message: Message, duplicates: bool = True) -> None:
    """``duplicates`` False: the parser saw no field twice, so the
    once-only fields need no count."""
    values = message.headers._values
    if duplicates:
        for key in SINGLE_FIELDS:
            if key in values and len(values[key]) > 1:
                raise ParseError(f"{key} appears more than once")
    method: str | None = None
    if isinstance(message, Request):
        method = message.method
        for key in REQUIRED_REQUEST_FIELDS:
            if key not in values:
                raise ParseError(f"missing {key} header")
    elif not ("via" in values and "cseq" in values and "call-id" in values):
        raise ParseError("response without Via, CSeq or Call-ID")
    # The RFC 3261 §8.2 checks every UAS makes before going on.
    cache = message._cache
    if "cseq" in values:
        cseq = parse_cseq(values["cseq"][0])
        cache["cseq"] = cseq
        if method is not None and cseq.method != method:
            raise ParseError(f"CSeq method {cseq.method} does not match {method}")
    via_lines = values["via"]
    if len(via_lines) == 1 and "," not in via_lines[0] and via_lines[0]:
        # One Via line of one value (nearly every message): no list to split.
        top = parse_via(via_lines[0])
        cache["vias"] = [top]
    else:
        via_list = vias(message)
        if not via_list:
            raise ParseError("empty Via")
        top = via_list[0]
    cache["top_via"] = top
    plain = _PLAIN_NAME_ADDR.fullmatch
    if "from" in values:
        value = values["from"][0]
        if plain(value) is None:
            _check_name_addr_shape(value, "from")
    if "to" in values:
        value = values["to"][0]
        if plain(value) is None:
            _check_name_addr_shape(value, "to")
    if "max-forwards" in values and values["max-forwards"][0] not in _MAX_FORWARDS:
        parse_uint(values["max-forwards"][0], "Max-Forwards", maximum=255)
    if "expires" in values:
        parse_uint(values["expires"][0], "Expires")
    if not values["call-id"][0]:
        raise ParseError("empty Call-ID")


def _check_name_addr_shape(value: str, what: str) -> None:
    """Cheap structural check of From/To; the full parse is lazy (headers.from_header).

    Catches what RFC 4475 §3.1.2.6 asks to reject (an unterminated quoted
    display name) without paying for a URI parse on every message.
    """
    if '"' in value:
        quotes = value.count('"') - value.count('\\"')
        if quotes % 2:
            raise ParseError(f"unterminated quoted string in {what}")
    lt = value.find("<")
    if lt >= 0 and value.find(">", lt) < 0:
        raise ParseError(f"unterminated <URI> in {what}")
    if not value:
        raise ParseError(f"empty {what}")


class StreamFramer:
    """Cuts SIP messages out of a byte stream (RFC 3261 §18.3) — sans-I/O.

    ``feed`` returns every complete frame; a partial one stays buffered.  Bare
    CRLF keep-alives (RFC 5626 §3.5.1) between messages are consumed and
    counted so the transport can answer a double-CRLF ping with a single CRLF.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._buffer = bytearray()
        self._limits = limits
        self.keepalive_pings = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        buffer = self._buffer
        while True:
            # Skip keep-alive CRLFs between messages.
            skipped = 0
            while buffer[skipped:skipped + 2] == b"\r\n":
                skipped += 2
            if skipped:
                self.keepalive_pings += skipped // 4
                del buffer[:skipped]
            if not buffer:
                break
            head_end, sep = _find_head_end(bytes(buffer[:self._limits.max_message_size + 4]))
            if head_end < 0:
                if len(buffer) > self._limits.max_message_size:
                    raise MessageTooLarge("header section exceeds the size limit")
                break
            length = _content_length(bytes(buffer[:head_end]))
            total = head_end + sep + length
            if total > self._limits.max_message_size:
                raise MessageTooLarge(f"message of {total} bytes exceeds the size limit")
            if len(buffer) < total:
                break
            frames.append(bytes(buffer[:total]))
            del buffer[:total]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def pending(self) -> bytes:
        """The bytes not yet framed (to answer 400 from a stream that cannot be cut)."""
        return bytes(self._buffer)


_CL_LINE = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)")


def _content_length(head: bytes) -> int:
    matches = _CL_LINE.findall(head)
    if not matches:
        raise ParseError("no Content-Length on a stream transport")
    if len(matches) > 1:
        raise ParseError("Content-Length appears more than once")
    text = matches[0].strip()
    if not (text.isascii() and text.isdigit()):
        raise ParseError(f"bad Content-Length {text!r}")
    return int(text)
