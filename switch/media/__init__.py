"""Anchored media: RTP/RTCP per leg, relay between bridged legs, taps, playback.

The API call control codes against is docs/MEDIA-API.md.
"""

from __future__ import annotations

from switch.media.engine import MediaEngine, MediaLeg, MediaStats
from switch.media.errors import MalformedRtp, MediaError, MediaUnavailable
from switch.media.events import MediaEvent, MediaTimedOut, PlaybackFinished, RemoteLatched
from switch.media.model import AudioSource, AudioTap, Codec, LegConfig, Pcm

__all__ = [
    "AudioSource",
    "AudioTap",
    "Codec",
    "LegConfig",
    "MalformedRtp",
    "MediaEngine",
    "MediaError",
    "MediaEvent",
    "MediaLeg",
    "MediaStats",
    "MediaTimedOut",
    "MediaUnavailable",
    "Pcm",
    "PlaybackFinished",
    "RemoteLatched",
]
