"""SDP (RFC 8866, grammar of RFC 4566 §9) and the offer/answer model (RFC 3264).

Theory of operation
-------------------
``parse_sdp`` turns a message body into a ``SessionDescription``; ``encode``
turns it back into CRLF-terminated bytes.  The parser is strict on structure
(``v=0`` first, the line order of RFC 8866 §5, ``<type>=<value>`` lines,
numeric fields in range, addresses that are addresses) and tolerant where
deployed phones differ from the RFC without ambiguity: bare-LF line ends and
trailing whitespace.  A type letter it does not know makes the description
unusable (RFC 8866 §5: "MUST completely ignore or reject"), so it is rejected;
unknown *attributes* are kept as they are (§5.13 and §6: the extension point).
Errors are ``SdpError`` (a ``ParseError``, status 400: an INVITE whose body is
not SDP is a bad request), naming the line number and the line.  Input is
bounded by ``SdpLimits``.

Values, not objects
-------------------
The descriptions are frozen, slotted dataclasses holding tuples.  A B2BUA keeps
the SDP it received on one leg (to answer it, to compare the next re-INVITE
against it) while deriving the SDP it sends on the other leg: with a mutable
tree a rewrite for leg B would silently change the record of leg A.  Being
values also makes RFC 3264 §8's rule "same o= version iff the description did
not change" a plain ``==`` (see ``OriginState``).  Rewrites use
``dataclasses.replace`` and the ``with_*`` helpers, which are cheap at SDP
sizes.  Being values also lets what is derived from them be computed once per
distinct input and shared (``functools.lru_cache``): the parse of a c=, t= or
rtpmap value, the attribute lookups of an attribute list (``_index``).  Phones
send the same lines call after call, and the B2BUA handles two bodies per call.

Round trip: ``parse_sdp(sdp.encode()) == sdp`` for every description whose
text fields hold no CR, LF or NUL and do not end in whitespace, and
``parse_sdp(text).encode() == text`` for well-formed CRLF text without leading
zeros in its numeric fields.

Offer/answer
------------
``negotiate`` builds an answer (RFC 3264 §6) to an offer from a list of
supported codecs: same m-line count and order, rejected streams with port 0,
formats a subset of the offer's in the offerer's order with the same payload
type numbers, telephone-event kept (RFC 4733 §7), direction from the §6.1
table.  If no stream can be accepted it returns ``NoCommonMedia``, which the
caller turns into 488 (``SdpNotAcceptable``).  ``rewrite_connection`` anchors
media on the engine's address and ports; ``OriginState`` keeps one leg's o=
line and its version (RFC 3264 §8).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache

from switch.sip.errors import ParseError, SipError

Attribute = tuple[str, str | None]
"""``a=name:value`` as ``(name, value)``; a property attribute ``a=name`` has value None."""

# RFC 8866 §9: token-char = %x21 / %x23-27 / %x2A-2B / %x2D-2E / %x30-39 / %x41-5A / %x5E-7E
_TOKEN = re.compile(r"^[\x21\x23-\x27\x2A\x2B\x2D\x2E\x30-\x39\x41-\x5A\x5E-\x7E]+$")
_PROTO = re.compile(r"^[\x21\x23-\x27\x2A\x2B\x2D\x2E\x30-\x39\x41-\x5A\x5E-\x7E]+"
                    r"(?:/[\x21\x23-\x27\x2A\x2B\x2D\x2E\x30-\x39\x41-\x5A\x5E-\x7E]+)*$")
_DIGITS = re.compile(r"^[0-9]+$")
_NON_WS = re.compile(r"^[\x21-\x7E\x80-\U0010FFFF]+$")
# RFC 8866 §9 FQDN: 4*(alpha-numeric / "-" / "."); we also require a letter so
# that a mangled dotted quad ("1.2.3", "10.0.0.256") is not taken for a name.
_FQDN = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9\-.]{4,}$")
_LINE = re.compile(r"^([a-z])=(.*)$", re.S)

_SESSION_ORDER = "vosiuepcbtka"   # RFC 8866 §5 (r= and z= belong to t=)
_MEDIA_ORDER = "micbka"
_SESSION_REPEATABLE = frozenset("epbta")
_MEDIA_REPEATABLE = frozenset("cba")   # several c= for layered multicast (§5.7)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

class SdpError(ParseError):
    """The body is not a well-formed session description (RFC 8866 §5, §9).

    A malformed offer in an INVITE is a malformed request, hence 400 and not
    488: 488 says "I understood it and cannot accept it".
    """

    status = 400
    reason = "Bad Request"


class SdpTooLarge(SdpError):
    """Over ``SdpLimits`` (RFC 3261 §21.5.8)."""

    status = 513
    reason = "Message Too Large"


class SdpNotAcceptable(SipError):
    """A well-formed offer with nothing acceptable in it (RFC 3261 §21.4.26, RFC 3264 §6)."""

    status = 488
    reason = "Not Acceptable Here"


@dataclass(frozen=True, slots=True)
class SdpLimits:
    """Bounds on one body (DESIGN.md rule 6). WebRTC-style bodies with ICE reach ~10 kB."""

    max_size: int = 65535
    max_lines: int = 2048
    max_media: int = 64


DEFAULT_SDP_LIMITS = SdpLimits()


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

class Direction(StrEnum):
    """Stream direction attributes (RFC 8866 §6.7, RFC 3264 §5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def of(cls, sends: bool, receives: bool) -> Direction:
        if sends and receives:
            return cls.SENDRECV
        if sends:
            return cls.SENDONLY
        if receives:
            return cls.RECVONLY
        return cls.INACTIVE


_DIRECTIONS = frozenset(d.value for d in Direction)
_HELD = {d: Direction.of(d.sends, False) for d in Direction}   # hold_direction, as a table


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=`` (RFC 8866 §5.2). ``sess_id`` stays a string: it is an identifier."""

    username: str
    sess_id: str
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    def encode(self) -> str:
        return (f"{self.username} {self.sess_id} {self.sess_version} "
                f"{self.nettype} {self.addrtype} {self.address}")


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=`` (RFC 8866 §5.7): ``address[/ttl][/count]``; TTL exists for IP4 only."""

    nettype: str
    addrtype: str
    address: str
    ttl: int | None = None
    count: int | None = None

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """``IN IP4`` or ``IN IP6`` according to the address's family."""
        return cls("IN", addrtype_of(address), address)

    def encode(self) -> str:
        addr = self.address
        if self.ttl is not None:
            addr += f"/{self.ttl}"
        if self.count is not None:
            addr += f"/{self.count}"
        return f"{self.nettype} {self.addrtype} {addr}"

    @property
    def is_unspecified(self) -> bool:
        """0.0.0.0, the RFC 2543 hold address (RFC 3264 §8.4), or its IPv6 analogue ``::``."""
        if self.nettype != "IN":
            return False
        return _unspecified(self.address)


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (RFC 8866 §5.8), e.g. AS (kbit/s), TIAS (bit/s, RFC 3890)."""

    bwtype: str
    bandwidth: int

    def encode(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass(frozen=True, slots=True)
class TimeDescription:
    """``t=`` with its ``r=`` lines and ``z=`` line (RFC 8866 §5.9-5.11), r= and z= raw."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` (RFC 8866 §6.6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def encode(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        if self.channels is not None:
            text += f"/{self.channels}"
        return text

    def matches(self, name: str, clock_rate: int, channels: int = 1) -> bool:
        """Encoding names are case-insensitive (RFC 4855 §3); channels default to 1."""
        return (self.encoding.lower() == name.lower() and self.clock_rate == clock_rate
                and (self.channels or 1) == channels)


@dataclass(frozen=True, slots=True)
class Rtcp:
    """``a=rtcp:<port> [<nettype> <addrtype> <address>]`` (RFC 3605 §2.1)."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None


# RFC 3551 §6 tables 4 and 5: static payload types. Channels None where the
# table leaves them unspecified (MPA) and for video.
STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    pt: RtpMap(pt, name, rate, channels) for pt, name, rate, channels in (
        (0, "PCMU", 8000, 1), (3, "GSM", 8000, 1), (4, "G723", 8000, 1),
        (5, "DVI4", 8000, 1), (6, "DVI4", 16000, 1), (7, "LPC", 8000, 1),
        (8, "PCMA", 8000, 1), (9, "G722", 8000, 1), (10, "L16", 44100, 2),
        (11, "L16", 44100, 1), (12, "QCELP", 8000, 1), (13, "CN", 8000, 1),
        (14, "MPA", 90000, None), (15, "G728", 8000, 1), (16, "DVI4", 11025, 1),
        (17, "DVI4", 22050, 1), (18, "G729", 8000, 1),
        (25, "CelB", 90000, None), (26, "JPEG", 90000, None), (28, "nv", 90000, None),
        (31, "H261", 90000, None), (32, "MPV", 90000, None), (33, "MP2T", 90000, None),
        (34, "H263", 90000, None),
    )
}

TELEPHONE_EVENT = "telephone-event"
# Encodings that ride along with a codec but are not one (RFC 4733, RFC 3389).
AUXILIARY_ENCODINGS = frozenset({"telephone-event", "cn"})
ICE_ATTRIBUTES = frozenset({"candidate", "remote-candidates", "ice-ufrag", "ice-pwd",
                            "ice-options", "ice-lite", "ice-mismatch", "ice-pacing",
                            "end-of-candidates"})  # RFC 8839 §5


_DIRECTION_OF = {d.value: d for d in Direction}


class _Index:
    """The lookups of one attribute list, built once per distinct list (``_index``).

    ``first``: lower-cased name -> first value ("" for a property attribute);
    ``rtpmaps``/``fmtps``: payload type as written -> the first a=rtpmap value /
    a=fmtp parameters for it; ``direction``: the last direction attribute.
    Shared between equal lists, so never changed after it is built.
    """

    __slots__ = ("first", "rtpmaps", "fmtps", "direction")

    def __init__(self, attributes: tuple[Attribute, ...]) -> None:
        first: dict[str, str] = {}
        rtpmaps: dict[str, str] = {}
        fmtps: dict[str, str] = {}
        direction = None
        for key, value in attributes:
            name = key.lower()
            if name not in first:
                first[name] = value if value is not None else ""
            if value is None:
                if key in _DIRECTIONS:
                    direction = _DIRECTION_OF[key]
            elif name == "rtpmap" or name == "fmtp":
                # a=rtpmap:<pt> ..., a=fmtp:<pt> <parameters> (RFC 8866 §6.6, §6.15)
                head, sep, rest = value.partition(" ")
                if sep:
                    if name == "rtpmap":
                        rtpmaps.setdefault(head, value)
                    else:
                        fmtps.setdefault(head, rest.strip())
        self.first = first
        self.rtpmaps = rtpmaps
        self.fmtps = fmtps
        self.direction = direction


# Most bodies repeat a few attribute lists (one per phone model and codec set).
_index = lru_cache(maxsize=1024)(_Index)


def _without_direction(attributes: Iterable[Attribute]) -> tuple[Attribute, ...]:
    return tuple(a for a in attributes if not (a[1] is None and a[0] in _DIRECTIONS))


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One ``m=`` section (RFC 8866 §5.14) with its i=, c=, b=, k=, a= lines."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    title: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()

    # -- attributes ---------------------------------------------------------

    def attribute(self, name: str) -> str | None:
        """First value of ``a=name``: "" for a property attribute, None if absent."""
        return _index(self.attributes).first.get(name.lower())

    def attribute_values(self, name: str) -> tuple[str | None, ...]:
        lname = name.lower()
        return tuple(v for k, v in self.attributes if k.lower() == lname)

    def with_attributes(self, attributes: Iterable[Attribute]) -> MediaDescription:
        return replace(self, attributes=tuple(attributes))

    def without_attributes(self, names: Collection[str]) -> MediaDescription:
        lnames = {n.lower() for n in names}
        return replace(self, attributes=tuple(a for a in self.attributes
                                              if a[0].lower() not in lnames))

    @property
    def connection(self) -> Connection | None:
        """The first media-level c= (several only for layered multicast, RFC 8866 §5.7)."""
        return self.connections[0] if self.connections else None

    @property
    def is_rejected(self) -> bool:
        """Port 0: a rejected or disabled stream (RFC 3264 §6, §8.2)."""
        return self.port == 0

    @property
    def is_rtp(self) -> bool:
        return "RTP" in self.proto.upper().split("/")

    # -- RTP payload types --------------------------------------------------

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """The a=rtpmap of ``payload_type``, else its RFC 3551 static mapping."""
        return self._rtpmap(str(payload_type), _index(self.attributes))

    def _rtpmap(self, fmt: str, index: _Index) -> RtpMap | None:
        value = index.rtpmaps.get(fmt)
        if value is not None:
            try:
                return parse_rtpmap(value)
            except SdpError:
                return None
        return STATIC_PAYLOAD_TYPES.get(int(fmt)) if self.is_rtp else None

    def rtpmaps(self) -> dict[int, RtpMap]:
        """Mappings of the payload types on the m= line, in m= order (unknown ones omitted)."""
        out: dict[int, RtpMap] = {}
        index = _index(self.attributes)
        for fmt in self.formats:
            if _DIGITS.match(fmt):
                pt = int(fmt)
                mapping = self._rtpmap(str(pt), index)
                if mapping is not None:
                    out[pt] = mapping
        return out

    def fmtp(self, payload_type: int) -> str | None:
        """The parameters of ``a=fmtp:<pt> <parameters>`` (RFC 8866 §6.15)."""
        return _index(self.attributes).fmtps.get(str(payload_type))

    def telephone_event_pt(self, clock_rate: int | None = None) -> int | None:
        """The payload type of RFC 4733 events (§7.1.1), at ``clock_rate`` if given."""
        for pt, mapping in self.rtpmaps().items():
            if mapping.encoding.lower() == TELEPHONE_EVENT and (
                    clock_rate is None or mapping.clock_rate == clock_rate):
                return pt
        return None

    def telephone_events(self, payload_type: int) -> frozenset[int]:
        """Events offered on ``payload_type``; 0-15 when no fmtp is given (RFC 4733 §7.1.1)."""
        params = self.fmtp(payload_type)
        return parse_event_list(params) if params else frozenset(range(16))

    # -- other attributes -----------------------------------------------------

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in ms (RFC 8866 §6.4); a fractional value is rounded."""
        return _milliseconds(self.attribute("ptime"))

    @property
    def maxptime(self) -> int | None:
        """``a=maxptime`` in ms (RFC 8866 §6.5)."""
        return _milliseconds(self.attribute("maxptime"))

    @property
    def rtcp(self) -> Rtcp | None:
        """``a=rtcp`` (RFC 3605); None if absent or malformed (RTP port + 1 applies)."""
        value = self.attribute("rtcp")
        if not value:
            return None
        parts = value.split()
        if not _DIGITS.match(parts[0]) or int(parts[0]) > 65535:
            return None
        if len(parts) == 4:
            return Rtcp(int(parts[0]), parts[1], parts[2], parts[3])
        return Rtcp(int(parts[0])) if len(parts) == 1 else None

    @property
    def direction_attribute(self) -> Direction | None:
        """The media-level direction attribute, if any (the last one wins)."""
        return _index(self.attributes).direction

    def with_direction(self, direction: Direction) -> MediaDescription:
        """Replace any direction attribute with ``direction`` (kept where the first one was)."""
        attrs = list(self.attributes)
        for i, (key, value) in enumerate(attrs):
            if value is None and key in _DIRECTIONS:
                rest = _without_direction(attrs[i + 1:])
                return replace(self, attributes=(*attrs[:i], (direction.value, None), *rest))
        return replace(self, attributes=(*attrs, (direction.value, None)))

    def encode_lines(self) -> list[str]:
        lines: list[str] = []
        self._encode_into(lines, False)
        return lines

    def _encode_into(self, lines: list[str], blocks: bool) -> None:
        """Append the lines (``blocks``: the a= lines as one CRLF-joined chunk)."""
        append = lines.append
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        append(f"m={' '.join((self.media, port, self.proto, *self.formats))}")
        if self.title is not None:
            append(f"i={self.title}")
        for c in self.connections:
            append(f"c={c.encode()}")
        for b in self.bandwidths:
            append(f"b={b.encode()}")
        if self.key is not None:
            append(f"k={self.key}")
        if blocks:
            if self.attributes:
                append(_attribute_block(self.attributes))
            return
        for name, value in self.attributes:
            append(f"a={name}" if value is None else f"a={name}:{value}")


# The a= lines of the bodies the B2BUA sends repeat call after call (they come
# from cached stream computations): encoded once per distinct list.
@lru_cache(maxsize=1024)
def _attribute_block(attributes: tuple[Attribute, ...]) -> str:
    return "\r\n".join(f"a={name}" if value is None else f"a={name}:{value}"
                       for name, value in attributes)


def _milliseconds(value: str | None) -> int | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return round(number) if 0 < number < 1e6 else None


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP body (RFC 8866 §5)."""

    origin: Origin
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    times: tuple[TimeDescription, ...] = (TimeDescription(),)
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()

    def attribute(self, name: str) -> str | None:
        """First value of session-level ``a=name``: "" for a property attribute."""
        return _index(self.attributes).first.get(name.lower())

    @property
    def direction_attribute(self) -> Direction | None:
        """The session-level direction, the default for every stream (RFC 8866 §6.7)."""
        return _index(self.attributes).direction if self.attributes else None

    def media_direction(self, index: int) -> Direction:
        """Effective direction of stream ``index``: media level, else session, else sendrecv."""
        return (self.media[index].direction_attribute or self.direction_attribute
                or Direction.SENDRECV)

    def media_connection(self, index: int) -> Connection | None:
        """The c= that applies to stream ``index`` (media level overrides session level)."""
        return self.media[index].connection or self.connection

    def stream_direction(self, index: int) -> Direction:
        """``media_direction``, the RFC 2543 ``c=0.0.0.0`` hold read as a hold (RFC 3264
        §8.4: ``hold_direction`` of it).  One frame: a B2BUA asks it several times a call."""
        m = self.media[index]
        direction = (_index(m.attributes).direction
                     or (_index(self.attributes).direction if self.attributes else None)
                     or Direction.SENDRECV)
        conn = m.connections[0] if m.connections else self.connection
        if conn is not None and conn.nettype == "IN" and _unspecified(conn.address):
            return _HELD[direction]
        return direction

    def is_stream_held(self, index: int) -> bool:
        """RFC 3264 §8.4: sendonly/inactive, or the RFC 2543 ``c=0.0.0.0`` form."""
        if self.media[index].is_rejected:
            return False
        if self.media_direction(index) in (Direction.SENDONLY, Direction.INACTIVE):
            return True
        conn = self.media_connection(index)
        return conn is not None and conn.is_unspecified

    def is_hold(self) -> bool:
        """True when there is an active stream and every active stream is held."""
        active = [i for i, m in enumerate(self.media) if not m.is_rejected]
        return bool(active) and all(self.is_stream_held(i) for i in active)

    def with_media(self, index: int, media: MediaDescription) -> SessionDescription:
        streams = list(self.media)
        streams[index] = media
        return replace(self, media=tuple(streams))

    def encode_lines(self) -> list[str]:
        return self._lines(False)

    def _lines(self, blocks: bool) -> list[str]:
        """The lines (``blocks``: each a= list as one CRLF-joined chunk, see ``encode``)."""
        lines = [f"v={self.version}", f"o={self.origin.encode()}", f"s={self.session_name}"]
        append = lines.append
        if self.information is not None:
            append(f"i={self.information}")
        if self.uri is not None:
            append(f"u={self.uri}")
        for e in self.emails:
            append(f"e={e}")
        for p in self.phones:
            append(f"p={p}")
        if self.connection is not None:
            append(f"c={self.connection.encode()}")
        for b in self.bandwidths:
            append(f"b={b.encode()}")
        for t in self.times:
            append(f"t={t.start} {t.stop}")
            for r in t.repeats:
                append(f"r={r}")
            if t.zone is not None:
                append(f"z={t.zone}")
        if self.key is not None:
            append(f"k={self.key}")
        if not blocks:
            for name, value in self.attributes:
                append(f"a={name}" if value is None else f"a={name}:{value}")
        elif self.attributes:
            append(_attribute_block(self.attributes))
        for m in self.media:
            m._encode_into(lines, blocks)
        return lines

    def to_text(self) -> str:
        """CRLF after every line, the last one included (RFC 8866 §5)."""
        return "\r\n".join(self._lines(True)) + "\r\n"

    def encode(self) -> bytes:
        return ("\r\n".join(self._lines(True)) + "\r\n").encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------
#
# A B2BUA parses two bodies per call (the offer and the answer), so the parser
# keeps the work per line small: lines are split and checked with str methods,
# the tokens every body repeats are looked up in a set before the regex, and
# the fields that repeat from body to body (c=, t=, a=rtpmap values) are
# parsed once and cached (the results are frozen values).  The field parsers
# raise ``_Bad`` with the reason only; ``parse_sdp`` knows the line it is on
# and turns that into the ``SdpError`` naming the line.

class _Bad(Exception):
    """A fault in the line being parsed: ``parse_sdp`` adds its number and text."""


def _line_error(raw: Sequence[str], index: int, why: str) -> SdpError:
    text = raw[index].rstrip("\r \t")
    shown = text if len(text) <= 80 else text[:77] + "..."
    return SdpError(f"SDP line {index + 1} {shown!r}: {why}")


# Tokens (RFC 8866 §9) that nearly every body has; others go through _TOKEN.
_COMMON_TOKENS = frozenset({
    "IN", "IP4", "IP6", "audio", "video", "text", "application", "message", "image",
    "rtpmap", "fmtp", "ptime", "maxptime", "sendrecv", "sendonly", "recvonly", "inactive",
    "rtcp", "rtcp-mux", "rtcp-fb", "ssrc", "mid", "group", "msid", "crypto", "setup",
    "fingerprint", "candidate", "ice-ufrag", "ice-pwd", "ice-options", "end-of-candidates",
    "label", "silenceSupp", "direction", "X-nat", "AS", "TIAS", "CT", "RR", "RS",
})
_COMMON_PROTOS = frozenset({"RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF",
                            "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF", "udp", "TCP"})
_SESSION_RANK = {kind: rank for rank, kind in enumerate(_SESSION_ORDER)}
_MEDIA_RANK = {kind: rank for rank, kind in enumerate(_MEDIA_ORDER)}


def _split_lines(raw: Sequence[str]) -> list[tuple[str, str]]:
    """``(type, value)`` per line; ``raw`` is the body split at LF."""
    lines = []
    for index, chunk in enumerate(raw):
        # CRLF per RFC 8866 §5; a bare LF is tolerated (§5: "SHOULD accept").
        stripped = chunk.rstrip("\r \t")
        if stripped[1:2] != "=" or not "a" <= stripped[:1] <= "z":
            raise _line_error(raw, index, "not a <type>=<value> line")
        value = stripped[2:]
        if not value:
            # "s= " is the RFC 8866 §5.3 spelling of "no name": keep it.
            value = chunk.rstrip("\r")[2:]
        if "\r" in value or "\x00" in value:
            raise _line_error(raw, index, "CR or NUL inside a value")
        lines.append((stripped[0], value))
    return lines


def _uint(text: str, what: str, maximum: int | None = None) -> int:
    if not _DIGITS.match(text):
        raise _Bad(f"{what} {text!r} is not a number")
    number = int(text)
    if maximum is not None and number > maximum:
        raise _Bad(f"{what} {number} is out of range")
    return number


def _token(text: str, what: str) -> str:
    if text not in _COMMON_TOKENS and not _TOKEN.match(text):
        raise _Bad(f"{what} {text!r} is not a token")
    return text


def _parse_origin(value: str) -> Origin:
    parts = value.split(" ")
    if len(parts) != 6 or "" in parts:
        raise _Bad("o= needs <username> <sess-id> <sess-version> <nettype> "
                   "<addrtype> <address>")
    username, sess_id, version, nettype, addrtype, address = parts
    if not _NON_WS.match(username) or not _NON_WS.match(address):
        raise _Bad("o= field is not a non-whitespace string")
    if not _DIGITS.match(sess_id):
        raise _Bad(f"sess-id {sess_id!r} is not a number")
    if not _DIGITS.match(version):
        raise _Bad(f"sess-version {version!r} is not a number")
    if nettype not in _COMMON_TOKENS:
        _token(nettype, "nettype")
    if addrtype not in _COMMON_TOKENS:
        _token(addrtype, "addrtype")
    return Origin(username, sess_id, int(version), nettype, addrtype, address)


# Phones repeat the same few addresses in every SDP; the ipaddress constructors
# cost ~5 µs each (3-4 per call in a calls profile), a cache lookup ~0.1 µs.
@lru_cache(maxsize=4096)
def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


@lru_cache(maxsize=4096)
def _valid_ip4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=4096)
def _valid_ip6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


# A phone sends the same c= line in every body: parsed once (errors are not cached).
@lru_cache(maxsize=4096)
def _parse_connection(value: str) -> Connection:
    parts = value.split(" ")
    if len(parts) != 3 or "" in parts:
        raise _Bad("c= needs <nettype> <addrtype> <connection-address>")
    nettype, addrtype, spec = parts
    _token(nettype, "nettype")
    _token(addrtype, "addrtype")
    if nettype != "IN" or addrtype not in ("IP4", "IP6"):
        # Other networks (RFC 8866 §5.7: "other values MAY be registered"): opaque.
        if not _NON_WS.match(spec):
            raise _Bad("connection address is not a non-whitespace string")
        return Connection(nettype, addrtype, spec)
    pieces = spec.split("/")
    address = pieces[0]
    if addrtype == "IP4":
        if not (_valid_ip4(address) or _FQDN.match(address)):
            raise _Bad(f"{address!r} is not an IP4 address or host name")
        if len(pieces) > 3:
            raise _Bad("IP4 connection address takes at most /<ttl>/<count>")
        ttl = _uint(pieces[1], "TTL", 255) if len(pieces) > 1 else None
        count = _uint(pieces[2], "address count") if len(pieces) > 2 else None
    else:
        if not (_valid_ip6(address) or _FQDN.match(address)):
            raise _Bad(f"{address!r} is not an IP6 address or host name")
        # RFC 8866 §5.7: IP6 multicast has no TTL, only /<number of addresses>.
        if len(pieces) > 2:
            raise _Bad("IP6 connection address takes at most /<count>")
        ttl = None
        count = _uint(pieces[1], "address count") if len(pieces) > 1 else None
    if count == 0:
        raise _Bad("address count must be at least 1")
    return Connection(nettype, addrtype, address, ttl, count)


def _parse_bandwidth(value: str) -> Bandwidth:
    bwtype, sep, amount = value.partition(":")
    if not sep:
        raise _Bad("b= needs <bwtype>:<bandwidth>")
    return Bandwidth(_token(bwtype, "bwtype"), _uint(amount, "bandwidth"))


@lru_cache(maxsize=256)
def _parse_time(value: str) -> TimeDescription:
    parts = value.split(" ")
    if len(parts) != 2:
        raise _Bad("t= needs <start-time> <stop-time>")
    return TimeDescription(_uint(parts[0], "start time"), _uint(parts[1], "stop time"))


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    if name not in _COMMON_TOKENS and not _TOKEN.match(name):
        raise _Bad(f"attribute name {name!r} is not a token")
    return (name, rest if sep else None)


def _parse_media(value: str) -> tuple[str, int, str, tuple[str, ...], int | None]:
    """The m= line's fields: media, port, proto, formats, port count."""
    parts = value.split(" ")
    if len(parts) < 3 or "" in parts:
        raise _Bad("m= needs <media> <port> <proto> <fmt> ...")
    media, port_spec, proto = parts[0], parts[1], parts[2]
    formats = tuple(parts[3:])
    if media not in _COMMON_TOKENS:
        _token(media, "media type")
    port_text, slash, count_text = port_spec.partition("/")
    port = _uint(port_text, "port", 65535)
    port_count = _uint(count_text, "port count") if slash else None
    if port_count == 0:
        raise _Bad("port count must be at least 1")
    if proto not in _COMMON_PROTOS and not _PROTO.match(proto):
        raise _Bad(f"proto {proto!r} is not <token>[/<token>]...")
    if not formats and port != 0:
        # Grammar requires one fmt; a *rejected* stream without one is common
        # enough in the field that refusing the whole body over it helps nobody.
        raise _Bad("m= has no format")
    if "RTP" in proto.upper().split("/"):
        for fmt in formats:
            # RFC 3551 §3: a payload type number
            if not _DIGITS.match(fmt):
                _token(fmt, "format")
                raise _Bad(f"RTP payload type {fmt!r} is not a number")
            if int(fmt) > 127:
                raise _Bad(f"RTP payload type {int(fmt)} is out of range")
    else:
        for fmt in formats:
            _token(fmt, "format")
    return media, port, proto, formats, port_count


# A phone's bodies repeat call after call but for the o= line (its sess-id and
# version) and the m= ports: ``parse_sdp`` parses a body once per distinct rest
# (its "template") and then only re-reads those fields (~3x less work a body).
# The split keeps every other character in the key, so that key and fields give
# back the text: the fields are all that differs from the body the template was
# parsed from, and they are checked as the full parse would.  Groups: o= prefix,
# o= value, m= prefix, port (non-zero, no /count: a rejected stream stays literal).
_VARYING = re.compile(r"(\no=)([^\r\n]*)|(\nm=(?:audio|video) )([1-9][0-9]{0,4})(?= )")
_TEMPLATES_MAX = 256          # distinct bodies kept (first in, first out)
_TEMPLATE_MAX_SIZE = 4096     # characters: larger bodies (ICE, video) are parsed each time


@dataclass(frozen=True, slots=True)
class _Template:
    sdp: SessionDescription
    origins: list[str | None]   # the split's o= value column (None on an m= match)
    ports: list[str | None]     # the split's port column (None on the o= match)
    media_of: tuple[int | None, ...]   # per match: the stream index of an m= match


_templates: dict[tuple[tuple[str, ...], tuple[str | None, ...]], _Template] = {}


# And the bodies themselves, when they repeat exactly (a re-INVITE refreshing the
# session, a phone or a load generator that keeps its o= line): no split at all.
_RECENT_MAX = 256
_recent: dict[bytes | str, SessionDescription] = {}


def parse_sdp(body: bytes | str, limits: SdpLimits = DEFAULT_SDP_LIMITS) -> SessionDescription:
    """Parse one SDP body (RFC 8866 §5); raises ``SdpError`` naming the offending line."""
    if len(body) > limits.max_size:
        raise SdpTooLarge(f"SDP of {len(body)} bytes exceeds {limits.max_size}")
    text = body.decode("utf-8", "surrogateescape") if isinstance(body, bytes) else body
    if limits is not DEFAULT_SDP_LIMITS or len(text) > _TEMPLATE_MAX_SIZE:
        return _parse_text(text, limits)
    sdp = _recent.get(body)
    if sdp is None:
        sdp = _parse_templated(text)
        if len(_recent) >= _RECENT_MAX:
            del _recent[next(iter(_recent))]
        _recent[body] = sdp
    return sdp


def _parse_templated(text: str) -> SessionDescription:
    """``_parse_text`` with the default limits, through the template of ``text``."""
    parts = _VARYING.split(text)
    key = (tuple(parts[0::5]), tuple(parts[3::5]))
    template = _templates.get(key)
    origins, ports = parts[2::5], parts[4::5]
    if template is not None:
        if origins == template.origins and ports == template.ports:
            return template.sdp
        try:
            return _from_template(template, origins, ports)
        except _Bad:
            return _parse_text(text, DEFAULT_SDP_LIMITS)   # raises, naming the line
    sdp = _parse_text(text, DEFAULT_SDP_LIMITS)
    media_of = tuple(text.count("\nm=", 0, match.start()) if match.group(3) else None
                     for match in _VARYING.finditer(text))
    if all(i is None or str(sdp.media[i].port) == ports[k] for k, i in enumerate(media_of)):
        if len(_templates) >= _TEMPLATES_MAX:
            del _templates[next(iter(_templates))]
        _templates[key] = _Template(sdp, origins, ports, media_of)
    return sdp


def _from_template(template: _Template, origins: list[str | None],
                   ports: list[str | None]) -> SessionDescription:
    """``template.sdp`` with the o= line and ports of another body of the same template."""
    sdp = template.sdp
    origin = sdp.origin
    value = origins[0]
    if value != template.origins[0]:
        assert value is not None   # the key says match 0 is the o= line
        # as _split_lines reads the line: trailing blanks dropped, no NUL
        value = value.rstrip(" \t") or value
        if "\x00" in value:
            raise _Bad("NUL in the o= line")
        origin = _parse_origin(value)
    streams = sdp.media
    if ports != template.ports:
        media = list(streams)
        for port_text, old, index in zip(ports, template.ports, template.media_of, strict=True):
            if port_text != old and index is not None and port_text is not None:
                port = int(port_text)
                if port > 65535:
                    raise _Bad("port out of range")
                m = media[index]
                media[index] = MediaDescription(m.media, port, m.proto, m.formats, m.port_count,
                                                m.title, m.connections, m.bandwidths, m.key,
                                                m.attributes)
        streams = tuple(media)
    return SessionDescription(
        origin, sdp.session_name, sdp.version, sdp.information, sdp.uri, sdp.emails,
        sdp.phones, sdp.connection, sdp.bandwidths, sdp.times, sdp.key, sdp.attributes,
        streams)


def _parse_text(text: str, limits: SdpLimits) -> SessionDescription:
    """``parse_sdp`` of a decoded body, every line read."""
    raw = text.split("\n")
    # The body ends with a line end; empty lines after it are harmless padding.
    while raw and raw[-1].strip("\r \t") == "":
        raw.pop()
    if len(raw) > limits.max_lines:
        raise SdpTooLarge(f"SDP has {len(raw)} lines, more than {limits.max_lines}")
    lines = _split_lines(raw)
    if not lines:
        raise SdpError("empty SDP body")
    index = 0   # the line being parsed, for the error
    try:
        first_kind, first_value = lines[0]
        if first_kind != "v":
            raise _Bad("an SDP body must start with v=")
        if first_value != "0":
            raise _Bad("only SDP version 0 is defined (RFC 8866 §5.1)")

        origin: Origin | None = None
        connection: Connection | None = None
        texts: dict[str, str] = {}      # s=, i=, u=, k=: single, raw
        emails: list[str] = []
        phones: list[str] = []
        bandwidths: list[Bandwidth] = []
        times: list[TimeDescription] = []
        attributes: list[Attribute] = []
        media: list[MediaDescription] = []
        rank = 0           # position reached in _SESSION_ORDER
        after_zone = False  # within a time description, z= closes it (RFC 8866 §9)
        count = len(lines)

        index = 1
        while index < count:
            kind, value = lines[index]
            if kind == "m":
                break
            if kind == "r" or kind == "z":
                if rank != _SESSION_RANK["t"] or after_zone:
                    raise _Bad(f"{kind}= must follow a t= or r= line")
                last = times[-1]
                if not value.strip():
                    raise _Bad(f"{kind}= is empty")
                if kind == "r":
                    times[-1] = TimeDescription(last.start, last.stop,
                                                (*last.repeats, value), last.zone)
                else:
                    times[-1] = TimeDescription(last.start, last.stop, last.repeats, value)
                    after_zone = True
                index += 1
                continue
            if kind not in _SESSION_RANK:
                # RFC 8866 §5: a type letter not understood makes the body unusable.
                raise _Bad(f"unknown or misplaced type {kind!r}")
            position = _SESSION_RANK[kind]
            if position < rank or (position == rank and kind not in _SESSION_REPEATABLE):
                raise _Bad(f"{kind}= is out of order or repeated (RFC 8866 §5)")
            rank = position
            if kind == "a":
                attributes.append(_parse_attribute(value))
            elif kind == "o":
                origin = _parse_origin(value)
            elif kind == "s" or kind == "i" or kind == "u" or kind == "k":
                texts[kind] = value
            elif kind == "c":
                connection = _parse_connection(value)
            elif kind == "t":
                times.append(_parse_time(value))
                after_zone = False
            elif kind == "e":
                emails.append(value)
            elif kind == "p":
                phones.append(value)
            elif kind == "b":
                bandwidths.append(_parse_bandwidth(value))
            if origin is None:
                raise _Bad("o= must follow v=")
            if kind != "o" and "s" not in texts:
                raise _Bad("s= must follow o=")
            index += 1

        end = index if index < count else count - 1
        if origin is None or "s" not in texts or not times:
            index = end
            raise _Bad("missing o= line" if origin is None
                       else "missing s= line" if "s" not in texts else "missing t= line")

        while index < count:
            if len(media) >= limits.max_media:
                raise SdpTooLarge(f"SDP has more than {limits.max_media} media descriptions")
            media_type, port, proto, formats, port_count = _parse_media(lines[index][1])
            connections: list[Connection] = []
            media_bandwidths: list[Bandwidth] = []
            media_attributes: list[Attribute] = []
            title: str | None = None
            key: str | None = None
            rank = 0
            index += 1
            while index < count:
                line_kind, value = lines[index]
                if line_kind == "m":
                    break
                if line_kind not in _MEDIA_RANK:
                    raise _Bad(f"unknown or misplaced type {line_kind!r} in a media description")
                position = _MEDIA_RANK[line_kind]
                if position < rank or (position == rank and line_kind not in _MEDIA_REPEATABLE):
                    raise _Bad(f"{line_kind}= is out of order or repeated (RFC 8866 §5)")
                rank = position
                if line_kind == "a":
                    # _parse_attribute, inline: most lines of a body are a= lines
                    name, sep, rest = value.partition(":")
                    if name not in _COMMON_TOKENS and not _TOKEN.match(name):
                        raise _Bad(f"attribute name {name!r} is not a token")
                    media_attributes.append((name, rest if sep else None))
                elif line_kind == "c":
                    connections.append(_parse_connection(value))
                elif line_kind == "i":
                    title = value
                elif line_kind == "b":
                    media_bandwidths.append(_parse_bandwidth(value))
                else:
                    key = value
                index += 1
            media.append(MediaDescription(
                media_type, port, proto, formats, port_count, title, tuple(connections),
                tuple(media_bandwidths), key, tuple(media_attributes)))

        if connection is None:
            for m in media:
                if not m.connections:
                    # RFC 8866 §5.7: c= at session level or in every media description.
                    index = end
                    raise _Bad("no c= line at session level or in every media description")
    except _Bad as exc:
        raise _line_error(raw, index, exc.args[0]) from None
    return SessionDescription(
        origin, texts["s"], 0, texts.get("i"), texts.get("u"), tuple(emails), tuple(phones),
        connection, tuple(bandwidths), tuple(times), texts.get("k"), tuple(attributes),
        tuple(media))


# Phones send the same few rtpmap values in every body (errors are not cached).
@lru_cache(maxsize=1024)
def parse_rtpmap(value: str) -> RtpMap:
    """``<pt> <encoding>/<clock rate>[/<channels>]`` (RFC 8866 §6.6)."""
    pt_text, _, spec = value.strip().partition(" ")
    pieces = spec.strip().split("/")
    if (not _DIGITS.match(pt_text) or int(pt_text) > 127 or len(pieces) not in (2, 3)
            or not pieces[0] or not _DIGITS.match(pieces[1])
            or (len(pieces) == 3 and not _DIGITS.match(pieces[2]))):
        raise SdpError(f"malformed rtpmap {value!r}")
    channels = int(pieces[2]) if len(pieces) == 3 else None
    return RtpMap(int(pt_text), pieces[0], int(pieces[1]), channels)


def parse_event_list(text: str) -> frozenset[int]:
    """RFC 4733 §7.1.1 event list, e.g. ``0-15,66,70``; malformed items are skipped."""
    events: set[int] = set()
    for item in text.replace(" ", "").split(","):
        low, dash, high = item.partition("-")
        if not _DIGITS.match(low) or (dash and not _DIGITS.match(high)):
            continue
        first, last = int(low), int(high) if dash else int(low)
        if first <= last <= 255:
            events.update(range(first, last + 1))
    return frozenset(events)


@lru_cache(maxsize=4096)   # the engine's own address, every call (OriginState.create)
def addrtype_of(address: str) -> str:
    """``IP6`` for an IPv6 literal, else ``IP4`` (RFC 8866 §5.7)."""
    return "IP6" if _valid_ip6(address) else "IP4"


# ---------------------------------------------------------------------------
# Offer/answer (RFC 3264)
# ---------------------------------------------------------------------------

def answer_direction(offered: Direction, local: Direction = Direction.SENDRECV) -> Direction:
    """RFC 3264 §6.1: the answerer sends only if the offerer receives, and vice versa.

    ``local`` is what the answerer wants (e.g. SENDONLY while it holds the call).
    """
    return Direction.of(offered.receives and local.sends, offered.sends and local.receives)


def hold_direction(current: Direction) -> Direction:
    """RFC 3264 §8.4: sendrecv → sendonly, recvonly → inactive (others unchanged)."""
    return Direction.of(current.sends, False)


def resume_direction(current: Direction) -> Direction:
    """Undo ``hold_direction``: sendonly → sendrecv, inactive → recvonly."""
    return Direction.of(current.sends, True)


def set_direction(sdp: SessionDescription, direction: Direction,
                  index: int | None = None) -> SessionDescription:
    """Set the direction of stream ``index`` (every stream if None) at media level.

    A session-level direction is pushed down to the other streams first, so
    that changing one stream does not change another's effective direction.
    """
    session_dir = sdp.direction_attribute
    streams = []
    for i, m in enumerate(sdp.media):
        if index is None or i == index:
            streams.append(m.with_direction(direction))
        elif session_dir is not None and m.direction_attribute is None:
            streams.append(m.with_direction(session_dir))
        else:
            streams.append(m)
    return replace(sdp, attributes=_without_direction(sdp.attributes), media=tuple(streams))


@dataclass(frozen=True, slots=True)
class Codec:
    """A codec the answerer supports; ``fmtp`` replaces the offer's parameters if set."""

    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None


PCMU = Codec("PCMU", 8000)
PCMA = Codec("PCMA", 8000)
G722 = Codec("G722", 8000)   # RFC 3551 §4.5.2: 8000 in SDP, 16 kHz sampling
G729 = Codec("G729", 8000)


@dataclass(frozen=True, slots=True)
class SelectedFormat:
    """One offered format kept in the answer, with the a=rtpmap and a=fmtp it gets."""

    fmt: str
    rtpmap: RtpMap
    fmtp: str | None = None


def select_formats(offer: MediaDescription, supported: Sequence[Codec], *,
                   telephone_event: bool = True) -> tuple[SelectedFormat, ...]:
    """The offered formats the answer keeps, in the offerer's order.

    RFC 3264 §6.1: answer formats are a subset of the offer's with the same
    payload type numbers.  telephone-event (RFC 4733 §7.1.1) is kept at the
    clock rates of the kept codecs.  Returns () when no real codec is common:
    telephone-event or comfort noise alone carry no audio.
    """
    kept: list[SelectedFormat] = []
    events: list[SelectedFormat] = []
    seen: set[str] = set()
    for fmt in offer.formats:
        if not _DIGITS.match(fmt) or fmt in seen:
            continue
        seen.add(fmt)
        pt = int(fmt)
        mapping = offer.rtpmap(pt)
        if mapping is None:
            continue
        if telephone_event and mapping.encoding.lower() == TELEPHONE_EVENT:
            events.append(SelectedFormat(fmt, mapping, offer.fmtp(pt)))
            continue
        for codec in supported:
            if mapping.matches(codec.name, codec.clock_rate, codec.channels):
                params = codec.fmtp if codec.fmtp is not None else offer.fmtp(pt)
                kept.append(SelectedFormat(fmt, mapping, params))
                break
    rates = {f.rtpmap.clock_rate for f in kept
             if f.rtpmap.encoding.lower() not in AUXILIARY_ENCODINGS}
    if not rates:
        return ()
    kept.extend(f for f in events if f.rtpmap.clock_rate in rates)
    position = {fmt: i for i, fmt in reversed(list(enumerate(offer.formats)))}
    return tuple(sorted(kept, key=lambda f: position[f.fmt]))


def stream_attributes(formats: Sequence[SelectedFormat], direction: Direction,
                      ptime: int | None = None) -> tuple[Attribute, ...]:
    """The a= lines of a stream we write: rtpmap (and fmtp) per kept format, ptime,
    and an explicit direction (RFC 3264 §5.1, §6.1)."""
    attrs: list[Attribute] = []
    for selected in formats:
        attrs.append(("rtpmap", selected.rtpmap.encode()))
        if selected.fmtp:
            attrs.append(("fmtp", f"{selected.fmt} {selected.fmtp}"))
    if ptime is not None:
        attrs.append(("ptime", str(ptime)))
    attrs.append((direction.value, None))
    return tuple(attrs)


@dataclass(frozen=True, slots=True)
class StreamResult:
    """What the answer did with one offered stream."""

    index: int
    media: str
    accepted: bool
    formats: tuple[str, ...] = ()
    direction: Direction | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """An RFC 3264 §6 answer with at least one accepted stream."""

    sdp: SessionDescription
    streams: tuple[StreamResult, ...]


@dataclass(frozen=True, slots=True)
class NoCommonMedia:
    """No offered stream is acceptable: the caller answers 488 (RFC 3264 §6)."""

    streams: tuple[StreamResult, ...]

    @property
    def detail(self) -> str:
        return "; ".join(f"m-line {s.index} ({s.media}): {s.reason}" for s in self.streams) \
            or "offer has no media"

    def to_error(self) -> SdpNotAcceptable:
        return SdpNotAcceptable(self.detail)


def negotiate(offer: SessionDescription, supported: Sequence[Codec], *, origin: Origin,
              address: str, ports: Sequence[int], local_direction: Direction = Direction.SENDRECV,
              media_types: Collection[str] = ("audio",), protos: Collection[str] = ("RTP/AVP",),
              telephone_event: bool = True, ptime: int | None = None,
              session_name: str = "-") -> Answer | NoCommonMedia:
    """Answer ``offer`` (RFC 3264 §6) for media anchored at ``address``.

    ``ports[i]`` is the local RTP port for offered stream ``i`` (unused for a
    rejected one).  Every offered m-line gets an m-line in the answer, in the
    same order; a rejected one has port 0 and echoes the offered formats
    (RFC 3264 §6).  The answer keeps the offer's t= line (§6).
    """
    if len(ports) < len(offer.media):
        raise ValueError(f"{len(offer.media)} offered streams but {len(ports)} ports")
    wanted_types = {t.lower() for t in media_types}
    wanted_protos = {p.upper() for p in protos}
    streams: list[MediaDescription] = []
    results: list[StreamResult] = []
    for i, m in enumerate(offer.media):
        reason = None
        chosen: tuple[SelectedFormat, ...] = ()
        if m.is_rejected:
            reason = "rejected in the offer"
        elif m.media.lower() not in wanted_types:
            reason = f"media type {m.media} not supported"
        elif m.proto.upper() not in wanted_protos:
            reason = f"transport {m.proto} not supported"
        else:
            chosen = select_formats(m, supported, telephone_event=telephone_event)
            if not chosen:
                offered = ", ".join(f"{r.encoding}/{r.clock_rate}" for r in m.rtpmaps().values())
                reason = f"no common codec (offered {offered or 'none'})"
        if reason is not None:
            # RFC 3264 §6: a rejected stream keeps its place, port zero.
            streams.append(MediaDescription(m.media, 0, m.proto, m.formats))
            results.append(StreamResult(i, m.media, False, reason=reason))
            continue
        direction = answer_direction(offer.media_direction(i), local_direction)
        attrs = stream_attributes(chosen, direction, ptime)
        formats = tuple(selected.fmt for selected in chosen)
        streams.append(MediaDescription(m.media, ports[i], m.proto, formats,
                                        attributes=tuple(attrs)))
        results.append(StreamResult(i, m.media, True, formats, direction))
    if not any(r.accepted for r in results):
        return NoCommonMedia(tuple(results))
    sdp = SessionDescription(origin=origin, session_name=session_name,
                             connection=Connection.for_address(address),
                             times=offer.times, media=tuple(streams))
    return Answer(sdp, tuple(results))


def rewrite_connection(sdp: SessionDescription, address: str, ports: Sequence[int], *,
                       strip_ice: bool = True) -> SessionDescription:
    """Anchor media on ``address`` and ``ports[i]`` for stream ``i`` (the B2BUA relay).

    Replaces c= where it is (session and/or media level; adds a session-level
    one if a stream lacks any), the m= ports (a port-0 stream stays rejected),
    drops a=rtcp (RFC 3605: the relay's RTCP is on port + 1, the default) and,
    with ``strip_ice``, the ICE attributes (RFC 8839), which describe the far
    end's addresses.  A stream on legacy ``c=0.0.0.0`` hold keeps its hold as
    a direction attribute (RFC 3264 §8.4), since its address is replaced.  The
    o= line is left alone: stamp the result with the leg's ``OriginState``.
    """
    if len(ports) < len(sdp.media):
        raise ValueError(f"{len(sdp.media)} streams but {len(ports)} ports")
    conn = Connection.for_address(address)
    dropped = {"rtcp"} | (ICE_ATTRIBUTES if strip_ice else set())
    streams = []
    for i, m in enumerate(sdp.media):
        held_legacy = (not m.is_rejected and (c := sdp.media_connection(i)) is not None
                       and c.is_unspecified)
        new = m.without_attributes(dropped)
        new = replace(new, port=m.port if m.is_rejected else ports[i], port_count=None,
                      connections=(conn,) if m.connections else ())
        if held_legacy:
            new = new.with_direction(hold_direction(sdp.media_direction(i)))
        streams.append(new)
    needs_session = sdp.connection is not None or any(not m.connections for m in streams)
    attributes = sdp.attributes
    if strip_ice:
        attributes = tuple(a for a in attributes if a[0].lower() not in ICE_ATTRIBUTES)
    return replace(sdp, connection=conn if needs_session else None, attributes=attributes,
                   media=tuple(streams))


@dataclass(frozen=True, slots=True)
class OriginState:
    """One leg's o= line across successive offers and answers (RFC 3264 §5, §8).

    The B2BUA is the SDP originator on each leg, so it keeps its own username,
    sess-id and address there and never forwards the other leg's o= line.  The
    version goes up by one when the description changes and stays the same
    when it does not (a session refresh re-INVITE, §8).
    """

    origin: Origin
    last: SessionDescription | None = None

    @classmethod
    def create(cls, *, sess_id: int | str, address: str, username: str = "-",
               sess_version: int | None = None) -> OriginState:
        """``sess_id`` is chosen by the caller (RFC 3264 §5 suggests an NTP timestamp)."""
        version = int(sess_id) if sess_version is None else sess_version
        return cls(Origin(username, str(sess_id), version, "IN", addrtype_of(address), address))

    def stamp(self, sdp: SessionDescription) -> tuple[OriginState, SessionDescription]:
        """``sdp`` with this leg's o= line, and the state to use for the next one."""
        candidate = _with_origin(sdp, self.origin)
        if self.last is None or candidate == self.last:
            return OriginState(self.origin, candidate), candidate
        o = self.origin
        origin = Origin(o.username, o.sess_id, o.sess_version + 1, o.nettype, o.addrtype,
                        o.address)
        bumped = _with_origin(sdp, origin)
        return OriginState(origin, bumped), bumped


def _with_origin(sdp: SessionDescription, origin: Origin) -> SessionDescription:
    """``replace(sdp, origin=origin)``, by the constructor (twice per call: ~5 µs less)."""
    return SessionDescription(
        origin, sdp.session_name, sdp.version, sdp.information, sdp.uri, sdp.emails,
        sdp.phones, sdp.connection, sdp.bandwidths, sdp.times, sdp.key, sdp.attributes,
        sdp.media)


def is_refresh(previous: SessionDescription, current: SessionDescription) -> bool:
    """True when ``current`` repeats ``previous``'s o= exactly: no change (RFC 3264 §8)."""
    return previous.origin == current.origin
