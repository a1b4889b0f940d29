"""Call control (B2BUA): calls made of legs and bridges, routing, media anchoring.

``CallController`` (``switch.call.controller``) is the entry point; the call
model (``Call``, ``Leg``, their state tables) is in ``switch.call.model``, the
SDP relay rules in ``switch.call.offers``, the media relay protocol in
``switch.call.media``.
"""

from __future__ import annotations

from switch.call.controller import CallController, NotImplementedYet, SipPort, Timers
from switch.call.media import Codec, LegConfig, MediaLegHandle, MediaPort, MediaUnavailable
from switch.call.model import Call, CallResult, CallState, Exchange, Leg, LegState

__all__ = [
    "Call",
    "CallController",
    "CallResult",
    "CallState",
    "Codec",
    "Exchange",
    "Leg",
    "LegConfig",
    "LegState",
    "MediaLegHandle",
    "MediaPort",
    "MediaUnavailable",
    "NotImplementedYet",
    "SipPort",
    "Timers",
]
