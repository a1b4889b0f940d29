"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), and opaque absolute URIs.

Values are kept in their escaped form as received; ``unescape`` gives the
character string for comparisons (RFC 3261 §19.1.4: characters other than
those in the "reserved" set are equivalent to their %-encoding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote

from switch.sip.errors import ParseError, UnsupportedUriScheme

# RFC 3261 §25.1: unreserved / escaped / user-unreserved characters.
_USER_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
_PASSWORD_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*$")
_HOSTNAME = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*"
                       r"[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?$")
_IPV4 = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
_IPV6_REF = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
_PARAM_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*$")
_TEL_CHARS = re.compile(r"^[0-9A-Fa-f*#+\-.()pPwW]+$")


def unescape(text: str) -> str:
    return unquote(text, errors="surrogateescape") if "%" in text else text


def _valid_host(host: str) -> bool:
    if _IPV6_REF.match(host):
        return True
    if _IPV4.match(host):
        return all(int(part) <= 255 for part in host.split("."))
    return bool(_HOSTNAME.match(host))


@dataclass(frozen=True, slots=True)
class SipUri:
    """``sip:`` or ``sips:`` URI. ``params`` keeps order; a flag parameter has value None."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.params:
            if key.lower() == lname:
                return value if value is not None else ""
        return None

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(key.lower() == lname for key, _ in self.params)

    @property
    def user_unescaped(self) -> str | None:
        return unescape(self.user) if self.user is not None else None

    @property
    def host_unbracketed(self) -> str:
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def transport(self) -> str:
        return (self.param("transport") or ("tls" if self.scheme == "sips" else "udp")).lower()

    def with_params(self, params: tuple[tuple[str, str | None], ...]) -> SipUri:
        return SipUri(self.scheme, self.host, self.user, self.password, self.port, params,
                      self.headers)

    def __str__(self) -> str:
        # In-place str += rather than list appends and a join: URIs are short.
        text = f"{self.scheme}:"
        if self.user is not None:
            text += self.user
            if self.password is not None:
                text += ":" + self.password
            text += "@"
        text += self.host
        if self.port is not None:
            text += f":{self.port}"
        for key, value in self.params:
            text += f";{key}" if value is None else f";{key}={value}"
        if self.headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.headers)
        return text


@dataclass(frozen=True, slots=True)
class TelUri:
    """``tel:`` URI (RFC 3966): a global (+digits) or local number with parameters."""

    number: str
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def digits(self) -> str:
        """The number without visual separators (RFC 3966 §5.1.1)."""
        return "".join(ch for ch in self.number if ch not in "-.()")

    def __str__(self) -> str:
        out = ["tel:", self.number]
        for key, value in self.params:
            out.append(f";{key}" if value is None else f";{key}={value}")
        return "".join(out)


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """Any other scheme (RFC 3261 §25.1 absoluteURI): kept opaque."""

    scheme: str
    rest: str = field(default="")

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | AbsoluteUri


def _split_params(text: str, what: str) -> tuple[tuple[str, str | None], ...]:
    if not text:
        return ()
    params: list[tuple[str, str | None]] = []
    for part in text.split(";"):
        if not part:
            raise ParseError(f"empty parameter in {what}")
        name, eq, value = part.partition("=")
        if not _PARAM_CHARS.match(name) or (eq and not _PARAM_CHARS.match(value)):
            raise ParseError(f"bad parameter {part!r} in {what}")
        params.append((name, value if eq else None))
    return tuple(params)


def split_hostport(hostport: str, what: str) -> tuple[str, int | None]:
    """``host[:port]`` with IPv6 references (RFC 3261 §25.1 hostport); the host
    is returned as written (brackets kept) for the caller to validate."""
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ParseError(f"unterminated IPv6 reference in {what}")
        host, port_text = hostport[:close + 1], hostport[close + 1:]
        if port_text and not port_text.startswith(":"):
            raise ParseError(f"bad host in {what}")
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise ParseError(f"no host in {what}")
    if not port_text:
        return host, None
    if (not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5
            or int(port_text) > 65535):
        raise ParseError(f"bad port {port_text!r} in {what}")
    return host, int(port_text)


def parse_sip_uri(text: str) -> SipUri:
    scheme, colon, rest = text.partition(":")
    lscheme = scheme.lower()
    if not colon or lscheme not in ("sip", "sips"):
        raise ParseError(f"not a SIP URI: {text!r}")
    headers: tuple[tuple[str, str], ...] = ()
    # userinfo may itself hold '?', '/', ';' (RFC 3261 §25.1 user-unreserved), and
    # '@' cannot appear unescaped after it, so the last '@' ends the userinfo.
    at = rest.rfind("@")
    userinfo_text = rest[:at] if at >= 0 else None
    rest = rest[at + 1:] if at >= 0 else rest
    if "?" in rest:
        rest, _, header_text = rest.partition("?")
        pairs = []
        for part in header_text.split("&"):
            hname, eq, hvalue = part.partition("=")
            if not hname or not eq:
                raise ParseError(f"bad URI header {part!r}")
            pairs.append((hname, hvalue))
        headers = tuple(pairs)
    user: str | None = None
    password: str | None = None
    hostpart = rest
    if userinfo_text is not None:
        user, pcolon, pw = userinfo_text.partition(":")
        if pcolon:
            if not _PASSWORD_CHARS.match(pw):
                raise ParseError(f"bad password in URI {text!r}")
            password = pw
        if not user or not _USER_CHARS.match(user):
            raise ParseError(f"bad user part in URI {text!r}")
    hostport, _, param_text = hostpart.partition(";")
    host, port = split_hostport(hostport, f"URI {text!r}")
    if not _valid_host(host):
        raise ParseError(f"bad host in URI {text!r}")
    return SipUri(lscheme, host, user, password, port, _split_params(param_text, text), headers)


@lru_cache(maxsize=8192)
def parse_uri(text: str) -> Uri:
    """Parse any URI a SIP message may carry; unknown schemes become AbsoluteUri.

    Cached: the values are frozen, and the same URIs come back on every
    refresh (To, Contact, Request-URI of a phone's REGISTER).  Errors are not
    cached (lru_cache does not keep exceptions)."""
    if any(ch in text for ch in " \t\r\n<>"):
        raise ParseError(f"whitespace or angle bracket in URI {text!r}")
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme):
        raise ParseError(f"not a URI: {text!r}")
    lscheme = scheme.lower()
    if lscheme in ("sip", "sips"):
        return parse_sip_uri(text)
    if lscheme == "tel":
        number, _, param_text = rest.partition(";")
        if not number or not _TEL_CHARS.match(number):
            raise ParseError(f"bad tel URI {text!r}")
        return TelUri(number, _split_params(param_text, text))
    return AbsoluteUri(lscheme, rest)


def parse_request_uri(text: str) -> Uri:
    """The Request-URI of a request we are to handle ourselves.

    Unknown schemes parse (RFC 4475 §3.3.2) and are refused with 416 by the caller.
    """
    uri = parse_uri(text)
    if isinstance(uri, AbsoluteUri):
        raise UnsupportedUriScheme(f"unsupported Request-URI scheme {uri.scheme!r}")
    return uri
