"""One keypress, one report: merges in-band, RFC 4733 and SIP INFO digits of one leg.

A phone that sends RFC 4733 (or INFO) often leaves the tones in the audio
too, so the same keypress reaches switch twice: first as a packet, then —
after the in-band detector's run-in delay of some 30-40 ms — from the audio,
or the other way round.  PBXs that de-duplicate by arrival time count it
twice.  The collector compares *start* times instead: every source passes
the keypress's estimated start (the in-band detector dates it back to the
tone's first window, RFC 4733 to its first packet), and a report of the same
digit from another method whose start is within ``tolerance`` of an
already reported keypress not yet claimed by that method is the same
keypress.  Each earlier keypress can absorb at most one report per method,
so a digit pressed twice quickly is still two keypresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switch.dtmf.events import (
    DigitDetected,
    InbandToneStarted,
    Method,
    TelephoneEventStarted,
)
from switch.dtmf.info import InfoDigit

__all__ = ["DigitCollector"]


@dataclass(slots=True)
class _Keypress:
    digit: str
    start: float
    methods: set[Method] = field(default_factory=set)


class DigitCollector:
    """Per-leg merger of the three DTMF sources (sans-I/O; times passed in)."""

    def __init__(self, tolerance: float = 0.25, horizon: float = 5.0) -> None:
        self.tolerance = tolerance
        """Largest start-time difference (s) of two reports of one keypress."""
        self.horizon = horizon
        """How long a keypress is remembered (s)."""
        self._recent: list[_Keypress] = []

    def inband(self, event: InbandToneStarted, now: float) -> DigitDetected | None:
        return self.observe(event.digit, Method.INBAND, event.start, now)

    def rfc4733(self, event: TelephoneEventStarted, now: float) -> DigitDetected | None:
        if event.digit is None:
            return None
        return self.observe(event.digit, Method.RFC4733, event.start, now)

    def info(self, digit: InfoDigit, now: float) -> DigitDetected | None:
        # an INFO request is sent when the key goes down; it arrives after signalling delay
        return self.observe(digit.digit, Method.INFO, now, now, digit.duration)

    def observe(
        self,
        digit: str,
        method: Method,
        start: float,
        now: float,
        duration: float | None = None,
    ) -> DigitDetected | None:
        """Report a keypress unless another method already reported it."""
        self._recent = [k for k in self._recent if now - k.start <= self.horizon]
        best: _Keypress | None = None
        for press in self._recent:
            if (
                press.digit == digit
                and method not in press.methods
                and abs(press.start - start) <= self.tolerance
                and (best is None or abs(press.start - start) < abs(best.start - start))
            ):
                best = press
        if best is not None:
            best.methods.add(method)
            return None
        self._recent.append(_Keypress(digit, start, {method}))
        return DigitDetected(digit=digit, method=method, start=start, duration=duration)
