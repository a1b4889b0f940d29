"""Call control (B2BUA): calls made of legs and bridges, routing, media anchoring.

Modules: ``controller`` (``CallController``: the INVITE usage of the SIP
service and ``switch.model.CallControl``), ``model`` (``Call``, ``Leg``,
``Exchange`` and the call/leg state tables), ``offers`` (SDP across a bridge:
anchor offers and answers on the engine, media config of a leg), ``routing``
(dialed user part, RFC 3261 §16.7 best response, result labels), ``media``
(the ``MediaPort`` protocol after docs/MEDIA-API.md, its adapter for
``switch.media.MediaEngine``, a signalling-only stand-in).

What the transfer, DTMF and recording work builds on:

* ``CallController.call(id)`` / ``.calls``: live ``Call`` objects.  A call has
  ``caller`` (the UAS leg), ``forks`` (the UAC legs placed to the callee),
  ``legs`` (all of them by id) and ``bridges`` (leg id ↔ peer leg id).
  ``Call.peer(leg)`` is who a leg is bridged to.
* A ``Leg`` has its ``InviteSession`` (``session``; its ``dialog``), its media
  leg (``media``: ``MediaLegHandle`` with ``id``/``local_port``; pass it to
  ``MediaEngine.add_tap``/``play`` for DTMF and recording), the SDP last sent
  and received (``local_sdp``/``remote_sdp``), ``party`` (extension or
  number), ``user`` (its ``switch.config.User``) and ``state`` (``LegState``).
* Leg operations: ``hold(leg)`` (unbridge + re-INVITE ``a=sendonly``),
  ``resume(leg)`` (re-INVITE ``a=sendrecv``), ``bridge(a, b)`` /
  ``unbridge(leg)`` (media relay pairs; both legs of one call),
  ``hang_up_leg(leg)`` (the call goes on without it).  Refusals raise
  ``switch.model.ConflictError``.
* In-dialog requests the INVITE usage does not handle (REFER, INFO, NOTIFY)
  go to handlers registered with ``register_in_dialog(method, handler)``;
  without one, INFO/OPTIONS get 200 and the rest 501.
* ``CallController._party_left`` is the policy when a party of an answered
  call leaves (today: the call ends); transfers replace it for their legs.
* Still to come: originating a new leg into an existing call (blind/warm
  transfer targets), re-offering two legs to a common codec before bridging
  them, REFER/NOTIFY.
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
