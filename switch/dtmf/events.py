"""Events of the DTMF layer: frozen, slotted, keyword-only values (DESIGN.md rule 4).

Times are seconds on the caller's clock: the clock of the ``now`` values the
driver passes in.  Nothing here reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Method(enum.Enum):
    """How a keypress reached switch."""

    INBAND = "inband"
    """Tones in the audio (decoded G.711), found by the in-band detector."""
    RFC4733 = "rfc4733"
    """RTP telephone-event packets (RFC 4733 §2)."""
    INFO = "info"
    """A SIP INFO request with an application/dtmf-relay or application/dtmf body."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InbandToneStarted:
    """The in-band detector confirmed a digit on a channel slot."""

    slot: int
    digit: str
    start: float
    """Estimated start of the tone (s), earlier than the time of the report."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InbandToneEnded:
    """A confirmed in-band digit stopped."""

    slot: int
    digit: str
    start: float
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TelephoneEventStarted:
    """First packet seen of an RFC 4733 event (one keypress)."""

    ssrc: int
    timestamp: int
    """RTP timestamp of the event: its identity within the SSRC (RFC 4733 §2.5.1.2)."""
    digit: str | None
    """Keypad digit, or None for a non-keypad event code."""
    code: int
    volume: int
    start: float
    """Time the first packet of the event arrived (s)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TelephoneEventEnded:
    """An RFC 4733 event ended: by its E bit, by a timeout, or by a newer event."""

    ssrc: int
    timestamp: int
    digit: str | None
    code: int
    start: float
    duration: float
    """Duration in seconds from the event's duration field (RFC 4733 §2.5.1.5)."""
    timed_out: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DigitDetected:
    """One keypress on one leg, reported once whichever ways it arrived."""

    digit: str
    method: Method
    """The first method that reported it."""
    start: float
    """Estimated start of the keypress (s)."""
    duration: float | None
    """Known duration (s) when the source gives it up front (SIP INFO), else None."""
