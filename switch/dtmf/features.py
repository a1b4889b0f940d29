"""Feature-code matcher: digit sequences such as ``*1{number}#`` become actions.

Theory of operation
-------------------
Digits from one leg (after :class:`~switch.dtmf.collector.DigitCollector`)
enter :meth:`FeatureMatcher.digit`.  The matcher decides, digit by digit,
what the other party hears: a digit that could still be the beginning of a
configured code is *held*; once the held digits complete a code they are
consumed (never passed on) and an action is produced; once they can no
longer become a code, the oldest held digit is *released* (passed through)
and the rest is matched again, since it may itself start a code (``**1``
releases one ``*``).  Held digits older than the inter-digit timeout are
released too (the caller gave up typing a code) — or dropped, if so
configured.

Patterns are literal digits (``0-9 * # A-D``) and at most one ``{number}``
placeholder: one to ``max_number`` digits 0-9, ended by the literal that
follows it (``*1{number}#``), or by the timeout when nothing follows.

Machine (table below): IDLE holds nothing; HOLDING has held digits and a
timer.  Inputs are classified per digit: HOLD (still a viable prefix),
COMPLETE (a code matched), DEAD (no code can match: release), and TIMEOUT.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from switch.dtmf.tones import DIGITS

__all__ = [
    "BlindTransferRequested",
    "DEFAULT_FEATURE_CODES",
    "DigitsReleased",
    "FeatureCode",
    "FeatureInvoked",
    "FeatureMatcher",
    "MatcherState",
    "WarmTransferRequested",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureCode:
    name: str
    """Action name, e.g. ``blind_transfer``."""
    pattern: str
    """E.g. ``*1{number}#``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureInvoked:
    """A configured code was dialled; its digits were consumed."""

    name: str
    number: str | None
    digits: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BlindTransferRequested:
    """``blind_transfer`` code: hand the call to ``number`` (DESIGN.md, Transfers)."""

    number: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmTransferRequested:
    """``warm_transfer`` code: consult ``number`` with the original call held."""

    number: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DigitsReleased:
    """Digits to pass on to the other party, in order."""

    digits: str
    at: float


Action = FeatureInvoked | BlindTransferRequested | WarmTransferRequested
Output = Action | DigitsReleased

DEFAULT_FEATURE_CODES: Final = (
    FeatureCode(name="blind_transfer", pattern="*1{number}#"),
    FeatureCode(name="warm_transfer", pattern="*2{number}#"),
    FeatureCode(name="warm_transfer_complete", pattern="*3"),
    FeatureCode(name="warm_transfer_cancel", pattern="*4"),
    FeatureCode(name="voicemail_transfer", pattern="*5{number}#"),
)


class MatcherState(enum.Enum):
    IDLE = "idle"
    HOLDING = "holding"


class MatcherInput(enum.Enum):
    HOLD = "hold"
    COMPLETE = "complete"
    DEAD = "dead"
    TIMEOUT = "timeout"


class _Do(enum.Enum):
    HOLD = "hold"
    CONSUME = "consume"
    RELEASE = "release"
    FLUSH = "flush"
    """Release (or drop) everything held: the inter-digit timer fired."""


TRANSITIONS: Final[dict[tuple[MatcherState, MatcherInput], tuple[MatcherState, _Do]]] = {
    (MatcherState.IDLE, MatcherInput.HOLD): (MatcherState.HOLDING, _Do.HOLD),
    (MatcherState.IDLE, MatcherInput.COMPLETE): (MatcherState.IDLE, _Do.CONSUME),
    (MatcherState.IDLE, MatcherInput.DEAD): (MatcherState.IDLE, _Do.RELEASE),
    (MatcherState.HOLDING, MatcherInput.HOLD): (MatcherState.HOLDING, _Do.HOLD),
    (MatcherState.HOLDING, MatcherInput.COMPLETE): (MatcherState.IDLE, _Do.CONSUME),
    (MatcherState.HOLDING, MatcherInput.DEAD): (MatcherState.IDLE, _Do.RELEASE),
    (MatcherState.HOLDING, MatcherInput.TIMEOUT): (MatcherState.IDLE, _Do.FLUSH),
}
"""IDLE has no timer, so TIMEOUT cannot reach it.  After RELEASE the rest is matched again."""


@dataclass(frozen=True, slots=True)
class _Compiled:
    code: FeatureCode
    prefix: str
    suffix: str
    has_number: bool


def _compile(code: FeatureCode) -> _Compiled:
    m = re.fullmatch(r"([0-9*#A-D]*)(\{number\})?([0-9*#A-D]*)", code.pattern)
    if m is None or not (m.group(1) or m.group(2)):
        raise ValueError(f"bad feature-code pattern {code.pattern!r}")
    prefix, number, suffix = m.group(1), m.group(2), m.group(3)
    if number and suffix and suffix[0].isdigit():
        raise ValueError(f"{code.pattern!r}: the literal after {{number}} must not be 0-9")
    return _Compiled(code, prefix, suffix, number is not None)


