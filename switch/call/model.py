"""The call model: a call is legs plus the bridges between them.

Theory of operation
-------------------
A ``Leg`` is one back-to-back half of a call: one phone, one SIP dialog with
it (its ``InviteSession``, which owns the ``Dialog``), and one media leg on the
relay.  The leg that brought the INVITE in is the call's *caller* leg (we
are its UAS); legs we place are UAC legs (the forks of the callee, later a
transfer target or a consultation).

A ``Call`` owns its legs and a symmetric set of *bridges* (leg ↔ leg pairs
whose media is relayed).  Membership can change without tearing anything
down: a leg can be unbridged (held, parked, being transferred), bridged to
another leg, or added while the others stay up.  This is what blind/warm
transfer, voicemail and recording build on: they add legs and re-bridge
them; the SIP side of each leg stays its own business.

Two machines, each a table (an input a table does not list is an error,
``InvalidTransition``):

* the call's life cycle (``CallState``): ROUTING (INVITE accepted, targets
  being resolved and their media opened) → RINGING (forks out) → ANSWERED
  (2xx sent to the caller) → ENDED; any state may end.
* each leg's (``LegState``), seen from call control, not from SIP (the
  ``InviteSession`` below it has the SIP detail): INCOMING (UAS, INVITE
  received) or CALLING (UAC, INVITE sent) → RINGING (a 18x sent/received) →
  CONNECTED (2xx) → ENDING (we hung it up: CANCEL/BYE/rejection out) → ENDED
  (its session reported ``SessionTerminated``).  A leg ended by its phone
  goes straight to ENDED.

A leg that is no longer live is still *known* (found by its dialog, its
transactions answered) until its session is TERMINATED, plus 64*T1 for a UAC
leg whose 2xx may still be retransmitted; it is then *released*: forgotten,
its media port back in the pool.  Whatever the phones do (no ACK, no answer
to our BYE or CANCEL, a send failure), a leg is released at most
``64*T1 + T2`` after the last request it sent while ending (the ending guard).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum, auto
from typing import Protocol

from switch.call.media import MediaLegHandle
from switch.config import User
from switch.fsm import FastEnum
from switch.sip.dialog import InvalidTransition
from switch.sip.invite import InviteSession, Role
from switch.sip.sdp import Direction, OriginState, SessionDescription
from switch.sip.transaction import Destination

__all__ = [
    "CALL_TRANSITIONS",
    "LEG_TRANSITIONS",
    "Call",
    "CallInput",
    "CallResult",
    "CallState",
    "Exchange",
    "Leg",
    "LegInput",
    "LegState",
    "TimerHandle",
]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


# --- the call's life cycle --------------------------------------------------------------

class CallState(FastEnum):
    ROUTING = auto()
    RINGING = auto()
    ANSWERED = auto()
    ENDED = auto()


class CallInput(FastEnum):
    FORKED = auto()      # INVITEs sent to the target's contacts
    ANSWERED = auto()    # the caller got its 2xx
    END = auto()


CALL_TRANSITIONS: dict[tuple[CallState, CallInput], CallState] = {
    (CallState.ROUTING, CallInput.FORKED): CallState.RINGING,
    (CallState.ROUTING, CallInput.END): CallState.ENDED,
    (CallState.RINGING, CallInput.ANSWERED): CallState.ANSWERED,
    (CallState.RINGING, CallInput.END): CallState.ENDED,
    (CallState.ANSWERED, CallInput.END): CallState.ENDED,
    (CallState.ENDED, CallInput.END): CallState.ENDED,
}


class CallResult(StrEnum):
    """``switch_calls_total{result}`` and the call record's result."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELLED = "cancelled"


# --- a leg's life cycle --------------------------------------------------------------------

class LegState(FastEnum):
    INCOMING = auto()
    CALLING = auto()
    RINGING = auto()
    CONNECTED = auto()
    ENDING = auto()
    ENDED = auto()


class LegInput(FastEnum):
    PROGRESS = auto()    # 18x
    ANSWERED = auto()    # 2xx
    HANGUP = auto()      # we end it (CANCEL, reject, BYE)
    ENDED = auto()       # its session terminated


LEG_TRANSITIONS: dict[tuple[LegState, LegInput], LegState] = {
    (LegState.INCOMING, LegInput.PROGRESS): LegState.RINGING,
    (LegState.INCOMING, LegInput.ANSWERED): LegState.CONNECTED,
    (LegState.INCOMING, LegInput.HANGUP): LegState.ENDING,
    (LegState.INCOMING, LegInput.ENDED): LegState.ENDED,
    (LegState.CALLING, LegInput.PROGRESS): LegState.RINGING,
    (LegState.CALLING, LegInput.ANSWERED): LegState.CONNECTED,
    (LegState.CALLING, LegInput.HANGUP): LegState.ENDING,
    (LegState.CALLING, LegInput.ENDED): LegState.ENDED,
    (LegState.RINGING, LegInput.PROGRESS): LegState.RINGING,
    (LegState.RINGING, LegInput.ANSWERED): LegState.CONNECTED,
    (LegState.RINGING, LegInput.HANGUP): LegState.ENDING,
    (LegState.RINGING, LegInput.ENDED): LegState.ENDED,
    (LegState.CONNECTED, LegInput.HANGUP): LegState.ENDING,
    (LegState.CONNECTED, LegInput.ENDED): LegState.ENDED,
    # A 2xx that crossed our CANCEL is ACKed and BYEd by the session (§9.1).
    (LegState.ENDING, LegInput.PROGRESS): LegState.ENDING,
    (LegState.ENDING, LegInput.ANSWERED): LegState.ENDING,
    (LegState.ENDING, LegInput.HANGUP): LegState.ENDING,
    (LegState.ENDING, LegInput.ENDED): LegState.ENDED,
    (LegState.ENDED, LegInput.HANGUP): LegState.ENDED,
    (LegState.ENDED, LegInput.ENDED): LegState.ENDED,
}


