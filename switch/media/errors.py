"""The media package's errors (DESIGN.md rule 5: raise deep, convert once).

Call control catches ``MediaUnavailable`` when it opens a leg and answers the
INVITE with 503 (no media port) — the media layer itself knows no SIP.
"""

from __future__ import annotations

__all__ = ["MalformedRtp", "MediaError", "MediaUnavailable"]


class MediaError(Exception):
    """Something the media engine cannot do."""


class MediaUnavailable(MediaError):
    """No RTP/RTCP port pair could be bound from the configured range."""


class MalformedRtp(MediaError):
    """Bytes that are not an RTP packet (RFC 3550 §5.1)."""
