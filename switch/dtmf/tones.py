"""DTMF tone plan (ITU-T Q.23) and the RFC 4733 event codes for keypad digits.

The keypad is a 4 x 4 grid: the row selects the low-group frequency, the
column the high-group frequency (Q.23 table 1).  RFC 4733 §3.2 numbers the
events 0-9, then ``*`` = 10, ``#`` = 11 and ``A``-``D`` = 12-15.
"""

from __future__ import annotations

from typing import Final

SAMPLE_RATE: Final = 8000

LOW_GROUP_HZ: Final = (697.0, 770.0, 852.0, 941.0)
HIGH_GROUP_HZ: Final = (1209.0, 1336.0, 1477.0, 1633.0)

# KEYPAD[row][column]
KEYPAD: Final = ("123A", "456B", "789C", "*0#D")

DIGITS: Final = "0123456789*#ABCD"
"""Every keypad digit, in RFC 4733 §3.2 event-code order."""


def digit_frequencies(digit: str) -> tuple[float, float]:
    """The (low, high) frequency pair of one keypad digit."""
    for row, keys in enumerate(KEYPAD):
        column = keys.find(digit.upper())
        if column >= 0:
            return LOW_GROUP_HZ[row], HIGH_GROUP_HZ[column]
    raise ValueError(f"not a DTMF digit: {digit!r}")


def event_code(digit: str) -> int:
    """RFC 4733 §3.2 event code of a keypad digit."""
    code = DIGITS.find(digit.upper())
    if len(digit) != 1 or code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


def event_digit(code: int) -> str | None:
    """Keypad digit of an RFC 4733 §3.2 event code; None for the non-keypad events."""
    if 0 <= code < len(DIGITS):
        return DIGITS[code]
    return None