@dataclass(slots=True, eq=False)
class Exchange:
    """An offer from ``offerer`` passed on to ``answerer``, whose answer is awaited."""

    offerer: Leg
    answerer: Leg
    offer: SessionDescription       # as the offerer sent it
    index: int                      # the anchored m-line


@dataclass(slots=True, eq=False)
class Leg:
    id: str
    call: Call
    role: Role
    party: str                      # extension or number shown for this party
    user: User | None
    destination: Destination        # where requests on this leg go (the phone's source)
    session: InviteSession
    state: LegState
    origin: OriginState
    media: MediaLegHandle | None = None
    local_sdp: SessionDescription | None = None    # last SDP we sent on this leg
    remote_sdp: SessionDescription | None = None   # last SDP its phone sent
    stream: int = 0                                # the anchored m-line index
    exchange: Exchange | None = None
    invite_txn: int | None = None                  # UAS: the INVITE's server transaction
    status: int | None = None                      # final response (UAC: received)
    timer: TimerHandle | None = None
    timer_at: float | None = None
    early_media: bool = False
    acked_at: float | None = None                  # UAC: first 2xx to its INVITE
    held_by_us: bool = False                       # we put its phone on hold
    offered_on_request: bool = False               # our offer in a 2xx to its offerless
                                                   # re-INVITE awaits the ACK's answer
    # A direction the bridged party chose (hold/resume in an ACK's answer) that could
    # not be offered to this leg at once (an exchange was in progress): offered as
    # soon as the leg can take a re-INVITE again (CallController._run).
    pending_direction: Direction | None = None
    # The ending guard: once a leg stops being live it must be released by this
    # instant (pushed back by every request sent while ending), whatever its phone
    # does; see CallController._leg_overdue.
    release_by: float | None = None
    guard: TimerHandle | None = None
    # (Call-ID, local tag): the leg's key in call control's dialog index, as filed.
    dialog_key: tuple[str, str] = ("", "")

    def advance(self, event: LegInput) -> LegState:
        next_state = LEG_TRANSITIONS.get((self.state, event))
        if next_state is None:
            raise InvalidTransition(f"leg {self.id}: {event.name} in {self.state.name}")
        self.state = next_state
        return next_state

    @property
    def live(self) -> bool:
        return self.state not in (LegState.ENDING, LegState.ENDED)

    @property
    def held(self) -> bool:
        """Its phone put the media on hold (RFC 3264 §8.4)."""
        sdp = self.remote_sdp
        return sdp is not None and sdp.is_hold()


@dataclass(slots=True, eq=False)
class Call:
    id: str
    caller: Leg | None = None
    dialed: str = ""                               # the Request-URI user part
    target: User | None = None
    state: CallState = CallState.ROUTING
    legs: dict[str, Leg] = field(default_factory=dict)
    bridges: dict[str, str] = field(default_factory=dict)   # leg id -> peer leg id
    forks: list[Leg] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)  # fork leg id -> final status
    created_at: float = 0.0                        # loop clock
    created_wall: float = 0.0                      # Unix time
    answered_wall: float | None = None
    ended_wall: float | None = None
    result: CallResult | None = None
    cause: str | None = None
    ring_timer: TimerHandle | None = None
    duration_timer: TimerHandle | None = None      # ``[calls] max_duration``, from the answer
    task: asyncio.Task[None] | None = None
    recording: bool = False

    def advance(self, event: CallInput) -> CallState:
        next_state = CALL_TRANSITIONS.get((self.state, event))
        if next_state is None:
            raise InvalidTransition(f"call {self.id}: {event.name} in {self.state.name}")
        self.state = next_state
        return next_state

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    def add(self, leg: Leg) -> None:
        self.legs[leg.id] = leg

    def peer(self, leg: Leg) -> Leg | None:
        other = self.bridges.get(leg.id)
        return self.legs.get(other) if other is not None else None

    def bridge(self, a: Leg, b: Leg) -> None:
        """Pair ``a`` and ``b`` (each leaves whatever bridge it was in)."""
        self.unbridge(a)
        self.unbridge(b)
        self.bridges[a.id] = b.id
        self.bridges[b.id] = a.id

    def unbridge(self, leg: Leg) -> Leg | None:
        """Take ``leg`` out of its bridge; returns its former peer."""
        other = self.bridges.pop(leg.id, None)
        if other is None:
            return None
        self.bridges.pop(other, None)
        return self.legs.get(other)

    def live_legs(self) -> list[Leg]:
        return [leg for leg in self.legs.values() if leg.live]
