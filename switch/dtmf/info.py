"""DTMF in SIP INFO bodies (RFC 6086 INFO packages in practice).

Two bodies are common:

* ``application/dtmf-relay`` (Cisco/SIP INFO relay, no RFC): lines
  ``Signal=<digit>`` and ``Duration=<ms>``, in any case, with or without
  spaces around ``=``, CRLF or LF line ends.  Some phones send ``10`` and
  ``11`` for ``*`` and ``#`` (the RFC 4733 §3.2 event codes); 12-15 are read
  as ``A``-``D`` the same way.
* ``application/dtmf``: the digit alone (optionally the same codes).

Parsing is bounded: bodies longer than ``MAX_BODY`` are refused.  Errors are
:class:`InfoBodyError`, carrying the SIP status the request should get.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from switch.dtmf.tones import DIGITS

__all__ = ["InfoBodyError", "InfoDigit", "MAX_BODY", "info_body", "parse_info_body"]

MAX_BODY: Final = 1024
DTMF_RELAY: Final = "application/dtmf-relay"
DTMF: Final = "application/dtmf"


class InfoBodyError(ValueError):
    """A DTMF INFO body switch cannot use."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        """SIP status for the INFO request: 400 for a bad body, 415 for an unknown type."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InfoDigit:
    digit: str
    duration: float | None
    """Seconds, when the body says (``Duration=`` is in milliseconds)."""


def _signal(value: str) -> str:
    value = value.strip()
    if value.isdigit() and len(value) == 2 and 10 <= int(value) <= 15:
        return DIGITS[int(value)]
    if len(value) == 1 and value.upper() in DIGITS:
        return value.upper()
    raise InfoBodyError(f"not a DTMF signal: {value!r}")


def parse_info_body(content_type: str, body: bytes | str) -> InfoDigit:
    """The keypress in an INFO body of ``content_type`` (parameters ignored)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if len(body) > MAX_BODY:
        raise InfoBodyError(f"DTMF INFO body of {len(body)} bytes", 413)
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InfoBodyError("DTMF INFO body is not text") from None
    else:
        text = body
    if media_type == DTMF:
        return InfoDigit(digit=_signal(text), duration=None)
    if media_type != DTMF_RELAY:
        raise InfoBodyError(f"unsupported INFO body type {media_type!r}", 415)
    signal: str | None = None
    duration: float | None = None
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise InfoBodyError(f"malformed dtmf-relay line {line!r}")
        name = name.strip().lower()
        if name == "signal":
            signal = _signal(value)
        elif name == "duration":
            try:
                ms = int(value.strip())
            except ValueError:
                raise InfoBodyError(f"malformed Duration {value!r}") from None
            if not 0 <= ms <= 60_000:
                raise InfoBodyError(f"Duration out of range: {ms}")
            duration = ms / 1000.0
        # other parameters (e.g. Volume) are ignored
    if signal is None:
        raise InfoBodyError("dtmf-relay body without Signal")
    return InfoDigit(digit=signal, duration=duration)


def info_body(digit: str, media_type: str, duration_ms: int) -> bytes:
    """The body of an INFO carrying ``digit`` as ``media_type`` (``application/dtmf``:
    the digit alone; otherwise ``application/dtmf-relay`` lines) — what
    ``parse_info_body`` reads."""
    if media_type == DTMF:
        return digit.encode()
    return f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode()
