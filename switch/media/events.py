"""Events the media engine reports to call control (DESIGN.md rule 4)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MediaEvent", "MediaTimedOut", "PlaybackFinished", "RemoteLatched"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaTimedOut:
    """No RTP received for ``inactivity_timeout`` seconds while the leg expected media
    (direction sendrecv and a remote address).  Reported once per silence."""

    leg_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteLatched:
    """The leg now sends to the source its RTP came from, which is not the SDP
    address (symmetric RTP, RFC 4961: a phone behind NAT)."""

    leg_id: str
    address: tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackFinished:
    """An ``AudioSource`` given to ``play`` ran out (not sent after ``stop_playing``)."""

    leg_id: str


MediaEvent = MediaTimedOut | RemoteLatched | PlaybackFinished
