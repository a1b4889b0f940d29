"""DTMF the engine sends towards a phone: RFC 4733 events and G.711 tones (sans I/O).

``MediaEngine.send_digits`` regenerates digits a feature-code matcher let go
(docs/MEDIA-API.md "Digit gate").  An RFC 4733 digit is one event
(``switch.dtmf.telephone_event_packets``: marker on the first packet,
updates, the end packet three times) of ``DIGIT_ON`` seconds, every packet
with the event's start timestamp; in-band digits are Q.23 tone pairs of the
same length, followed by ``DIGIT_OFF`` seconds of silence, played like
``MediaEngine.play`` (20 ms G.711 frames).  Levels: −9 dBm0 low group,
−7 dBm0 high group (2 dB twist, within Q.24's limits).
"""

from __future__ import annotations

from typing import Final

import numpy as np

from switch.dtmf.g711 import DBM0_SINE_PEAK
from switch.dtmf.tones import SAMPLE_RATE, digit_frequencies
from switch.media.model import Pcm

__all__ = ["DIGIT_OFF", "DIGIT_ON", "dtmf_tones"]

DIGIT_ON: Final = 0.1
"""Seconds a regenerated digit lasts (RFC 4733 event duration, or tone length)."""
DIGIT_OFF: Final = 0.1
"""Seconds between two regenerated digits."""
LOW_DBM0: Final = -9.0
HIGH_DBM0: Final = -7.0


def dtmf_tones(digits: str, *, on: float = DIGIT_ON, off: float = DIGIT_OFF) -> Pcm:
    """Linear 8 kHz samples of ``digits``: each tone pair ``on`` s, then ``off`` s silence."""
    n_on = int(round(on * SAMPLE_RATE))
    n_off = int(round(off * SAMPLE_RATE))
    t = np.arange(n_on) / SAMPLE_RATE
    low_amp = DBM0_SINE_PEAK * 10 ** (LOW_DBM0 / 20)
    high_amp = DBM0_SINE_PEAK * 10 ** (HIGH_DBM0 / 20)
    out = np.zeros(len(digits) * (n_on + n_off), dtype=np.int16)
    for k, digit in enumerate(digits):
        low, high = digit_frequencies(digit)
        tone = low_amp * np.sin(2 * np.pi * low * t) + high_amp * np.sin(2 * np.pi * high * t)
        at = k * (n_on + n_off)
        out[at:at + n_on] = np.rint(tone).astype(np.int16)
    return out
