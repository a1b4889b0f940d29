"""The one error tree of the SIP core (DESIGN.md rule 5).

Errors are raised deep, where the problem is found, and carry the SIP status
the layer boundary should answer with. The endpoint catches them once and
turns them into a response (or a silent drop, for a message no response can
be formed for), a log line and a metric.
"""

from __future__ import annotations


class SipError(Exception):
    """A protocol error that maps to a SIP final response."""

    status: int = 500
    reason: str = "Server Internal Error"

    def __init__(self, detail: str, *, status: int | None = None, reason: str | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason
        # Extra header fields the response must carry (Unsupported, Accept, Min-Expires...).
        self.headers = headers


class ParseError(SipError):
    """The bytes are not a well-formed SIP message (RFC 3261 §25)."""

    status = 400
    reason = "Bad Request"


class MessageTooLarge(ParseError):
    """Over the configured size limits (RFC 3261 §21.4.12 413 / §21.5.8 513)."""

    status = 513
    reason = "Message Too Large"


class VersionNotSupported(ParseError):
    """A SIP-Version other than SIP/2.0 (RFC 3261 §21.5.7)."""

    status = 505
    reason = "Version Not Supported"


class UnsupportedUriScheme(SipError):
    """A Request-URI scheme the element does not handle (RFC 3261 §8.2.2.1)."""

    status = 416
    reason = "Unsupported URI Scheme"


class TransactionDoesNotExist(SipError):
    """A request inside a dialog or transaction we do not know (RFC 3261 §12.2.2)."""

    status = 481
    reason = "Call/Transaction Does Not Exist"
