"""Values call control hands to the media engine, and the tap protocol."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["DIRECTIONS", "AudioSource", "AudioTap", "Codec", "LegConfig", "Pcm"]

Pcm = npt.NDArray[np.int16]
"""Linear 16-bit samples at 8 kHz."""

AudioSource = Pcm | Iterable[Pcm]
"""What ``play`` sends: one array, or an iterable (generator) of arrays of any length."""

DIRECTIONS: Final = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Codec:
    """An RTP payload format as negotiated (RFC 3551 §6; RFC 4733 for telephone-event)."""

    name: str
    clock_rate: int = 8000
    channels: int = 1

    @property
    def key(self) -> tuple[str, int, int]:
        """Encoding names are case-insensitive (RFC 4566 §6, rtpmap)."""
        return self.name.upper(), self.clock_rate, self.channels


@dataclass(frozen=True, slots=True, kw_only=True)
class LegConfig:
    """The negotiated SDP of one leg, seen from the engine."""

    remote: tuple[str, int] | None
    """The phone's RTP address from SDP; None, port 0 or 0.0.0.0 while held (RFC 3264 §8.4)."""
    payload_types: Mapping[int, Codec] = field(default_factory=dict)
    """In SDP order: the first audio codec is the one ``play`` encodes with."""
    telephone_event_pt: int | None = None
    direction: str = "sendrecv"
    """What WE may do on this leg: we send if "sendrecv"/"sendonly"; the phone is
    expected to send (and may time out) only if "sendrecv"."""


class AudioTap(Protocol):
    """A batched per-tick consumer of one leg's received media (DTMF detection, recording)."""

    def on_audio(self, leg_id: str, pcm: Pcm, now: float) -> None:
        """The decoded G.711 samples received since the previous tick (int16, 8 kHz)."""

    def on_telephone_event(self, leg_id: str, payload: bytes, ssrc: int, timestamp: int,
                           marker: bool, now: float) -> None:
        """One RFC 4733 packet (negotiated telephone-event PT), ``now`` = its arrival time."""