class FeatureMatcher:
    """Matches one leg's digit stream against feature codes (sans-I/O)."""

    def __init__(
        self,
        codes: tuple[FeatureCode, ...] = DEFAULT_FEATURE_CODES,
        *,
        inter_digit_timeout: float = 3.0,
        max_number: int = 20,
        release_on_timeout: bool = True,
    ) -> None:
        self._codes = [_compile(c) for c in codes]
        self.inter_digit_timeout = inter_digit_timeout
        self.max_number = max_number
        self.release_on_timeout = release_on_timeout
        self.state = MatcherState.IDLE
        self._held = ""
        self._last = 0.0

    @property
    def held(self) -> str:
        """Digits held back, waiting to see whether they form a code."""
        return self._held

    @property
    def first_digits(self) -> str:
        """Digits a code may begin with (all of 0-9 for a code opening with
        ``{number}``): a digit outside them, with nothing held, is released at once."""
        first: set[str] = set()
        for c in self._codes:
            first.update(c.prefix[:1] if c.prefix else "0123456789")
        return "".join(d for d in DIGITS if d in first)

    def get_timer(self) -> float | None:
        return self._last + self.inter_digit_timeout if self._held else None

    def handle_timer(self, now: float) -> list[Output]:
        if not self._held or now < self._last + self.inter_digit_timeout:
            return []
        out: list[Output] = []
        # a code whose number ends at the timeout (no literal after {number})
        matched = self._complete_at_timeout(self._held)
        if matched is not None:
            self._step(MatcherInput.COMPLETE)
            out.append(self._action(matched, self._held, now))
            self._held = ""
            return out
        self._step(MatcherInput.TIMEOUT)
        if self.release_on_timeout:
            out.append(DigitsReleased(digits=self._held, at=now))
        self._held = ""
        return out

    def digit(self, digit: str, now: float) -> list[Output]:
        """Take the next digit of the leg; returns releases and actions, in order."""
        if len(digit) != 1 or digit.upper() not in DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        out = self.handle_timer(now)
        self._last = now
        pending = self._held + digit.upper()
        self._held = ""
        released = ""
        while pending:
            kind, matched = self._classify(pending)
            do = self._step(kind)
            if do is _Do.HOLD:
                self._held = pending
                break
            if do is _Do.CONSUME:
                if released:
                    out.append(DigitsReleased(digits=released, at=now))
                    released = ""
                assert matched is not None
                out.append(self._action(matched, pending, now))
                break
            released += pending[0]
            pending = pending[1:]
        if released:
            out.append(DigitsReleased(digits=released, at=now))
        return out

    def _step(self, matcher_input: MatcherInput) -> _Do:
        try:
            self.state, do = TRANSITIONS[(self.state, matcher_input)]
        except KeyError:
            raise AssertionError(f"feature matcher: {matcher_input} in {self.state}") from None
        return do

    def _classify(self, digits: str) -> tuple[MatcherInput, _Compiled | None]:
        viable = False
        for c in self._codes:
            status = self._match(c, digits)
            if status == "complete":
                return MatcherInput.COMPLETE, c
            viable |= status == "prefix"
        return (MatcherInput.HOLD if viable else MatcherInput.DEAD), None

    def _match(self, c: _Compiled, digits: str) -> str:
        """'complete', 'prefix' (could still match) or 'no'."""
        n = len(c.prefix)
        if len(digits) <= n:
            if not c.prefix.startswith(digits):
                return "no"
            return (
                "complete" if len(digits) == n and not c.has_number and not c.suffix else "prefix"
            )
        if not digits.startswith(c.prefix):
            return "no"
        rest = digits[n:]
        if not c.has_number:
            if c.suffix.startswith(rest):
                return "complete" if rest == c.suffix else "prefix"
            return "no"
        number_len = 0
        while number_len < len(rest) and rest[number_len].isdigit():
            number_len += 1
        if number_len > self.max_number:
            return "no"
        tail = rest[number_len:]
        if not tail:
            return "prefix"
        if number_len == 0:
            return "no"
        if c.suffix.startswith(tail):
            return "complete" if tail == c.suffix else "prefix"
        return "no"

    def _complete_at_timeout(self, digits: str) -> _Compiled | None:
        for c in self._codes:
            if c.has_number and not c.suffix and digits.startswith(c.prefix):
                number = digits[len(c.prefix) :]
                if number.isdigit() and len(number) <= self.max_number:
                    return c
        return None

    @staticmethod
    def _action(c: _Compiled, digits: str, now: float) -> Action:
        number: str | None = None
        if c.has_number:
            end = len(digits) - len(c.suffix)
            number = digits[len(c.prefix) : end]
        if c.code.name == "blind_transfer" and number:
            return BlindTransferRequested(number=number, at=now)
        if c.code.name == "warm_transfer" and number:
            return WarmTransferRequested(number=number, at=now)
        return FeatureInvoked(name=c.code.name, number=number, digits=digits, at=now)
