"""Call control: the B2BUA that turns one INVITE into a call of bridged legs.

Theory of operation
-------------------
``CallController`` is the transaction user above the SIP endpoint for
everything INVITE-related.  The SIP service hands it endpoint events
(``receive_invite``, ``receive_in_dialog``, ``receive_ack``,
``receive_cancel``, ``receive_response``, ``transaction_timed_out``,
``transport_error``) and media events (``media_timed_out``); it drives one
``InviteSession`` per leg (``switch.sip.invite``) and executes what the
sessions return: ``SendRequest`` → a client transaction towards the leg's
phone, ``SendResponse`` → the server transaction, ``SendAck`` → straight to
the transport with a fresh Via (RFC 3261 §13.2.2.4), ``SendCancel`` → a
CANCEL transaction (§9.1).  The sessions' events are call-control decisions:
an answer from the callee becomes the caller's 2xx, a re-INVITE on one side
becomes a re-INVITE on the other, a ``SessionTerminated`` ends the call.

Routing (issue 3): the caller authenticates with digest (407, RFC 3261
§22.3); the Request-URI user part is an extension or a number of one user
(``Config.lookup``); every registered contact of that user gets its own
INVITE, its own leg, Call-ID and media port (parallel forking); the first
2xx wins and the other forks are CANCELed (a 2xx that crosses the CANCEL is
ACKed and BYEd by its session).  When every fork fails the caller gets the
best of their responses (RFC 3261 §16.7).  The caller ID the callee sees is
the caller's user record (From and P-Asserted-Identity, RFC 3325), never what
the phone put in its From.  Requests to a phone go to the address its
REGISTER (or INVITE) came from, so phones behind NAT are reached (RFC 3581);
in-dialog requests of a dialog with a route set (a proxy Record-Routed it) go
to the route set's first hop instead (§12.2.1.1, §8.1.2; ``_next_hop``).

Time: the sessions get ``clock()`` as ``now``; each leg keeps one timer at
its session's ``get_timer()``; the call keeps one ring timer.  ``Timers`` is
the loop's ``call_at`` in production and a fake clock in tests.  Opening
media legs is the only awaited step (the relay binds sockets); it runs in a
task per call, through ``spawn``.

Failure isolation (DESIGN.md rule 5): every entry point runs one call's
handling inside ``_Guard``: a ``SipError`` a session raises is answered with
its status; any other exception is logged with the call's id, counted
(``switch_call_errors_total``), and ends that call (500 to an unanswered
caller, BYE to answered legs).  No exception leaves the controller.

Nothing is kept forever (DESIGN.md rule 5): hanging up a call hangs up each
leg on its own (one failing does not spare the others, nor the gauge); a
request the driver cannot send is the far end's 503 (§8.1.3.1), told on the
next loop turn; an observer or the relay failing to close a leg does not keep
its port.  Every leg that stops being live is watched by the *ending guard*:
released at most 64*T1 + T2 after the last request it sent (BYE, CANCEL) even
if its phone never answers and no transaction timeout comes (counted in
``forced_releases``, logged ``call.leg_forced_release``).  A BYE for a leg
that is ending (its session over, the leg not yet released) or was released
less than 64*T1 ago gets 200, not 481 (§15.1.2).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol

from structlog.typing import FilteringBoundLogger

from switch.call.media import LegConfig, MediaLegHandle, MediaPort, MediaUnavailable
from switch.call.model import (
    Call,
    CallInput,
    CallResult,
    CallState,
    Exchange,
    Leg,
    LegInput,
    LegState,
    TimerHandle,
)
from switch.call.offers import (
    anchor_answer,
    anchor_offer,
    check_offer,
    leg_config,
    local_answer,
    local_offer,
    offer_in_use,
    stream_direction,
)
from switch.call.routing import best_response, classify, target_user_part
from switch.config import Config, User
from switch.events import CALL_ANSWERED, CALL_CREATED, CALL_ENDED, FEATURE_INVOKED
from switch.logs import call_context, reset_call_id, set_call_id
from switch.metrics import Metrics
from switch.model import (
    CallView,
    ConflictError,
    ControlError,
    NotFoundError,
    PartyView,
    RecordingView,
    TransferView,
    VoicemailView,
)
from switch.sip.auth import AuthOutcome, AuthResult
from switch.sip.dialog import route_hop
from switch.sip.errors import SipError
from switch.sip.headers import quote, tag_of
from switch.sip.invite import (
    AnswerReceived,
    EndReason,
    GlareDetected,
    InDialogRequestReceived,
    InviteConfig,
    InviteSession,
    ModificationFailed,
    ModificationRetryDue,
    OfferReceived,
    OfferRequested,
    Output,
    ProgressReceived,
    Role,
    SendAck,
    SendCancel,
    SendRequest,
    SendResponse,
    SessionEstablished,
    SessionTerminated,
    State,
)
from switch.sip.location import Binding
from switch.sip.message import Headers, Message, Request, Response, make_response
from switch.sip.sdp import (
    Direction,
    OriginState,
    SdpError,
    SdpNotAcceptable,
    SessionDescription,
    parse_sdp,
    set_direction,
)
from switch.sip.session_timer import SessionTimerConfig
from switch.sip.transaction import Destination, Source, new_branch, new_tag
from switch.store.base import CallRecord, PartyRecord

__all__ = [
    "CallController",
    "InDialogHandler",
    "LegMediaObserver",
    "NotImplementedYet",
    "RecordSink",
    "SipPort",
    "Timers",
]


class NotImplementedYet(ControlError):
    """A control the engine does not offer yet (transfers, recording, voicemail)."""

    status = 501
    code = "not_implemented"


class SipPort(Protocol):
    """The SIP driver as call control uses it (``SipDriver`` plus its address)."""

    def respond(self, transaction_id: int, response: Response) -> None: ...

    def send_request(self, request: Request, destination: Destination) -> int: ...

    def send_stateless(self, message: Message, destination: Destination) -> None: ...

    def local_address(self) -> tuple[str, int]: ...


class Timers(Protocol):
    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


class Authenticator(Protocol):
    def authenticate(self, request: Request, source_ip: str, now: float) -> AuthResult: ...


class RecordSink(Protocol):
    def save_snapshot(self, call_id: str, snapshot: Callable[[], CallRecord]) -> None:
        """Queue ``snapshot()``'s record for ``call_id`` (replacing a queued one)."""


class EventSink(Protocol):
    def wants(self, type: str) -> bool:
        """Whether publishing ``type`` would reach anyone (else its fields are not built)."""

    def publish(self, type: str, **fields: object) -> Any: ...


class LegMediaObserver(Protocol):
    """Told when a leg's anchored media is configured (after every offer/answer) and
    when it is closed: the DTMF wiring (switch/call/dtmf.py) taps legs with it."""

    def leg_media_configured(self, leg: Leg, config: LegConfig) -> None: ...

    def leg_media_closed(self, leg: Leg) -> None: ...


InDialogHandler = Callable[[Leg, Request, int], Response | None]
"""Answers an in-dialog request this usage does not handle (INFO, REFER, ...);
returns the response, or None when it answers later itself."""

Contacts = Callable[[str, float], list[Binding]]
Spawn = Callable[[Coroutine[Any, Any, None]], object]

_ALLOW_IN_DIALOG = frozenset({"OPTIONS", "INFO"})
_RNG = random.Random()
_DESTINATIONS_KEPT = 4096


class _Guard:
    """``with _Guard(controller, call):`` around everything done for one call (a
    class, not a ``@contextmanager`` generator: it is entered ~7 times per call and
    this costs a third).  Inside it the call's id is in every log line; on the way
    out an ``Exception`` other than a ``ControlError`` (a refusal meant for the
    API caller) is swallowed after the call is failed by ``_guard_failed``."""

    __slots__ = ("_call", "_controller", "_token")

    def __init__(self, controller: CallController, call: Call) -> None:
        self._controller = controller
        self._call = call

    def __enter__(self) -> None:
        self._token = set_call_id(self._call.id)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> bool:
        try:
            if exc is None or not isinstance(exc, Exception) or isinstance(exc, ControlError):
                return False
            self._controller._guard_failed(self._call, exc)
            return True
        finally:
            reset_call_id(self._token)


class _Lingering:
    """A lingering leg's release, due in ``CallController._lingering``: its ``timer``."""

    __slots__ = ("cancelled", "leg")

    def __init__(self, leg: Leg) -> None:
        self.leg = leg
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class CallController:
    """Implements ``switch.model.CallControl`` and the INVITE usage of the SIP service."""

    def __init__(self, config: Config, *, sip: SipPort, media: MediaPort, timers: Timers,
                 clock: Callable[[], float], authenticator: Authenticator,
                 contacts: Contacts, bus: EventSink, metrics: Metrics,
                 log: FilteringBoundLogger, records: RecordSink | None = None,
                 spawn: Spawn | None = None, wall: Callable[[], float] = time.time) -> None:
        self._config = config
        self._sip = sip
        self._media = media
        self._timers = timers
        self._clock = clock
        self._wall = wall
        self._auth = authenticator
        self._contacts = contacts
        self._bus = bus
        self._metrics = metrics
        self._log = log
        self._records = records
        self._spawn: Spawn = spawn or _create_task
        calls = config.calls
        self._invite_config = InviteConfig(
            t1=config.sip.t1_seconds, t2=config.sip.t2_seconds,
            session_timer=SessionTimerConfig(enabled=calls.session_timer,
                                             session_expires=calls.session_expires,
                                             min_se=calls.min_se))
        self._linger = 64 * config.sip.t1_seconds
        self._media_host = config.media.host        # (read for every SDP; config is frozen)
        # The ending guard: 64*T1 (Timer B/F, §9.1's CANCEL bound) after the last
        # request sent while ending, plus T2 so that the transaction layer's own
        # timeout, due first, is what normally ends the leg.
        self._ending_limit = self._linger + config.sip.t2_seconds
        self.forced_releases = 0
        # Dialogs of released legs, kept 64*T1 so that a BYE still on its way gets
        # 200 rather than 481 (call id, local tag) -> until; in release order.
        self._ended_dialogs: dict[tuple[str, str], float] = {}
        self._calls: dict[str, Call] = {}
        self._legs: dict[str, Leg] = {}
        self._by_dialog: dict[tuple[str, str], Leg] = {}
        self._by_invite: dict[int, Leg] = {}
        self._destinations: dict[tuple[str, str, int, int | None], Destination] = {}
        self._txns: dict[int, tuple[Leg, Request]] = {}
        self._leg_txns: dict[str, list[int]] = {}
        self._handlers: dict[str, InDialogHandler] = {}
        self._media_observers: list[LegMediaObserver] = []
        self._stopping = False
        self._errors = 0
        self._quiet: asyncio.Event | None = None
        self._unfinished: deque[Leg] = deque()
        # Legs lingering 64*T1 after a 2xx (tens of thousands on a loaded engine) wait
        # in a heap of our own under one loop timer: adding a timer to uvloop's heap
        # costs ~10 us with that many in it, ~2 us with a few.
        self._lingering: list[tuple[float, int, _Lingering]] = []
        self._linger_seq = itertools.count()
        self._linger_timer: TimerHandle | None = None
        self._linger_timer_at: float | None = None
        self._next_leg = 0

    # --- extension points ---------------------------------------------------------

    def register_in_dialog(self, method: str, handler: InDialogHandler) -> None:
        """Answer in-dialog ``method`` requests (REFER for transfers, INFO for DTMF ...)."""
        self._handlers[method.upper()] = handler

    def add_media_observer(self, observer: LegMediaObserver) -> None:
        """Be told of every leg's media configuration and closing (DTMF, recording)."""
        self._media_observers.append(observer)

    def feature_invoked(self, leg: Leg, name: str, number: str | None, digits: str) -> None:
        """A DTMF feature code (``[features]``) was dialled on ``leg``; its digits were
        consumed.  Today it is logged and published (``feature.invoked``); the
        transfer work acts on it."""
        self._log.info("feature.invoked", leg_id=leg.id, feature=name, number=number)
        self._bus.publish(FEATURE_INVOKED, call_id=leg.call.id, leg_id=leg.id,
                          extension=leg.user.extension if leg.user is not None else leg.party,
                          feature=name, number=number, digits=digits)

    def send_in_dialog(self, leg: Leg, method: str, body: bytes, content_type: str) -> bool:
        """Send ``method`` (INFO: relayed DTMF) in ``leg``'s confirmed dialog; its response
        is not looked at.  False when the leg has no confirmed dialog to send it in."""
        dialog = leg.session.dialog
        if not leg.live or dialog is None or leg.session.state is not State.CONFIRMED:
            return False
        self._send_request(leg, dialog.create_request(method, body=body,
                                                      content_type=content_type))
        return True

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Read ``clock`` from now on (the service hands over its loop's ``time`` once
        the loop runs: no wrapper call per reading)."""
        self._clock = clock

    def call(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    @property
    def calls(self) -> Sequence[Call]:
        return list(self._calls.values())

    @property
    def leg_count(self) -> int:
        """Legs still known (those ended but lingering for retransmissions included)."""
        return len(self._legs)

    # --- entry points: SIP ----------------------------------------------------------

    def receive_invite(self, txn: int, request: Request, source: Source) -> None:
        """An INVITE outside any dialog: authenticate, create the call, route it."""
        now = self._clock()
        if self._stopping:
            self._reply(txn, request, 503, extra=(("Retry-After", "30"),))
            return
        auth = self._auth.authenticate(request, source.host, now)
        if not auth.ok or auth.user is None:
            if auth.outcome in (AuthOutcome.FAILED, AuthOutcome.BLOCKED):
                self._metrics.auth_failure(auth.outcome.name.lower())
                self._log.info("auth.failed", outcome=auth.outcome.name.lower(),
                               method="INVITE", source=f"{source.host}:{source.port}")
            if auth.response is not None:
                self._sip.respond(txn, auth.response)
            else:
                self._reply(txn, request, 403)
            return
        caller = self._config.user(auth.user.extension)
        if caller is None:
            self._reply(txn, request, 403)
            return
        if len(self._calls) >= self._config.calls.max_calls:
            self._log.warning("call.refused", reason="max_calls",
                              max_calls=self._config.calls.max_calls)
            self._reply(txn, request, 503, extra=(("Retry-After", "5"),))
            return
        max_forwards = (request.headers.get("max-forwards") or "70").strip()
        if max_forwards == "0":
            self._reply(txn, request, 483)       # §16.3 item 2 (loop protection)
            return
        try:
            session = InviteSession.uas(request, local_tag=new_tag(),
                                        local_contact=self._contact(source.transport), txn=txn,
                                        config=self._invite_config)
        except SipError as exc:
            self._reply(txn, request, exc.status, exc.reason, extra=exc.headers)
            return
        call = Call(id=secrets.token_hex(8), created_at=now, created_wall=self._wall())
        leg = self._new_leg(call, role=Role.UAS, party=caller.extension, user=caller,
                            destination=self._destination(source.transport, source.host,
                                                          source.port, source.connection_id),
                            session=session, state=LegState.INCOMING)
        leg.invite_txn = txn
        call.caller = leg
        self._by_invite[txn] = leg
        self._calls[call.id] = call
        self._metrics.calls_active.inc()
        with _Guard(self, call):
            self._route(call, leg, request, now)

    def receive_in_dialog(self, txn: int, request: Request, source: Source) -> bool:
        """A request with a To tag; False when it names no dialog of ours (→ 481)."""
        leg = self._leg_for(request)
        if leg is None:
            if request.method == "BYE" and self._recently_ended(request):
                self._reply(txn, request, 200)
                return True
            return False
        if request.method == "BYE" and leg.session.state is State.TERMINATED:
            # §15.1.2: the leg is ending but still known (a BYE that crossed ours, or
            # came after our BYE timed out): the dialog is over either way.
            self._reply(txn, request, 200)
            return True
        errors = self._errors
        with _Guard(self, leg.call):
            try:
                outputs = leg.session.receive_request(request, self._clock(), txn)
            except SipError as exc:
                self._reply(txn, request, exc.status, exc.reason, extra=exc.headers)
                return True
            self._run(leg, outputs)
        if self._errors != errors:
            self._reply(txn, request, 500)     # no-op if it was answered before the failure
        return True

    def receive_ack(self, request: Request) -> None:
        leg = self._leg_for(request)
        if leg is None:
            return
        with _Guard(self, leg.call):
            try:
                outputs = leg.session.receive_request(request, self._clock())
            except SipError as exc:
                self._log.debug("sip.ack_ignored", reason=str(exc))
                return
            self._run(leg, outputs)

    def receive_cancel(self, invite_txn: int, request: Request) -> None:
        """CANCEL of an INVITE we have not answered (the endpoint sent the 200, §9.2)."""
        leg = self._by_invite.get(invite_txn)
        if leg is None:
            return
        with _Guard(self, leg.call):
            self._run(leg, leg.session.receive_request(request, self._clock(), None))

    def receive_response(self, txn: int, response: Response) -> None:
        entry = self._txns.get(txn)
        if entry is None:
            return
        leg, request = entry
        now = self._clock()
        if response.status >= 200 and request.method != "INVITE":
            self._forget_txn(txn)
        elif 200 <= response.status < 300 and leg.acked_at is None:
            leg.acked_at = now
        with _Guard(self, leg.call):
            self._run(leg, leg.session.receive_response(response, now))

    def transaction_timed_out(self, txn: int, method: str, timer: str) -> None:
        entry = self._txns.get(txn)
        if entry is not None:
            # §8.1.3.1: a client transaction timeout is a 408 from the far end.
            self.receive_response(txn, make_response(entry[1], 408))
            return
        leg = self._by_invite.get(txn)
        if leg is not None and timer == "TU":
            # The endpoint answered 500 itself: our answer never came (a bug).
            with _Guard(self, leg.call):
                self._end_call(leg.call, CallResult.FAILED, "no_final_response", status=500)

    def transport_error(self, txn: int, method: str) -> None:
        entry = self._txns.get(txn)
        if entry is not None:
            # §8.1.3.1: a transport failure is treated as a 503.
            self.receive_response(txn, make_response(entry[1], 503))

    # --- entry points: media -----------------------------------------------------------

    def media_timed_out(self, leg_id: str) -> None:
        """No RTP from a leg's phone for the media timeout: hang the call up."""
        leg = self._legs.get(leg_id)
        if leg is None or not leg.live or leg.call.state is not CallState.ANSWERED:
            return
        if leg.held or self._media_paused(leg):
            return              # RFC 3264 §8.4: no media is expected while held
        with _Guard(self, leg.call):
            self._log.info("call.media_timeout", leg_id=leg.id, party=leg.party)
            self._end_call(leg.call, CallResult.ANSWERED, "media_timeout")

    # --- CallControl (switch.model) -------------------------------------------------------

    def list_calls(self) -> Sequence[CallView]:
        return [self._view(call) for call in self._calls.values()]

    async def hang_up(self, call_id: str) -> None:
        call = self._calls.get(call_id)
        if call is None:
            raise NotFoundError(f"no call {call_id}")
        with _Guard(self, call):
            result = CallResult.ANSWERED if call.state is CallState.ANSWERED \
                else CallResult.CANCELLED
            self._end_call(call, result, "api_hangup", status=480)

    async def transfer(self, call_id: str, *, by: str, kind: str, target: str) -> TransferView:
        call = self._answered(call_id)
        raise NotImplementedYet(f"{kind} transfer of call {call.id} is not implemented yet")

    def get_transfer(self, transfer_id: str) -> TransferView:
        raise NotFoundError(f"no transfer {transfer_id}")

    async def complete_transfer(self, transfer_id: str) -> TransferView:
        raise NotFoundError(f"no transfer {transfer_id}")

    async def cancel_transfer(self, transfer_id: str) -> TransferView:
        raise NotFoundError(f"no transfer {transfer_id}")

    async def set_recording(self, call_id: str, *, by: str, action: str) -> RecordingView:
        call = self._answered(call_id)
        raise NotImplementedYet(f"recording of call {call.id} is not implemented yet")

    def list_voicemail(self, extension: str) -> Sequence[VoicemailView]:
        if self._config.user(extension) is None:
            raise NotFoundError(f"no user {extension}")
        raise NotImplementedYet("voicemail is not implemented yet")

    def _answered(self, call_id: str) -> Call:
        call = self._calls.get(call_id)
        if call is None:
            raise NotFoundError(f"no call {call_id}")
        if call.state is not CallState.ANSWERED:
            raise ConflictError(f"call {call_id} is {call.state.name.lower()}, not answered")
        return call

    # --- leg operations (what transfers, parking and recording build on) ---------------------

    def hold(self, leg: Leg) -> None:
        """Hold ``leg``'s phone: take it out of its bridge and re-INVITE it with
        ``a=sendonly`` (RFC 3264 §8.4); music/silence is the media relay's ``play``.

        Raises ``ConflictError`` if the leg cannot be re-INVITEd now."""
        with self._guard_api(leg):
            self._unbridge(leg)
            leg.held_by_us = True
            self._reoffer(leg, Direction.SENDONLY)

    def resume(self, leg: Leg) -> None:
        """Take ``leg`` off hold (re-INVITE ``a=sendrecv``); bridge it with ``bridge``."""
        with self._guard_api(leg):
            leg.held_by_us = False
            self._reoffer(leg, Direction.SENDRECV)

    def bridge(self, a: Leg, b: Leg) -> None:
        """Relay media between two connected legs of one call (each leaves its bridge).

        Both must have negotiated the same codec; re-offering to align them is
        the transfer machines' job."""
        if a.call is not b.call or not (a.live and b.live):
            raise ConflictError("both legs must be live legs of the same call")
        self._bridge(a.call, a, b)

    def unbridge(self, leg: Leg) -> Leg | None:
        """Stop relaying between ``leg`` and its peer; returns the former peer."""
        return self._unbridge(leg)

    def hang_up_leg(self, leg: Leg, status: int = 480) -> None:
        """End one leg (CANCEL, ``status``, or BYE); the call goes on without it."""
        with _Guard(self, leg.call):
            self._hangup_leg(leg, status)

    @contextmanager
    def _guard_api(self, leg: Leg) -> Iterator[None]:
        if not leg.live or leg.session.state is not State.CONFIRMED:
            raise ConflictError(f"leg {leg.id} is {leg.state.name.lower()}")
        if not leg.session.can_modify:
            raise ConflictError(f"leg {leg.id} has an offer/answer exchange in progress")
        with _Guard(self, leg.call):
            yield

    def _reoffer(self, leg: Leg, direction: Direction) -> None:
        if leg.media is None:
            raise ConflictError(f"leg {leg.id} has no media")
        # The codecs in use on the leg, not all it was first offered: the phone must
        # not switch to one the other side of the bridge does not send (no transcoding).
        base = offer_in_use(leg.local_sdp, leg.remote_sdp, leg.stream) \
            if leg.local_sdp is not None \
            else local_offer(address=self._media_host, port=leg.media.local_port)
        leg.origin, offer = leg.origin.stamp(set_direction(base, direction, leg.stream))
        leg.local_sdp = offer
        self._log.info("call.reoffer", to_leg=leg.id, direction=direction.value)
        self._run(leg, leg.session.reinvite(self._clock(), offer.encode()))

    def _unbridge(self, leg: Leg) -> Leg | None:
        peer = leg.call.unbridge(leg)
        if leg.media is not None:
            self._media.unbridge(leg.media)
        return peer

    # --- shutdown ----------------------------------------------------------------------------

    async def shutdown(self, grace: float) -> None:
        """Refuse new calls (503), end every call with BYE, wait up to ``grace`` for the 200s."""
        self._stopping = True
        for call in list(self._calls.values()):
            with _Guard(self, call):
                result = CallResult.ANSWERED if call.state is CallState.ANSWERED \
                    else CallResult.CANCELLED
                self._end_call(call, result, "shutdown", status=503)
        self._unfinished = deque(leg for leg in self._legs.values()
                                 if leg.session.state is not State.TERMINATED)
        if not self._busy():
            return
        self._quiet = asyncio.Event()
        try:
            await asyncio.wait_for(self._quiet.wait(), grace)
        except TimeoutError:
            waiting = [leg for leg in self._legs.values()
                       if leg.session.state is not State.TERMINATED]
            states: dict[str, int] = {}
            for leg in waiting:
                name = f"{leg.role.name.lower()}:{leg.session.state.name.lower()}"
                states[name] = states.get(name, 0) + 1
            self._log.warning("call.shutdown_incomplete", legs=len(waiting), states=states,
                              lingering=len(self._legs) - len(waiting))
        for leg in list(self._legs.values()):
            if leg.session.state is not State.TERMINATED:
                self._metrics.forced_release("shutdown")
            self._drop_leg(leg)         # the process is going: every port back
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self._linger_timer = self._linger_timer_at = None
        self._lingering.clear()

    def _busy(self) -> bool:
        """Whether a leg is still waiting for its session to end (shutdown only).

        Checked on every release during shutdown: legs that ended are dropped
        from the front of the queue, so the checks cost O(legs) in all — a scan
        of every leg each time was O(legs²), minutes with the tens of thousands
        of lingering legs a loaded engine holds."""
        pending = self._unfinished
        while pending:
            leg = pending[0]
            if leg.session.state is not State.TERMINATED and leg.id in self._legs:
                return True
            pending.popleft()
        return False

    # --- routing -------------------------------------------------------------------------------

    def _route(self, call: Call, caller: Leg, request: Request, now: float) -> None:
        outputs = caller.session.start(now)
        offer_body: bytes | None = None
        for item in outputs:
            if isinstance(item, OfferReceived):
                offer_body = item.body
        dialed = target_user_part(request.uri)
        self._publish_created(call, caller, dialed or "")
        self._run(caller, [o for o in outputs
                           if not isinstance(o, (OfferReceived, OfferRequested))])
        if call.ended or not caller.live:
            return
        call.dialed = dialed or ""
        target = self._config.lookup(dialed) if dialed else None
        if target is None:
            self._end_call(call, CallResult.FAILED, "not_found", status=404)
            return
        call.target = target
        self._save(call)
        bindings = self._contacts(target.extension, now)
        if not bindings:
            self._end_call(call, CallResult.FAILED, "not_registered", status=480)
            return
        offer: SessionDescription | None = None
        if offer_body is not None:
            try:
                offer = parse_sdp(offer_body)
                check_offer(offer)      # codecs we relay? (488 if not)
            except SdpNotAcceptable:
                self._end_call(call, CallResult.FAILED, "no_common_codec", status=488)
                return
            except SdpError:
                self._end_call(call, CallResult.FAILED, "bad_sdp", status=400)
                return
            caller.remote_sdp = offer
        self._log.info("call.routing", caller=caller.party, dialed=call.dialed,
                       target=target.extension, contacts=len(bindings))
        call.task = _as_task(self._spawn(self._open_and_fork(call, caller, target, bindings,
                                                             offer)))

    async def _open_and_fork(self, call: Call, caller: Leg, target: User,
                             bindings: list[Binding], offer: SessionDescription | None) -> None:
        opened: list[MediaLegHandle] = []
        fork_ids = [self._leg_id(call) for _ in bindings]
        try:
            for leg_id in (caller.id, *fork_ids):
                opened.append(await self._media.open_leg(leg_id))
        except Exception as exc:   # noqa: BLE001 - MediaUnavailable, OSError, or a bug
            self._close_handles(call, opened)
            with _Guard(self, call):
                if isinstance(exc, (MediaUnavailable, OSError)):
                    self._log.warning("call.media_unavailable", error=str(exc))
                    self._end_call(call, CallResult.FAILED, "media_unavailable", status=503)
                else:
                    raise
            return
        if call.ended or not caller.live:
            self._close_handles(call, opened)
            return
        try:
            with _Guard(self, call):
                caller.media = opened[0]
                self._fork(call, caller, target, list(zip(fork_ids, bindings, opened[1:],
                                                          strict=True)), offer)
        finally:
            # Ports opened for forks that were never created (forking failed half way).
            self._close_handles(call, [h for h in opened[1:] if h.id not in call.legs])

    def _close_handles(self, call: Call, handles: Sequence[MediaLegHandle]) -> None:
        for handle in handles:
            try:
                self._media.close_leg(handle)
            except Exception:   # noqa: BLE001 - logged; the others are closed all the same
                with call_context(call.id):
                    self._log.exception("media.close_failed", leg_id=handle.id)

    def _fork(self, call: Call, caller: Leg, target: User,
              forks: list[tuple[str, Binding, MediaLegHandle]],
              offer: SessionDescription | None) -> None:
        now = self._clock()
        for leg_id, binding, handle in forks:
            destination = self._destination(binding.source.transport, binding.source.host,
                                            binding.source.port)
            origin = self._origin()
            body: bytes | None = None
            exchange_offer: tuple[SessionDescription, int] | None = None
            if offer is not None:
                relayed, index = anchor_offer(offer, address=self._media_host,
                                              port=handle.local_port)
                origin, relayed = origin.stamp(relayed)
                body = relayed.encode()
                exchange_offer = (relayed, index)
            invite = self._fork_invite(call, caller, binding, destination, body)
            session = InviteSession.uac(invite, config=self._invite_config, owned=True)
            leg = self._new_leg(call, role=Role.UAC, party=target.extension, user=target,
                                destination=destination, session=session,
                                state=LegState.CALLING, leg_id=leg_id, origin=origin)
            leg.media = handle
            if exchange_offer is not None and offer is not None:
                leg.local_sdp, leg.stream = exchange_offer
                leg.exchange = Exchange(offerer=caller, answerer=leg, offer=offer,
                                        index=exchange_offer[1])
            call.forks.append(leg)
        call.advance(CallInput.FORKED)
        call.ring_timer = self._timers.call_at(now + self._config.calls.ring_timeout,
                                               partial(self._ring_timeout, call))
        for leg in list(call.forks):
            if call.ended:
                break
            self._run(leg, leg.session.start(now))

    def _fork_invite(self, call: Call, caller: Leg, binding: Binding, destination: Destination,
                     body: bytes | None) -> Request:
        """The INVITE to one contact of the callee, with the caller ID of the caller's record."""
        realm = self._config.sip.realm
        user = caller.user
        assert user is not None
        identity = f'{quote(user.name)} <sip:{user.extension}@{realm}>'
        host, _ = self._sip.local_address()
        headers = Headers()
        for hop in binding.path:                     # RFC 3327 §5.3: Path becomes Route
            headers.add("Route", hop)
        incoming = caller.session.invite.headers.get("max-forwards")
        hops = int(incoming) - 1 if incoming and incoming.strip().isdigit() else 70
        headers.add("Max-Forwards", str(max(1, min(70, hops))))
        headers.add("From", f"{identity};tag={new_tag()}")
        headers.add("To", f"<sip:{call.dialed}@{realm}>")
        headers.add("Call-ID", f"{secrets.token_hex(12)}@{_host_for_uri(host)}")
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self._contact(destination.transport))
        headers.add("P-Asserted-Identity", identity)   # RFC 3325 §9.1
        headers.add("User-Agent", self._config.sip.user_agent)
        if body is not None:
            headers.add("Content-Type", "application/sdp")
        return Request("INVITE", binding.contact, headers, body or b"")

    def _limit_duration(self, call: Call, answered_at: float) -> None:
        """``[calls] max_duration``: the call is released that long after its answer."""
        limit = self._config.calls.max_duration
        if limit > 0:
            call.duration_timer = self._timers.call_at(answered_at + limit,
                                                       partial(self._max_duration, call))

    @staticmethod
    def _stop_duration_limit(call: Call) -> None:
        if call.duration_timer is not None:
            call.duration_timer.cancel()
            call.duration_timer = None

    def _max_duration(self, call: Call) -> None:
        call.duration_timer = None
        if call.ended:
            return
        with _Guard(self, call):
            self._log.info("call.max_duration", seconds=self._config.calls.max_duration)
            self._end_call(call, CallResult.ANSWERED, "max_duration")

    def _ring_timeout(self, call: Call) -> None:
        call.ring_timer = None
        if call.state is not CallState.RINGING:
            return
        with _Guard(self, call):
            self._log.info("call.ring_timeout", seconds=self._config.calls.ring_timeout)
            self._end_call(call, CallResult.NO_ANSWER, "ring_timeout", status=408)

    # --- executing session outputs --------------------------------------------------------------

    def _run(self, leg: Leg, outputs: list[Output]) -> None:
        try:
            for item in outputs:
                # On the exact type (the session's outputs are final classes): ~10 runs
                # a call, whose isinstance chains cost ~56 calls.
                if type(item) is SendResponse:
                    if item.txn is not None:
                        self._send_response(item.txn, item.response)
                elif type(item) is SendRequest:
                    self._send_request(leg, item.request)
                elif type(item) is SendAck:
                    self._send_ack(leg, item.request)
                elif type(item) is SendCancel:
                    self._send_request(leg, item.cancel)
                else:              # a session event: what it does is _SESSION_EVENTS's
                    handler = _SESSION_EVENTS.get(type(item))
                    if handler is not None:
                        handler(self, leg, item)
        finally:
            # Even when a handler raised: the leg's timer follows its session's (moved
            # only when it changed, tested here: ~10 runs a call), and a terminated
            # session is released, not kept.
            session = leg.session
            at = session.get_timer()
            if at != leg.timer_at:
                self._arm(leg, at)
            if session.state is State.TERMINATED:
                self._maybe_release(leg)
        if leg.pending_direction is not None and leg.session.can_modify \
                and leg.session.state is State.CONFIRMED:
            self._offer_pending_direction(leg)

    def _send_request(self, leg: Leg, request: Request) -> None:
        if "user-agent" not in request.headers:
            request.headers.add("User-Agent", self._config.sip.user_agent)
        try:
            txn = self._sip.send_request(request, self._next_hop(leg, request))
        except Exception:   # noqa: BLE001 - a request that cannot be sent fails (below)
            self._log.warning("sip.send_failed", method=request.method, leg_id=leg.id,
                              exc_info=True)
            # §8.1.3.1: a transport failure is a 503 from the far end; told to the
            # session on the next turn of the loop, as the transport's errors are.
            self._timers.call_at(self._clock(), partial(self._send_failed, leg, request))
            return
        if leg.id not in self._legs:
            return                 # released meanwhile: its responses concern no one
        self._txns[txn] = (leg, request)
        self._leg_txns.setdefault(leg.id, []).append(txn)
        if not leg.live:
            self._watch_ending(leg, restart=True)    # a BYE or CANCEL: give it its time

    @staticmethod
    def _next_hop(leg: Leg, request: Request) -> Destination:
        """Where ``request`` on ``leg`` goes.  With a route set (a proxy Record-Routed
        the dialog), in-dialog requests go to its first hop (RFC 3261 §12.2.1.1,
        §8.1.2: the first Route if ``lr``, else the strict router in the
        Request-URI).  Otherwise, and for the initial INVITE and its CANCEL, to the
        address the phone's REGISTER or INVITE came from (RFC 3581: phones behind
        NAT).  A host name is handed to the transport as written (no RFC 3263 DNS)."""
        hop = route_hop(request)
        current = leg.destination
        if hop is None:
            return current
        transport = hop.transport if hop.transport in ("udp", "tcp") else current.transport
        if (hop.host, hop.port, transport) == (current.host, current.port, current.transport):
            return current                  # the same flow: keep its TCP connection
        return Destination(transport=transport, host=hop.host, port=hop.port)

    def _send_failed(self, leg: Leg, request: Request) -> None:
        if leg.id not in self._legs:
            return
        with _Guard(self, leg.call):
            self._run(leg, leg.session.receive_response(make_response(request, 503),
                                                        self._clock()))

    def _send_response(self, txn: object, response: Response) -> None:
        assert isinstance(txn, int)
        if "server" not in response.headers:
            response.headers.add("Server", self._config.sip.user_agent)
        try:
            self._sip.respond(txn, response)
        except SipError as exc:
            # The transaction is gone (or already answered): nothing left to do.
            self._log.debug("sip.respond_failed", status=response.status, reason=str(exc))
        except Exception:   # noqa: BLE001 - a response lost is the peer's retransmission
            self._log.warning("sip.send_failed", status=response.status, exc_info=True)

    def _send_ack(self, leg: Leg, ack: Request) -> None:
        # §13.2.2.4: the ACK for a 2xx is its own transaction-less request; the
        # session re-sends the same one for a retransmitted 2xx, so copy it.
        host, port = self._sip.local_address()
        destination = self._next_hop(leg, ack)
        headers = ack.headers.copy()
        headers.prepend("Via", f"SIP/2.0/{destination.transport.upper()} "
                               f"{_host_for_uri(host)}:{port};branch={new_branch()};rport")
        try:
            self._sip.send_stateless(Request("ACK", ack.uri, headers, ack.body), destination)
        except Exception:   # noqa: BLE001 - its 2xx is retransmitted and ACKed again
            self._log.warning("sip.send_failed", method="ACK", leg_id=leg.id, exc_info=True)

    def _reply(self, txn: int, request: Request, status: int, reason: str | None = None, *,
               extra: Sequence[tuple[str, str]] = ()) -> None:
        response = make_response(request, status, reason, to_tag=new_tag(), extra=extra)
        self._send_response(txn, response)

    # --- session events ---------------------------------------------------------------------

    def _established(self, leg: Leg, event: SessionEstablished) -> None:
        if leg.state in (LegState.CALLING, LegState.RINGING, LegState.INCOMING):
            leg.advance(LegInput.ANSWERED)

    def _modification_failed(self, leg: Leg, event: ModificationFailed) -> None:
        self._exchange_failed(leg, event.status)

    def _modification_retry_due(self, leg: Leg, event: ModificationRetryDue) -> None:
        self._exchange_failed(leg, 491)

    def _glare(self, leg: Leg, event: GlareDetected) -> None:
        self._log.info("call.glare", leg_id=leg.id, retry_at=event.retry_at)

    def _progress(self, fork: Leg, event: ProgressReceived) -> None:
        if not fork.live:
            return
        call = fork.call
        fork.advance(LegInput.PROGRESS)
        caller = call.caller
        if caller is None or not caller.live or call.state is not CallState.RINGING:
            return
        now = self._clock()
        ex = fork.exchange
        if event.body is not None and ex is not None and not caller.early_media \
                and caller.media is not None and fork.media is not None:
            # Early media (183 + SDP, the preview of the answer, §13.3.1.1).
            try:
                early = parse_sdp(event.body)
                answer = anchor_answer(early, ex.offer, ex.index, address=self._media_host,
                                       port=caller.media.local_port)
            except (SdpError, SdpNotAcceptable) as exc:
                self._log.info("call.early_media_ignored", leg_id=fork.id, reason=str(exc))
            else:
                caller.origin, answer = caller.origin.stamp(answer)
                caller.early_media = True
                fork.remote_sdp = early
                caller.local_sdp, caller.stream, fork.stream = answer, ex.index, ex.index
                self._configure(caller)
                self._configure(fork)
                self._bridge(call, caller, fork)
                self._advance_caller_progress(caller)
                self._run(caller, caller.session.progress(now, 183, body=answer.encode()))
                return
        if event.status == 180 and caller.state is LegState.INCOMING:
            self._advance_caller_progress(caller)
            self._run(caller, caller.session.progress(now, 180))

    @staticmethod
    def _advance_caller_progress(caller: Leg) -> None:
        if caller.state in (LegState.INCOMING, LegState.RINGING):
            caller.advance(LegInput.PROGRESS)

    def _offer_received(self, leg: Leg, event: OfferReceived) -> None:
        call, body = leg.call, event.body
        if leg.role is Role.UAC and call.state is CallState.RINGING and leg.live \
                and leg.session.state is State.ACKING:
            self._late_offer_answer(call, leg, body)
            return
        self._relay_offer(call, leg, body)

    def _late_offer_answer(self, call: Call, fork: Leg, body: bytes) -> None:
        """A 2xx with the offer (the caller sent none): this fork wins (§13.2.1)."""
        caller = call.caller
        assert caller is not None
        try:
            offer = parse_sdp(body)
            assert caller.media is not None
            relayed, index = anchor_offer(offer, address=self._media_host,
                                          port=caller.media.local_port)
        except (SdpError, SdpNotAcceptable) as exc:
            self._log.info("call.fork_unusable_offer", leg_id=fork.id, reason=str(exc))
            fork.status = 488
            self._hangup_leg(fork)
            self._fork_failed(call, fork)
            return
        caller.origin, relayed = caller.origin.stamp(relayed)
        fork.remote_sdp = offer
        caller.local_sdp, caller.stream, fork.stream = relayed, index, index
        ex = Exchange(offerer=fork, answerer=caller, offer=offer, index=index)
        fork.exchange = caller.exchange = ex
        self._answer_call(call, fork, relayed.encode())

    def _relay_offer(self, call: Call, leg: Leg, body: bytes) -> None:
        """A re-INVITE/UPDATE offer (hold, resume, new media) goes to the bridged peer."""
        now = self._clock()
        try:
            offer = parse_sdp(body)
        except SdpError:
            self._run(leg, leg.session.reject_offer(now, 400))
            return
        peer = call.peer(leg)
        if peer is None or not peer.live or peer.media is None or leg.media is None \
                or call.state is not CallState.ANSWERED:
            self._answer_locally(leg, offer)
            return
        if not peer.session.can_modify:
            self._run(leg, leg.session.reject_offer(now, 491))     # §14.1
            return
        try:
            relayed, index = anchor_offer(offer, address=self._media_host,
                                          port=peer.media.local_port)
        except SdpNotAcceptable:
            self._run(leg, leg.session.reject_offer(now, 488))
            return
        peer.origin, relayed = peer.origin.stamp(relayed)
        ex = Exchange(offerer=leg, answerer=peer, offer=offer, index=index)
        leg.exchange = peer.exchange = ex
        peer.local_sdp = relayed
        self._log.info("call.reoffer", from_leg=leg.id, to_leg=peer.id,
                       hold=offer.is_hold())
        self._run(peer, peer.session.reinvite(now, relayed.encode()))
        if leg.media is not None and leg.local_sdp is not None and index == leg.stream \
                and not stream_direction(offer, index).receives:
            # A phone that goes on hold stops receiving now, not when the other side
            # has answered (RFC 3264 §8.4: it no longer wants media).
            self._apply_media(leg, leg_config(leg.local_sdp, offer, index))

    def _answer_locally(self, leg: Leg, offer: SessionDescription) -> None:
        now = self._clock()
        if leg.media is None:
            self._run(leg, leg.session.reject_offer(now, 488))
            return
        try:
            answer, index = local_answer(
                offer, address=self._media_host, port=leg.media.local_port,
                direction=Direction.SENDONLY if leg.held_by_us else Direction.SENDRECV)
        except SdpNotAcceptable:
            self._run(leg, leg.session.reject_offer(now, 488))
            return
        leg.origin, answer = leg.origin.stamp(answer)
        leg.remote_sdp, leg.local_sdp, leg.stream = offer, answer, index
        self._configure(leg)
        self._run(leg, leg.session.answer(now, answer.encode()))

    def _offer_requested(self, leg: Leg, event: OfferRequested) -> None:
        """A re-INVITE without SDP: our 2xx carries an offer (§14.2), the ACK the answer.

        Answered here, not relayed to the other leg (as Asterisk and FreeSWITCH do
        with anchored media): the offer is the leg's current media limited to the
        codecs in use (``offer_in_use``), so the answer cannot pick a codec the
        bridge does not carry.  A direction change in the answer (a phone that
        holds or resumes this way) is passed on by ``_offered_answer``."""
        now = self._clock()
        if leg.media is None:
            self._run(leg, leg.session.reject_offer(now, 488))
            return
        offer = offer_in_use(leg.local_sdp, leg.remote_sdp, leg.stream) \
            if leg.local_sdp is not None \
            else local_offer(address=self._media_host, port=leg.media.local_port)
        leg.origin, offer = leg.origin.stamp(offer)
        leg.local_sdp = offer
        leg.offered_on_request = True
        self._run(leg, leg.session.answer(now, offer.encode()))

    def _offered_answer(self, leg: Leg, before: SessionDescription | None,
                        answer: SessionDescription) -> None:
        """The ACK's answer to the offer of ``_offer_requested``: if its direction
        changed (hold/resume, RFC 3264 §8.4), re-INVITE the bridged peer with that
        direction, as a relayed offer would have carried it."""
        leg.offered_on_request = False
        peer = leg.call.peer(leg)
        if before is None or peer is None or not peer.live or peer.held_by_us \
                or leg.call.state is not CallState.ANSWERED:
            return
        direction = stream_direction(answer, leg.stream)
        if direction is stream_direction(before, leg.stream):
            return
        if not peer.session.can_modify or peer.session.state is not State.CONFIRMED:
            # An exchange with the peer is in progress (our previous re-INVITE, its
            # own; RFC 3261 §14.1: no second one before it ends): offered when it is
            # over (_run), the latest direction winning.
            self._log.info("call.direction_deferred", leg_id=leg.id, to_leg=peer.id,
                           direction=direction.value)
            peer.pending_direction = direction
            return
        peer.pending_direction = None
        self._reoffer(peer, direction)

    def _offer_pending_direction(self, leg: Leg) -> None:
        direction, leg.pending_direction = leg.pending_direction, None
        if direction is None or not leg.live or leg.held_by_us or leg.media is None \
                or leg.call.state is not CallState.ANSWERED:
            return
        if leg.local_sdp is not None and stream_direction(leg.local_sdp, leg.stream) \
                is direction:
            return                        # what it was last offered already
        self._reoffer(leg, direction)

    def _answer_received(self, leg: Leg, event: AnswerReceived) -> None:
        ex = leg.exchange
        try:
            answer = parse_sdp(event.body)
        except SdpError as exc:
            self._log.info("call.bad_answer", leg_id=leg.id, reason=str(exc))
            if ex is not None:
                self._exchange_failed(leg, 488)
            return
        before, leg.remote_sdp = leg.remote_sdp, answer
        if ex is None or ex.answerer is not leg:
            self._configure(leg)          # the answer to an offer of our own
            if leg.offered_on_request:
                self._offered_answer(leg, before, answer)
            return
        self._complete_exchange(leg, ex, answer)

    def _complete_exchange(self, answerer: Leg, ex: Exchange, answer: SessionDescription) -> None:
        offerer = ex.offerer
        call = answerer.call
        now = self._clock()
        self._clear_exchange(ex)
        initial = offerer.role is Role.UAS and offerer.session.state is State.RECEIVED
        if initial and call.state is not CallState.RINGING:
            return                        # a fork answering after the call was decided
        if not offerer.live or offerer.media is None:
            return
        try:
            relayed = anchor_answer(answer, ex.offer, ex.index, address=self._media_host,
                                    port=offerer.media.local_port)
        except SdpNotAcceptable as exc:
            self._log.info("call.answer_unusable", leg_id=answerer.id, reason=str(exc))
            if initial:
                answerer.status = 488
                self._hangup_leg(answerer)
                self._fork_failed(call, answerer)
            else:
                self._run(offerer, offerer.session.reject_offer(now, 488))
            return
        offerer.origin, relayed = offerer.origin.stamp(relayed)
        offerer.local_sdp, offerer.stream, answerer.stream = relayed, ex.index, ex.index
        if not initial:
            offerer.remote_sdp = ex.offer
        self._configure(offerer)
        self._configure(answerer)
        if initial:
            self._answer_call(call, answerer, relayed.encode())
        else:
            self._bridge(call, offerer, answerer)
            self._run(offerer, offerer.session.answer(now, relayed.encode()))

    def _exchange_failed(self, leg: Leg, status: int) -> None:
        leg.offered_on_request = False
        ex = leg.exchange
        if ex is None or ex.answerer is not leg:
            return
        self._clear_exchange(ex)
        offerer = ex.offerer
        if offerer.live and offerer.session.pending_remote is not None:
            code = status if 300 <= status < 700 else 500
            self._run(offerer, offerer.session.reject_offer(self._clock(), code))

    @staticmethod
    def _clear_exchange(ex: Exchange) -> None:
        for leg in (ex.offerer, ex.answerer):
            if leg.exchange is ex:
                leg.exchange = None

    def _in_dialog(self, leg: Leg, event: InDialogRequestReceived) -> None:
        request = event.request
        assert isinstance(event.txn, int)
        handler = self._handlers.get(request.method)
        if handler is not None:
            response = handler(leg, request, event.txn)
        elif request.method in _ALLOW_IN_DIALOG:
            response = make_response(request, 200)
        else:
            response = make_response(request, 501)
        if response is not None:
            self._send_response(event.txn, response)

    # --- answering, bridging, ending --------------------------------------------------------

    def _answer_call(self, call: Call, winner: Leg, body: bytes) -> None:
        caller = call.caller
        assert caller is not None
        now = self._clock()
        outputs = caller.session.accept(now, body=body)
        call.advance(CallInput.ANSWERED)
        call.answered_wall = self._wall()
        if call.ring_timer is not None:
            call.ring_timer.cancel()
            call.ring_timer = None
        caller.advance(LegInput.ANSWERED)
        self._limit_duration(call, now)
        if winner.state in (LegState.CALLING, LegState.RINGING):
            winner.advance(LegInput.ANSWERED)
        winner.status = 200
        setup = max(0.0, now - call.created_at)
        self._metrics.call_setup_seconds.observe(setup)
        for fork in call.forks:
            if fork is not winner and fork.live:
                self._hangup_leg(fork)              # CANCEL the others (§16.7 step 10)
        self._bridge(call, caller, winner)
        self._log.info("call.answered", leg_id=winner.id, party=winner.party,
                       setup_seconds=round(setup, 3))
        self._publish_call(CALL_ANSWERED, call, setup_seconds=round(setup, 3))
        self._save(call)
        self._run(caller, outputs)

    def _bridge(self, call: Call, a: Leg, b: Leg) -> None:
        if call.peer(a) is b:
            return
        call.bridge(a, b)
        if a.media is not None and b.media is not None:
            self._media.bridge(a.media, b.media)

    def _configure(self, leg: Leg) -> None:
        if leg.media is None or leg.local_sdp is None or leg.remote_sdp is None:
            return
        self._apply_media(leg, leg_config(leg.local_sdp, leg.remote_sdp, leg.stream))

    def _apply_media(self, leg: Leg, config: LegConfig) -> None:
        assert leg.media is not None
        self._media.configure(leg.media, config)
        for observer in self._media_observers:
            observer.leg_media_configured(leg, config)

    def _media_paused(self, leg: Leg) -> bool:
        if leg.local_sdp is None or leg.remote_sdp is None:
            return False
        direction = leg_config(leg.local_sdp, leg.remote_sdp, leg.stream).direction
        return direction in ("sendonly", "inactive")

    def _leg_ended(self, leg: Leg, event: SessionTerminated) -> None:
        reason, status = event.reason, event.status
        remote = leg.live              # ended by its phone (or its session), not by us
        bridged = leg.call.peer(leg) is not None
        leg.advance(LegInput.ENDED)
        if status is not None and leg.role is Role.UAC and leg.status is None:
            leg.status = status
        self._close_media(leg)
        if leg.exchange is not None:
            self._clear_exchange(leg.exchange)
        self._watch_ending(leg)
        call = leg.call
        if call.ended:
            return
        if call.state in (CallState.ROUTING, CallState.RINGING):
            if leg is call.caller:
                cancelled = reason in (EndReason.REMOTE_CANCELLED, EndReason.REMOTE_BYE)
                self._end_call(call, CallResult.CANCELLED if cancelled else CallResult.FAILED,
                               "caller_cancel" if cancelled else _cause(reason, status))
            else:
                self._fork_failed(call, leg)
            return
        if remote and (leg is call.caller or bridged or len(call.live_legs()) < 2):
            # (A callee we had unbridged, e.g. held, leaving the caller alone ends it too.)
            self._party_left(call, leg, reason, status)

    def _party_left(self, call: Call, leg: Leg, reason: EndReason, status: int | None) -> None:
        """A party of an answered call is gone: in a two-party call, the call ends.

        (Transfers replace this policy for the legs they manage.)"""
        call.unbridge(leg)
        side = "caller" if leg is call.caller else "callee"
        if reason is EndReason.REMOTE_BYE:
            cause = f"{side}_bye"
        else:
            cause = f"{side}_{_cause(reason, status)}"
        self._end_call(call, CallResult.ANSWERED, cause)

    def _fork_failed(self, call: Call, fork: Leg) -> None:
        if fork in call.forks and fork.status is not None and fork.status >= 300:
            call.failures[fork.id] = fork.status
        if call.state is not CallState.RINGING or any(f.live for f in call.forks):
            return
        final = best_response(list(call.failures.values()) or [480])
        self._end_call(call, classify(final), f"status:{final}", status=final)

    def _end_call(self, call: Call, result: CallResult, cause: str, *, status: int = 480
                  ) -> None:
        """End ``call``: every live leg is hung up (``status`` for an unanswered caller)."""
        if call.ended:
            return
        call.advance(CallInput.END)
        call.result = result
        call.cause = cause
        call.ended_wall = self._wall()
        if call.ring_timer is not None:
            call.ring_timer.cancel()
            call.ring_timer = None
        self._stop_duration_limit(call)
        self._calls.pop(call.id, None)
        self._hangup_all(call, status)
        self._metrics.calls_active.dec()
        value = result.value                # (an enum property: read once)
        self._metrics.call_ended(value)
        self._log.info("call.ended", result=value, cause=cause,
                       duration=round(call.ended_wall - call.created_wall, 3))
        self._publish_call(CALL_ENDED, call, result=value, cause=cause)
        self._save(call)

    def _hangup_all(self, call: Call, status: int) -> None:
        """Hang up every leg of an ending call; one leg failing does not spare the others."""
        for leg in list(call.legs.values()):
            try:
                self._hangup_leg(leg, status)
            except Exception:   # noqa: BLE001 - its session is broken: forget the leg
                self._errors += 1
                self._metrics.call_errors.inc()
                self._log.exception("call.leg_dropped", leg_id=leg.id)
                self._metrics.forced_release("error")
                self._drop_leg(leg)

    def _hangup_leg(self, leg: Leg, status: int = 480) -> None:
        if not leg.live:
            return
        leg.advance(LegInput.HANGUP)
        self._close_media(leg)
        if leg.exchange is not None:
            self._clear_exchange(leg.exchange)
        if leg.role is Role.UAC and leg.session.state is State.CALLING \
                and not self._leg_txns.get(leg.id):
            # Its INVITE never went out (the call ended while forking, or sending it
            # failed): there is nothing to cancel and nothing will ever answer.
            self._drop_leg(leg)
            return
        self._run(leg, leg.session.hangup(self._clock(), status=status))
        self._watch_ending(leg)

    def _close_media(self, leg: Leg) -> None:
        leg.call.unbridge(leg)
        media, leg.media = leg.media, None
        if media is None:
            return
        for observer in self._media_observers:
            try:
                observer.leg_media_closed(leg)
            except Exception:   # noqa: BLE001 - the port goes back to the pool regardless
                self._log.exception("call.media_observer_failed", leg_id=leg.id)
        try:
            self._media.close_leg(media)
        except Exception:   # noqa: BLE001 - logged; the leg is forgotten all the same
            self._log.exception("media.close_failed", leg_id=leg.id)

    # --- the ending guard -----------------------------------------------------------------

    def _watch_ending(self, leg: Leg, *, restart: bool = False) -> None:
        """Make sure ``leg``, no longer live, is released by ``release_by`` whatever
        its phone does (``restart``: a request was just sent, count from now)."""
        if leg.id not in self._legs or leg.session.state is State.TERMINATED:
            return              # released, or released by _maybe_release (linger)
        if restart or leg.release_by is None:
            leg.release_by = self._clock() + self._ending_limit
        if leg.guard is None:
            leg.guard = self._timers.call_at(leg.release_by, partial(self._leg_overdue, leg))

    def _leg_overdue(self, leg: Leg) -> None:
        leg.guard = None
        if leg.id not in self._legs:
            return
        if leg.session.state is State.TERMINATED:
            if leg.timer is None:
                self._release(leg)          # (its linger timer releases it otherwise)
            return
        if leg.release_by is not None and self._clock() < leg.release_by:
            leg.guard = self._timers.call_at(leg.release_by, partial(self._leg_overdue, leg))
            return
        with call_context(leg.call.id):
            self.forced_releases += 1
            self._metrics.forced_release("ending_timeout")
            self._log.warning("call.leg_forced_release", leg_id=leg.id,
                              role=leg.role.name.lower(), leg_state=leg.state.name.lower(),
                              session_state=leg.session.state.name.lower(),
                              seconds=self._ending_limit)
            self._drop_leg(leg)

    def _drop_leg(self, leg: Leg) -> None:
        """Forget ``leg`` now, whatever its session's state (its media is closed)."""
        leg.state = LegState.ENDED
        if leg.exchange is not None:
            self._clear_exchange(leg.exchange)
        self._release(leg)

    # --- crash isolation -------------------------------------------------------------------

    def _guard_failed(self, call: Call, exc: Exception) -> None:
        if isinstance(exc, SipError):
            # A protocol error the sessions raise deep: the call fails with its status.
            self._log.info("call.sip_error", status=exc.status, reason=str(exc))
            try:
                self._end_call(call, CallResult.FAILED, f"sip_error:{exc.status}",
                               status=exc.status if exc.status >= 300 else 500)
            except Exception:   # noqa: BLE001 - see below
                self._crashed(call)
        else:                   # one call's bug must not reach the others
            self._crashed(call)

    def _crashed(self, call: Call) -> None:
        self._errors += 1
        self._metrics.call_errors.inc()
        self._log.exception("call.internal_error", state=call.state.name.lower())
        if call.ended:
            return
        try:
            call.advance(CallInput.END)
        except SipError:
            call.state = CallState.ENDED
        call.result, call.cause, call.ended_wall = CallResult.FAILED, "internal_error", \
            self._wall()
        if call.ring_timer is not None:
            call.ring_timer.cancel()
            call.ring_timer = None
        self._stop_duration_limit(call)
        self._calls.pop(call.id, None)
        self._hangup_all(call, 500)
        self._metrics.calls_active.dec()
        self._metrics.call_ended(CallResult.FAILED.value)
        self._publish_call(CALL_ENDED, call, result=CallResult.FAILED.value,
                           cause="internal_error")
        self._save(call)

    # --- legs: creation, timers, lookup, release ---------------------------------------------

    def _destination(self, transport: str, host: str, port: int,
                     connection_id: int | None = None) -> Destination:
        """A ``Destination``, shared by the legs of one phone (a frozen dataclass costs
        ~2 µs to build; the same phones call again and again)."""
        key = (transport, host, port, connection_id)
        destination = self._destinations.get(key)
        if destination is None:
            if len(self._destinations) >= _DESTINATIONS_KEPT:
                self._destinations.clear()
            destination = self._destinations[key] = Destination(
                transport=transport, host=host, port=port, connection_id=connection_id)
        return destination

    def _leg_id(self, call: Call) -> str:
        self._next_leg += 1
        return f"{call.id}-{self._next_leg}"

    def _origin(self) -> OriginState:
        # An SDP session id needs to be unique, not unpredictable (RFC 4566 §5.2): the
        # shared generator, not a getrandom syscall per leg.
        return OriginState.create(sess_id=_RNG.getrandbits(31), address=self._media_host)

    def _new_leg(self, call: Call, *, role: Role, party: str, user: User | None,
                 destination: Destination, session: InviteSession, state: LegState,
                 leg_id: str | None = None, origin: OriginState | None = None) -> Leg:
        leg = Leg(id=leg_id or self._leg_id(call), call=call, role=role, party=party, user=user,
                  destination=destination, session=session, state=state,
                  origin=origin or self._origin())
        call.add(leg)
        self._legs[leg.id] = leg
        leg.dialog_key = key = (_call_id_of(session.invite), session.local_tag)
        self._by_dialog[key] = leg
        return leg

    def _leg_for(self, request: Request) -> Leg | None:
        call_id = (request.headers.get("call-id") or "").strip()
        local_tag = tag_of(request.headers.get("to") or "") or ""
        return self._by_dialog.get((call_id, local_tag))

    def _arm(self, leg: Leg, at: float | None) -> None:
        """Move ``leg``'s timer to ``at``, its session's new ``get_timer()``."""
        if leg.timer is not None:
            leg.timer.cancel()
        leg.timer, leg.timer_at = None, at
        if at is not None:
            leg.timer = self._timers.call_at(at, partial(self._leg_timer, leg))

    def _leg_timer(self, leg: Leg) -> None:
        at = leg.timer_at
        leg.timer, leg.timer_at = None, None
        if leg.id not in self._legs:
            return
        now = self._clock()
        if at is not None and now < at:
            now = at                       # call_at may fire up to one clock tick early
        with _Guard(self, leg.call):
            self._run(leg, leg.session.handle_timer(now))

    def _maybe_release(self, leg: Leg) -> None:
        if leg.session.state is not State.TERMINATED or leg.id not in self._legs:
            return
        if leg.state is not LegState.ENDED:
            leg.state = LegState.ENDED
        if leg.timer is not None:
            return
        # A UAC leg that got a 2xx is kept while the INVITE client transaction may
        # still pass up retransmissions of it, which need their ACK (§13.2.2.4,
        # RFC 6026 §7.2: 64*T1); every other leg goes at once.
        until = leg.acked_at + self._linger if leg.acked_at is not None else None
        if until is not None and until > self._clock():
            leg.timer_at = until
            leg.timer = self._linger_until(leg, until)
            if leg.guard is not None:
                # Its session is over and the linger releases it: the ending guard has
                # nothing left to do (_leg_overdue) and would hold a loop timer 64*T1.
                leg.guard.cancel()
                leg.guard = None
            if self._quiet is not None and not self._busy():
                self._quiet.set()
        else:
            self._release(leg)

    def _linger_until(self, leg: Leg, until: float) -> _Lingering:
        """Release ``leg`` at ``until`` (cancel the handle returned to keep it)."""
        entry = _Lingering(leg)
        heapq.heappush(self._lingering, (until, next(self._linger_seq), entry))
        self._arm_lingering(until)
        return entry

    def _arm_lingering(self, at: float) -> None:
        """The loop timer of ``_lingering`` at ``at``, unless it is due earlier."""
        if self._linger_timer_at is None or at < self._linger_timer_at:
            if self._linger_timer is not None:
                self._linger_timer.cancel()
            self._linger_timer_at = at
            self._linger_timer = self._timers.call_at(at, self._release_lingering)

    def _release_lingering(self) -> None:
        now, due = self._clock(), self._linger_timer_at
        self._linger_timer = self._linger_timer_at = None
        if due is not None and now < due:
            now = due                      # call_at may fire up to one clock tick early
        heap = self._lingering
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if entry.cancelled:
                continue
            entry.cancelled = True
            leg = entry.leg
            try:
                self._release(leg)
            except Exception:   # noqa: BLE001 - the other legs are released all the same
                with call_context(leg.call.id):
                    self._log.exception("call.release_failed", leg_id=leg.id)
        if heap:
            self._arm_lingering(heap[0][0])    # (a release may have filed a leg meanwhile)

    def _release(self, leg: Leg) -> None:
        if leg.timer is not None:
            leg.timer.cancel()
        leg.timer = None
        if leg.guard is not None:
            leg.guard.cancel()
            leg.guard = None
        self._close_media(leg)              # (closed when it stopped being live, normally)
        self._legs.pop(leg.id, None)
        key = leg.dialog_key
        if self._by_dialog.get(key) is leg:
            del self._by_dialog[key]
            self._remember_ended(key)
        if leg.invite_txn is not None:
            self._by_invite.pop(leg.invite_txn, None)
        for txn in self._leg_txns.pop(leg.id, []):
            self._txns.pop(txn, None)
        if self._quiet is not None and not self._busy():
            self._quiet.set()

    def _remember_ended(self, key: tuple[str, str]) -> None:
        now = self._clock()
        self._prune_ended(now)
        self._ended_dialogs.pop(key, None)
        self._ended_dialogs[key] = now + self._linger

    def _recently_ended(self, request: Request) -> bool:
        """Whether ``request`` names the dialog of a leg released less than 64*T1 ago."""
        self._prune_ended(self._clock())
        key = (_call_id_of(request), tag_of(request.headers.get("to") or "") or "")
        return key in self._ended_dialogs

    def _prune_ended(self, now: float) -> None:
        ended = self._ended_dialogs
        while ended:
            key = next(iter(ended))
            if ended[key] > now:
                break
            del ended[key]

    def _forget_txn(self, txn: int) -> None:
        entry = self._txns.pop(txn, None)
        if entry is not None:
            txns = self._leg_txns.get(entry[0].id)
            if txns is not None and txn in txns:
                txns.remove(txn)

    # --- views, events, records ---------------------------------------------------------------

    def _contact(self, transport: str) -> str:
        host, port = self._sip.local_address()
        suffix = ";transport=tcp" if transport == "tcp" else ""
        return f"<sip:switch@{_host_for_uri(host)}:{port}{suffix}>"

    def _shown_legs(self, call: Call) -> list[Leg]:
        return [leg for leg in call.legs.values()
                if leg is call.caller or leg.live or call.peer(leg) is not None
                or leg.status == 200]

    def _view(self, call: Call) -> CallView:
        return CallView(
            id=call.id, state=call.state.name.lower(), recording=call.recording,
            parties=tuple(PartyView(extension_or_number=leg.party, leg_id=leg.id,
                                    state=leg.state.name.lower())
                          for leg in self._shown_legs(call)))

    def _parties(self, call: Call) -> list[dict[str, object]]:
        return [{"extension_or_number": leg.party, "leg_id": leg.id,
                 "role": "caller" if leg is call.caller else "callee",
                 "state": leg.state.name.lower()}
                for leg in self._shown_legs(call)]

    def _publish_call(self, type: str, call: Call, **fields: object) -> None:
        """A call event with its id and parties; the parties are built only when a
        subscriber takes ``type`` (none, usually, on a loaded engine)."""
        if self._bus.wants(type):
            self._bus.publish(type, call_id=call.id, parties=self._parties(call), **fields)

    def _publish_created(self, call: Call, caller: Leg, dialed: str) -> None:
        self._log.info("call.created", caller=caller.party,
                       source=f"{caller.destination.host}:{caller.destination.port}")
        self._publish_call(CALL_CREATED, call, caller=caller.party,
                           dialed=dialed)
        self._save(call)

    def _save(self, call: Call) -> None:
        """Queue the call's record; it is made when the writer takes it (the latest
        state of the call then), so the changes of one flush interval cost one."""
        if self._records is None:
            return
        try:
            self._records.save_snapshot(call.id, partial(self._record, call))
        except Exception:   # noqa: BLE001 - a record lost is logged, the call goes on
            self._log.exception("call.record_failed")

    @staticmethod
    def _record(call: Call) -> CallRecord:
        caller = call.caller
        parties = tuple([PartyRecord(leg_id=leg.id,   # (a list: no generator frames)
                                     role="caller" if leg is caller else "callee",
                                     extension_or_number=leg.party,
                                     status=leg.status if leg is not caller else None)
                         for leg in call.legs.values()])
        return CallRecord(
            call_id=call.id, caller=caller.party if caller is not None else "",
            dialed=call.dialed, callee=call.target.extension if call.target else None,
            started_at=call.created_wall, answered_at=call.answered_wall,
            ended_at=call.ended_wall, result=call.result.value if call.result else None,
            cause=call.cause, parties=parties)


# What a session event does (CallController._run), by its exact type.
_SESSION_EVENTS: dict[type, Callable[[CallController, Leg, Any], None]] = {
    SessionTerminated: CallController._leg_ended,
    ProgressReceived: CallController._progress,
    OfferReceived: CallController._offer_received,
    OfferRequested: CallController._offer_requested,
    AnswerReceived: CallController._answer_received,
    SessionEstablished: CallController._established,
    ModificationFailed: CallController._modification_failed,
    ModificationRetryDue: CallController._modification_retry_due,
    GlareDetected: CallController._glare,
    InDialogRequestReceived: CallController._in_dialog,
}


def _cause(reason: EndReason, status: int | None) -> str:
    text = reason.name.lower()
    return f"{text}:{status}" if status is not None else text


def _call_id_of(request: Request) -> str:
    return (request.headers.get("call-id") or "").strip()


def _host_for_uri(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _create_task(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro)


def _as_task(value: object) -> asyncio.Task[None] | None:
    return value if isinstance(value, asyncio.Task) else None


