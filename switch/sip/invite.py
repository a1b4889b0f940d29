"""The INVITE usage of a dialog: one call leg's session, UAC or UAS, sans-I/O.

Theory of operation
-------------------
An ``InviteSession`` is the transaction user (RFC 3261 §8, §13–§15) for one
leg: it consumes ``Request``/``Response`` values the transaction layer passes
up and the call layer's decisions (``accept``, ``answer``, ``hangup`` ...),
and returns a list of *outputs*: commands the call layer executes
(``SendRequest``, ``SendResponse``, ``SendAck``, ``SendCancel``) and events it
reacts to (``OfferReceived``, ``SessionEstablished``, ``SessionTerminated``
...).  It never touches I/O or a clock: time is the ``now`` argument, and
``get_timer()`` / ``handle_timer(now)`` drive its deadlines (2xx
retransmission, glare retry, session timer), as in aioquic.

Three machines, each a table (an input a table does not list raises
``InvalidTransition``):

1. **The session** (``State`` × ``Input`` → ``State``, ``TRANSITIONS``).  UAC
   side after RFC 3261 Figure 5 seen from the TU: CALLING → PROCEEDING (first
   1xx; only now may a CANCEL go out, §9.1) → CONFIRMED on a 2xx (ACKING while
   a late-offer 2xx waits for our answer to put in the ACK, §13.2.2.4).
   UAS side: RECEIVED → ANSWERED (2xx sent, retransmitted at T1, 2T1, ... T2
   until the ACK, §13.3.1.4) → CONFIRMED.  Either side: TERMINATING (our BYE
   is out, §15.1.1) → TERMINATED.  ``hangup`` picks the right tool: CANCEL
   before a final response (CANCEL_QUEUED until a provisional arrives),
   reject as UAS, BYE once confirmed (BYE_QUEUED as UAS until the ACK or its
   timeout, §15).
2. **Offer/answer** (RFC 3264, RFC 6337 §2–§3; ``OfferState`` table): STABLE,
   LOCAL_OFFER, REMOTE_OFFER.  An offer may travel in INVITE, re-INVITE,
   UPDATE or a 2xx (late offer: the answer then goes in the ACK).  The table
   makes "two offers outstanding" impossible; a request that would need one
   is refused: 491 when we have an offer out, 500 with Retry-After when we owe
   an answer (RFC 3311 §5.2, RFC 6337 §3.2).
3. **The session timer** (RFC 4028), in ``switch.sip.session_timer``.

In-dialog modifications (re-INVITE §14, UPDATE RFC 3311) keep the session in
CONFIRMED; at most one of ours (``pending_local``) and one of the peer's
(``pending_remote``) exist at a time.  Glare (§14.1): both sides sent
re-INVITEs; each answers the other 491.  The owner of the Call-ID (the UAC of
the initial INVITE) retries after 2.1–4 s in 10 ms steps, the other side after
0–2 s (``rng`` is injectable).  At retry time the same offer is re-sent if no
offer/answer completed meanwhile; otherwise the SDP we hold changed (RFC 3264
§8: a new offer needs a new o= version), so ``ModificationRetryDue`` asks the
call layer for a fresh one.

Decisions on the open questions
-------------------------------
* No reliable provisional responses (RFC 3262, 100rel): SDP in an unreliable
  183 is early media, the *preview* of the answer, which the 2xx must repeat
  (§13.3.1.1); a 2xx without SDP after one is taken to confirm it.  UPDATE
  offers in an early dialog are therefore refused (the initial exchange is
  never complete before the 2xx, RFC 3311 §5.1).  We do not advertise 100rel;
  an INVITE or UPDATE with ``Require: 100rel`` (or any option tag but
  ``timer``) gets 420 with ``Unsupported`` (§8.2.2.3, ``check_required``);
  ``Supported: 100rel`` from a caller is simply not used.
* BYE received while the peer's re-INVITE/UPDATE is unanswered: 487 to it,
  then 200 to the BYE (§15.1.2 recommends 487; RFC 5407 §3.1 flows).  BYE of
  ours while the peer's request is unanswered: 487 first, then the BYE.  A
  2xx to our re-INVITE that arrives after either BYE is still ACKed
  (§13.2.2.4) and nothing else happens (RFC 5407 §3.1.3).
* A BYE from the callee in an early dialog ends that early dialog only
  (``EarlyDialogTerminated``); the INVITE stays pending for other forks and
  for its final response.
* CANCEL/2xx race (§9.1, §15): a 2xx after our CANCEL is ACKed and BYEd.  If
  it carried a late offer we ACK without an answer before the BYE: the
  session is being torn down, and a valid rejecting answer is the SDP
  layer's business (§13.2.2.4 would want one).
* A re-INVITE or 481/408 to our in-dialog request ends the dialog (§12.2.1.2):
  408 with a BYE, 481 without (the peer has no dialog).
* An offer byte-identical to the last remote SDP (same o= version: nothing
  changed, RFC 3264 §8), as in a session refresh (RFC 4028 §7.4), is answered
  by the session itself with our last SDP; the call layer sees only
  ``ModificationCompleted``.  Our own refresh is a bare UPDATE when the peer
  allows UPDATE, else a re-INVITE repeating our last SDP.
* Responses to requests the call layer sends itself (INFO, REFER, NOTIFY)
  are not this usage's; peer requests other than INVITE/UPDATE/BYE/ACK/CANCEL
  are passed up as ``InDialogRequestReceived`` after the §12.2.2 checks.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, auto

from switch.fsm import FastEnum
from switch.sip.dialog import Dialog, DialogId, InvalidTransition, build_cancel, incoming_key
from switch.sip.dialog import State as DialogState
from switch.sip.errors import SipError, TransactionDoesNotExist
from switch.sip.headers import cseq, tag_of
from switch.sip.message import Headers, Request, Response, make_response
from switch.sip.session_timer import (
    Due,
    Negotiated,
    SessionIntervalTooSmall,
    SessionTimer,
    SessionTimerConfig,
    check_request,
    negotiate_as_uac,
    negotiate_as_uas,
    offer_headers,
    retry_interval,
)
from switch.sip.session_timer import State as TimerState

SDP = "application/sdp"

# Sessions share one generator unless a test injects its own: ``random.Random()``
# seeds itself from os.urandom, a syscall per session (~3 % of a calls load).
_RNG = random.Random()


class BadExtension(SipError):
    """A ``Require`` names an option tag we do not support (RFC 3261 §8.2.2.3)."""

    status = 420
    reason = "Bad Extension"


def check_required(request: Request, config: InviteConfig) -> None:
    """Raise ``BadExtension`` (420 with ``Unsupported``) for an INVITE or UPDATE that
    requires an extension this usage lacks.  Supported: ``timer`` (RFC 4028) when
    session timers are on.  Not ``100rel``: RFC 3262 (reliable provisionals,
    PRACK) is not implemented, so a caller that requires it is refused and may
    retry without (RFC 3262 §4); ``Supported: 100rel`` alone is fine, we just never
    send a reliable provisional."""
    supported = ("timer",) if config.session_timer.enabled else ()
    unsupported = [tag for tag in request.headers.get_list("require")
                   if tag.lower() not in supported]
    if unsupported:
        raise BadExtension(f"unsupported Require: {', '.join(unsupported)}",
                           headers=(("Unsupported", ", ".join(unsupported)),))


class RequestPending(SipError):
    """A modification asked for while another one is in progress (RFC 3261 §14.1)."""

    status = 491
    reason = "Request Pending"


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteConfig:
    t1: float = 0.5     # RFC 3261 §17.1.1.1
    t2: float = 4.0
    allow: str = "INVITE, ACK, CANCEL, BYE, UPDATE, OPTIONS, INFO, REFER, NOTIFY"
    session_timer: SessionTimerConfig = field(default_factory=SessionTimerConfig)


# --- outputs: commands --------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class SendRequest:
    """Start a client transaction for ``request`` (the transaction layer adds Via)."""

    request: Request


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResponse:
    """Send ``response`` on the server transaction ``txn`` (the handle given with the request).

    ``retransmission`` marks a 2xx to INVITE re-sent by the TU (§13.3.1.4);
    the INVITE server transaction is then in Accepted (RFC 6026 §8.6) and
    passes it to the transport.
    """

    response: Response
    txn: object
    retransmission: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SendAck:
    """Send the ACK for a 2xx straight to the transport, no transaction (§13.2.2.4)."""

    request: Request


@dataclass(frozen=True, slots=True, kw_only=True)
class SendCancel:
    """Cancel ``invite`` (§9.1).  ``cancel`` is built from it; its top Via must be the INVITE's."""

    invite: Request
    cancel: Request


# --- outputs: events ----------------------------------------------------------

class EndReason(Enum):
    LOCAL_BYE = auto()
    REMOTE_BYE = auto()
    CANCELLED = auto()          # we cancelled (also when a 2xx crossed the CANCEL)
    REMOTE_CANCELLED = auto()   # the caller cancelled our leg
    REJECTED = auto()           # a non-2xx final response to the initial INVITE
    ACK_TIMEOUT = auto()        # §13.3.1.4: no ACK for 64*T1
    SESSION_EXPIRED = auto()    # RFC 4028 §10
    DIALOG_GONE = auto()        # 481/408 to an in-dialog request (§12.2.1.2)
    PROTOCOL_ERROR = auto()     # missing offer/answer where one is required


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressReceived:
    status: int
    reason: str
    body: bytes | None          # SDP of early media (an unreliable preview of the answer)


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferReceived:
    """The peer made an offer; call ``answer`` (or ``accept`` for the initial INVITE)."""

    body: bytes
    method: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferRequested:
    """The peer's INVITE/re-INVITE has no SDP: our 2xx must carry the offer."""

    method: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerReceived:
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEstablished:
    dialog_id: DialogId


@dataclass(frozen=True, slots=True, kw_only=True)
class ModificationCompleted:
    method: str
    local: bool                 # True: ours; False: the peer's


@dataclass(frozen=True, slots=True, kw_only=True)
class ModificationFailed:
    """Our re-INVITE/UPDATE failed; the session goes on as before (RFC 6141 §3)."""

    method: str
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GlareDetected:
    method: str
    retry_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ModificationRetryDue:
    """The glare wait is over but the SDP changed meanwhile: re-offer if still wanted."""

    method: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRefreshed:
    interval: int
    we_refresh: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class EarlyDialogTerminated:
    dialog_id: DialogId


@dataclass(frozen=True, slots=True, kw_only=True)
class InDialogRequestReceived:
    """A request this usage does not handle (INFO, REFER, NOTIFY ...); answer it on ``txn``."""

    request: Request
    txn: object
    dialog_id: DialogId


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTerminated:
    reason: EndReason
    status: int | None = None


Command = SendRequest | SendResponse | SendAck | SendCancel
Event = (ProgressReceived | OfferReceived | OfferRequested | AnswerReceived
         | SessionEstablished | ModificationCompleted | ModificationFailed | GlareDetected
         | ModificationRetryDue | SessionRefreshed | EarlyDialogTerminated
         | InDialogRequestReceived | SessionTerminated)
Output = Command | Event


# --- machine 1: the session ---------------------------------------------------

class Role(FastEnum):
    UAC = auto()
    UAS = auto()


class State(FastEnum):
    CALLING = auto()        # UAC: INVITE sent, no response yet
    PROCEEDING = auto()     # UAC: a provisional arrived
    CANCEL_QUEUED = auto()  # UAC: cancel wanted, waiting for a provisional (§9.1)
    CANCELLING = auto()     # UAC: CANCEL sent
    ACKING = auto()         # UAC: 2xx with an offer; the ACK waits for our answer
    RECEIVED = auto()       # UAS: INVITE received, no final response yet
    ANSWERED = auto()       # UAS: 2xx sent, waiting for the ACK
    BYE_QUEUED = auto()     # UAS: hangup while waiting for the ACK (§15)
    CONFIRMED = auto()
    TERMINATING = auto()    # our BYE is out
    TERMINATED = auto()


class Input(FastEnum):
    # responses to the initial INVITE (UAC)
    PROVISIONAL = auto()
    SUCCESS = auto()
    SUCCESS_WITH_OFFER = auto()
    SUCCESS_OTHER_FORK = auto()
    FAILURE = auto()
    RETRY_422 = auto()
    # requests from the peer
    CANCEL_RECEIVED = auto()
    ACK_RECEIVED = auto()
    BYE_RECEIVED = auto()
    MODIFY_RECEIVED = auto()   # re-INVITE or UPDATE
    OTHER_RECEIVED = auto()
    # responses to our in-dialog requests
    MODIFY_RESPONSE = auto()
    DIALOG_GONE = auto()       # 481
    REQUEST_TIMEOUT = auto()   # 408
    BYE_RESPONSE = auto()
    # the call layer
    CANCEL = auto()
    BYE = auto()
    PROGRESS = auto()
    ACCEPT = auto()
    REJECT = auto()
    ANSWER = auto()
    MODIFY = auto()
    REJECT_MODIFY = auto()
    # deadlines
    RETRANSMIT_2XX = auto()
    ACK_TIMEOUT = auto()
    GLARE_RETRY = auto()
    REFRESH_DUE = auto()
    SESSION_EXPIRED = auto()


S, In = State, Input
_PRE_FINAL = frozenset({State.CALLING, State.PROCEEDING, State.CANCEL_QUEUED,
                        State.CANCELLING})


def _loops(state: State, *inputs: Input) -> dict[tuple[State, Input], State]:
    return {(state, i): state for i in inputs}


TRANSITIONS: dict[tuple[State, Input], State] = {
    # UAC before a final response (RFC 3261 §13.2.2, §9.1)
    (S.CALLING, In.PROVISIONAL): S.PROCEEDING,
    (S.CALLING, In.SUCCESS): S.CONFIRMED,
    (S.CALLING, In.SUCCESS_WITH_OFFER): S.ACKING,
    (S.CALLING, In.FAILURE): S.TERMINATED,
    (S.CALLING, In.RETRY_422): S.CALLING,
    (S.CALLING, In.CANCEL): S.CANCEL_QUEUED,
    (S.PROCEEDING, In.PROVISIONAL): S.PROCEEDING,
    (S.PROCEEDING, In.SUCCESS): S.CONFIRMED,
    (S.PROCEEDING, In.SUCCESS_WITH_OFFER): S.ACKING,
    (S.PROCEEDING, In.FAILURE): S.TERMINATED,
    (S.PROCEEDING, In.RETRY_422): S.CALLING,
    (S.PROCEEDING, In.CANCEL): S.CANCELLING,
    **_loops(S.PROCEEDING, In.BYE_RECEIVED, In.MODIFY_RECEIVED, In.OTHER_RECEIVED),
    (S.CANCEL_QUEUED, In.PROVISIONAL): S.CANCELLING,
    (S.CANCEL_QUEUED, In.SUCCESS): S.TERMINATING,           # 2xx crossed: ACK + BYE
    (S.CANCEL_QUEUED, In.SUCCESS_WITH_OFFER): S.TERMINATING,
    (S.CANCEL_QUEUED, In.FAILURE): S.TERMINATED,
    (S.CANCEL_QUEUED, In.RETRY_422): S.TERMINATED,
    (S.CANCEL_QUEUED, In.CANCEL): S.CANCEL_QUEUED,
    (S.CANCELLING, In.SUCCESS): S.TERMINATING,              # the CANCEL/200 race (§9.1)
    (S.CANCELLING, In.SUCCESS_WITH_OFFER): S.TERMINATING,
    (S.CANCELLING, In.FAILURE): S.TERMINATED,
    (S.CANCELLING, In.RETRY_422): S.TERMINATED,
    **_loops(S.CANCELLING, In.PROVISIONAL, In.CANCEL, In.BYE_RECEIVED, In.MODIFY_RECEIVED,
             In.OTHER_RECEIVED),
    # UAC: a 2xx with a late offer, waiting for our answer (§13.2.2.4)
    (S.ACKING, In.ANSWER): S.CONFIRMED,
    (S.ACKING, In.BYE): S.TERMINATING,
    (S.ACKING, In.BYE_RECEIVED): S.TERMINATED,
    (S.ACKING, In.SESSION_EXPIRED): S.TERMINATING,
    **_loops(S.ACKING, In.SUCCESS, In.SUCCESS_OTHER_FORK, In.PROVISIONAL, In.MODIFY_RECEIVED,
             In.OTHER_RECEIVED, In.REFRESH_DUE),
    # UAS before a final response (§13.3)
    (S.RECEIVED, In.ACCEPT): S.ANSWERED,
    (S.RECEIVED, In.REJECT): S.TERMINATED,
    (S.RECEIVED, In.CANCEL_RECEIVED): S.TERMINATED,          # 487 + 200 (§9.2)
    (S.RECEIVED, In.BYE_RECEIVED): S.TERMINATED,             # 487 + 200 (§15.1.2)
    **_loops(S.RECEIVED, In.PROGRESS, In.MODIFY_RECEIVED, In.OTHER_RECEIVED),
    # UAS: 2xx sent, waiting for the ACK (§13.3.1.4)
    (S.ANSWERED, In.ACK_RECEIVED): S.CONFIRMED,
    (S.ANSWERED, In.ACK_TIMEOUT): S.TERMINATING,
    (S.ANSWERED, In.BYE_RECEIVED): S.TERMINATED,
    (S.ANSWERED, In.BYE): S.BYE_QUEUED,
    (S.ANSWERED, In.SESSION_EXPIRED): S.TERMINATING,
    **_loops(S.ANSWERED, In.RETRANSMIT_2XX, In.CANCEL_RECEIVED, In.MODIFY_RECEIVED,
             In.OTHER_RECEIVED, In.REFRESH_DUE),
    (S.BYE_QUEUED, In.ACK_RECEIVED): S.TERMINATING,
    (S.BYE_QUEUED, In.ACK_TIMEOUT): S.TERMINATING,
    (S.BYE_QUEUED, In.BYE_RECEIVED): S.TERMINATED,
    (S.BYE_QUEUED, In.SESSION_EXPIRED): S.TERMINATING,
    **_loops(S.BYE_QUEUED, In.RETRANSMIT_2XX, In.CANCEL_RECEIVED, In.MODIFY_RECEIVED,
             In.OTHER_RECEIVED, In.BYE, In.REFRESH_DUE),
    # both roles, confirmed
    (S.CONFIRMED, In.BYE_RECEIVED): S.TERMINATED,
    (S.CONFIRMED, In.BYE): S.TERMINATING,
    (S.CONFIRMED, In.DIALOG_GONE): S.TERMINATED,
    (S.CONFIRMED, In.REQUEST_TIMEOUT): S.TERMINATING,
    (S.CONFIRMED, In.ACK_TIMEOUT): S.TERMINATING,            # re-INVITE 2xx never ACKed
    (S.CONFIRMED, In.SESSION_EXPIRED): S.TERMINATING,
    **_loops(S.CONFIRMED, In.SUCCESS, In.SUCCESS_WITH_OFFER, In.SUCCESS_OTHER_FORK,
             In.PROVISIONAL, In.ACK_RECEIVED, In.CANCEL_RECEIVED, In.MODIFY_RECEIVED,
             In.OTHER_RECEIVED, In.MODIFY, In.MODIFY_RESPONSE, In.ANSWER, In.REJECT_MODIFY,
             In.RETRANSMIT_2XX, In.GLARE_RETRY, In.REFRESH_DUE),
    # our BYE is out: answer what the RFC requires, ACK 2xx, nothing else
    (S.TERMINATING, In.BYE_RESPONSE): S.TERMINATED,
    (S.TERMINATING, In.BYE_RECEIVED): S.TERMINATED,
    **_loops(S.TERMINATING, In.SUCCESS, In.SUCCESS_WITH_OFFER, In.SUCCESS_OTHER_FORK,
             In.PROVISIONAL, In.ACK_RECEIVED, In.CANCEL_RECEIVED, In.MODIFY_RECEIVED,
             In.OTHER_RECEIVED, In.MODIFY_RESPONSE, In.BYE, In.CANCEL),
    **_loops(S.TERMINATED, In.SUCCESS, In.SUCCESS_WITH_OFFER, In.SUCCESS_OTHER_FORK,
             In.PROVISIONAL, In.FAILURE, In.ACK_RECEIVED, In.CANCEL_RECEIVED, In.BYE_RECEIVED,
             In.MODIFY_RECEIVED, In.OTHER_RECEIVED, In.MODIFY_RESPONSE, In.BYE_RESPONSE,
             In.BYE, In.CANCEL),
}

# --- machine 2: offer/answer (RFC 3264 §4, RFC 6337 §2) -----------------------


class OfferState(FastEnum):
    STABLE = auto()
    LOCAL_OFFER = auto()    # we sent an offer; its answer is outstanding
    REMOTE_OFFER = auto()   # the peer sent an offer; we owe the answer


class OfferInput(FastEnum):
    SEND_OFFER = auto()
    RECEIVE_ANSWER = auto()
    RECEIVE_OFFER = auto()
    SEND_ANSWER = auto()
    ROLLBACK = auto()       # the request carrying the offer failed (RFC 6337 §3.4)


OFFER_TRANSITIONS: dict[tuple[OfferState, OfferInput], OfferState] = {
    (OfferState.STABLE, OfferInput.SEND_OFFER): OfferState.LOCAL_OFFER,
    (OfferState.STABLE, OfferInput.RECEIVE_OFFER): OfferState.REMOTE_OFFER,
    (OfferState.LOCAL_OFFER, OfferInput.RECEIVE_ANSWER): OfferState.STABLE,
    (OfferState.LOCAL_OFFER, OfferInput.ROLLBACK): OfferState.STABLE,
    (OfferState.REMOTE_OFFER, OfferInput.SEND_ANSWER): OfferState.STABLE,
    (OfferState.REMOTE_OFFER, OfferInput.ROLLBACK): OfferState.STABLE,
}


# --- bookkeeping ----------------------------------------------------------------

@dataclass(slots=True)
class _Local:
    """Our re-INVITE/UPDATE in progress."""

    method: str
    cseq: int
    offer: bytes | None
    refresh: bool                     # sent by the session timer
    ack_waits_answer: bool = False    # re-INVITE 2xx carried an offer (late offer)
    response: Response | None = None


@dataclass(slots=True)
class _Remote:
    """The peer's re-INVITE/UPDATE we have not finished with."""

    request: Request
    txn: object
    method: str
    cseq: int
    offer: bytes | None
    timer: Negotiated | None
    timer_headers: list[tuple[str, str]]
    answered: bool = False            # final response sent (re-INVITE: waiting for ACK)


@dataclass(slots=True)
class _Retransmit:
    """A 2xx to INVITE re-sent until its ACK (§13.3.1.4)."""

    response: Response
    txn: object
    cseq: int
    initial: bool                     # the initial INVITE's 2xx (else a re-INVITE's)
    next_at: float
    interval: float
    give_up_at: float


@dataclass(slots=True)
class _Glare:
    method: str
    offer: bytes | None
    refresh: bool
    at: float
    generation: int


def _sdp_of(message: Request | Response) -> bytes | None:
    body = message.body
    if not body:
        return None
    content_type = message.headers.get("content-type") or ""
    if content_type == SDP:
        return body                   # the usual spelling: no split/strip/lower
    return body if content_type.split(";")[0].strip().lower() == SDP else None


class InviteSession:
    """One leg's INVITE session.  Build with ``uac`` or ``uas``, then call ``start``."""

    def __init__(self, role: Role, invite: Request, config: InviteConfig,
                 rng: random.Random, *, txn: object = None) -> None:
        self.role = role
        self.config = config
        self.rng = rng
        self.invite = invite
        self.invite_cseq = cseq(invite).seq
        self.state = State.CALLING if role is Role.UAC else State.RECEIVED
        self.offer_state = OfferState.STABLE
        self.dialog: Dialog | None = None             # the confirmed dialog (UAS: from start)
        self.early: dict[str, Dialog] = {}            # UAC early dialogs by remote tag
        self.pending_local: _Local | None = None
        self.pending_remote: _Remote | None = None
        self.local_sdp: bytes | None = None           # last SDP we sent (offer or answer)
        self.remote_sdp: bytes | None = None
        self.early_answer: bytes | None = None
        self.timer = SessionTimer()
        self._txn = txn                               # UAS: the initial INVITE's transaction
        self._acks: dict[tuple[int, str], Request] = {}
        self._bye_cseq: int | None = None
        self._retransmit: _Retransmit | None = None
        self._glare: _Glare | None = None
        self._generation = 0                          # completed offer/answer exchanges
        # The message whose Allow says whether the peer takes UPDATE (RFC 3311), read
        # only when a refresh needs it: the peer's INVITE (UAS) or 2xx (UAC).
        self._peer_allow: Request | Response = invite
        self._initial_timer: Negotiated | None = None
        self._initial_timer_headers: list[tuple[str, str]] = []
        self._cancelled = False
        self._terminated = False
        self._from_tag: str | None = None

    # --- construction -------------------------------------------------------------

    @classmethod
    def uac(cls, invite: Request, *, config: InviteConfig | None = None,
            rng: random.Random | None = None, owned: bool = False) -> InviteSession:
        """A session for the INVITE we are about to send (From tag, Call-ID, Contact set).

        The session adds its Session-Expires/Min-SE/Supported and Allow fields to a
        copy of ``invite``, or to ``invite`` itself when the caller hands it over
        (``owned``: it was built for this session and is not used elsewhere)."""
        cfg = config or InviteConfig()
        headers = invite.headers if owned else invite.headers.copy()
        if "session-expires" not in headers:
            for name, value in offer_headers(cfg.session_timer):
                headers.add(name, value)
        if "allow" not in headers:
            headers.add("Allow", cfg.allow)
        request = invite if owned else Request(invite.method, invite.uri, headers, invite.body)
        return cls(Role.UAC, request, cfg, rng or _RNG)

    @classmethod
    def uas(cls, invite: Request, *, local_tag: str, local_contact: str, txn: object = None,
            config: InviteConfig | None = None, rng: random.Random | None = None,
            secure_transport: bool = False) -> InviteSession:
        cfg = config or InviteConfig()
        check_required(invite, cfg)         # §8.2.2.3: before any dialog state (420)
        session = cls(Role.UAS, invite, cfg, rng or _RNG, txn=txn)
        session.dialog = Dialog.as_uas(invite, local_tag=local_tag, local_contact=local_contact,
                                       secure_transport=secure_transport)
        return session

    def start(self, now: float) -> list[Output]:
        """UAC: send the INVITE.  UAS: look at the INVITE (offer, session timer)."""
        out: list[Output] = []
        if self.role is Role.UAC:
            body = _sdp_of(self.invite)
            if body is not None:
                self._offer(OfferInput.SEND_OFFER)
                self.local_sdp = body
            out.append(SendRequest(request=self.invite))
            return out
        try:
            check_request(self.invite, self.config.session_timer)
        except SessionIntervalTooSmall as exc:
            return self.reject(now, exc.status, extra=exc.headers)
        self._initial_timer, self._initial_timer_headers = negotiate_as_uas(
            self.invite, self.config.session_timer)
        body = _sdp_of(self.invite)
        if body is not None:
            self._offer(OfferInput.RECEIVE_OFFER)
            self.remote_sdp = body
            out.append(OfferReceived(body=body, method="INVITE"))
        else:
            out.append(OfferRequested(method="INVITE"))
        return out

    # --- tables ---------------------------------------------------------------------

    def _next(self, event: Input) -> State:
        """The state ``event`` leads to; raises before anything changed if not allowed."""
        next_state = TRANSITIONS.get((self.state, event))
        if next_state is None:
            raise InvalidTransition(f"{self.role.name} session: {event.name} "
                                    f"in {self.state.name}")
        return next_state

    def _offer(self, event: OfferInput) -> None:
        next_state = OFFER_TRANSITIONS.get((self.offer_state, event))
        if next_state is None:
            raise InvalidTransition(f"offer/answer: {event.name} in {self.offer_state.name}")
        self.offer_state = next_state
        if next_state is OfferState.STABLE and event is not OfferInput.ROLLBACK:
            self._generation += 1

    # --- properties -----------------------------------------------------------------

    @property
    def local_tag(self) -> str:
        if self.dialog is not None:
            return self.dialog.local_tag
        tag = self._from_tag
        if tag is None:     # the From of the INVITE (and of its 422 retry) never changes
            tag = self._from_tag = tag_of(self.invite.headers.get("from") or "") or ""
        return tag

    @property
    def is_owner(self) -> bool:
        """Whether we own the Call-ID (we sent the initial INVITE), for §14.1 timing."""
        return self.role is Role.UAC

    @property
    def terminated(self) -> bool:
        return self.state in (State.TERMINATING, State.TERMINATED)

    @property
    def can_modify(self) -> bool:
        """Whether a re-INVITE/UPDATE of ours may start now (§14.1, RFC 3311 §5.1)."""
        return (self.state is State.CONFIRMED and self.pending_local is None
                and self.pending_remote is None and self.offer_state is OfferState.STABLE)

    # --- peer requests --------------------------------------------------------------

    def receive_request(self, request: Request, now: float, txn: object = None
                        ) -> list[Output]:
        """A request from the peer: CANCEL of the INVITE, ACK of a 2xx, or in-dialog.

        Raises ``TransactionDoesNotExist`` (481) for a dialog this session does
        not have and ``OutOfOrderRequest`` (500) for a stale CSeq (§12.2.2); the
        call layer answers those.
        """
        method = request.method
        if method == "CANCEL":
            self._next(Input.CANCEL_RECEIVED)
            return self._on_cancel_received(request, txn)
        key = incoming_key(request)
        dialog = self._dialog_for(key)
        if dialog is None:
            dialog_id = None if key is None else DialogId(*key)
            raise TransactionDoesNotExist(f"no dialog {dialog_id} in this session")
        if method == "ACK":
            self._next(Input.ACK_RECEIVED)
            return self._on_ack(request, now)
        event = {"BYE": Input.BYE_RECEIVED, "INVITE": Input.MODIFY_RECEIVED,
                 "UPDATE": Input.MODIFY_RECEIVED}.get(method, Input.OTHER_RECEIVED)
        self._next(event)
        if self.terminated:
            # The dialog is over for us: BYE and the rest get 481 (§12.2.2, §15.1.2).
            if event is Input.BYE_RECEIVED and self.state is State.TERMINATING:
                return self._on_bye_received(request, txn, dialog)
            return [SendResponse(response=self._response(request, 481), txn=txn)]
        dialog.receive_matched(request)      # §12.2.2 CSeq check; raises 500 if stale
        if event is Input.BYE_RECEIVED:
            return self._on_bye_received(request, txn, dialog)
        if event is Input.OTHER_RECEIVED:
            return [InDialogRequestReceived(request=request, txn=txn, dialog_id=dialog.id)]
        return self._on_modify_received(request, txn, now)

    def _dialog_for(self, key: tuple[str, str, str] | None) -> Dialog | None:
        if key is None:
            return None
        if self.dialog is not None and self.dialog.key == key:
            return self.dialog
        early = self.early.get(key[2])
        if early is not None and early.key == key:
            return early
        return None

    def _on_cancel_received(self, cancel: Request, txn: object) -> list[Output]:
        out: list[Output] = [SendResponse(response=self._response(cancel, 200), txn=txn)]
        if self.state is State.RECEIVED:
            # §9.2: the INVITE gets 487, the CANCEL 200.
            out.insert(0, SendResponse(response=self._response(self.invite, 487),
                                       txn=self._txn))
            self._rollback_offer()
            out += self._end(State.TERMINATED, EndReason.REMOTE_CANCELLED, 487)
        # Otherwise the final response is already out: the CANCEL has no effect (§9.2).
        return out

    def _on_ack(self, ack: Request, now: float) -> list[Output]:
        number = cseq(ack).seq
        out: list[Output] = []
        retransmit = self._retransmit
        if retransmit is None or retransmit.cseq != number:
            return out                       # a retransmitted or stray ACK: absorbed
        self._retransmit = None
        body = _sdp_of(ack)
        if retransmit.initial:
            if self.offer_state is OfferState.LOCAL_OFFER:
                if body is None:
                    # §13.3.1.4 / RFC 6337 §3.1: the ACK had to carry the answer.
                    self._offer(OfferInput.ROLLBACK)
                    return self._send_bye(EndReason.PROTOCOL_ERROR, None)
                self._offer(OfferInput.RECEIVE_ANSWER)
                self.remote_sdp = body
                out.append(AnswerReceived(body=body))
            if self.state is State.BYE_QUEUED:
                return out + self._send_bye(EndReason.LOCAL_BYE, None)
            self.state = State.CONFIRMED
            assert self.dialog is not None
            out.append(SessionEstablished(dialog_id=self.dialog.id))
            return out
        remote = self.pending_remote
        if remote is not None and remote.cseq == number:
            self.pending_remote = None
            if self.offer_state is OfferState.LOCAL_OFFER:
                if body is None:
                    self._offer(OfferInput.ROLLBACK)
                    out.append(ModificationFailed(method="INVITE", status=200))
                    return out + self._after_modification(now)
                self._offer(OfferInput.RECEIVE_ANSWER)
                self.remote_sdp = body
                out.append(AnswerReceived(body=body))
            out.append(ModificationCompleted(method="INVITE", local=False))
            out += self._after_modification(now)
        return out

    def _on_bye_received(self, bye: Request, txn: object, dialog: Dialog) -> list[Output]:
        out: list[Output] = []
        if self.role is Role.UAC and dialog is not self.dialog:
            # The callee ended one early dialog; the INVITE goes on (§15.1.2).
            dialog.terminate()
            self.early.pop(dialog.remote_tag, None)
            return [SendResponse(response=self._response(bye, 200), txn=txn),
                    EarlyDialogTerminated(dialog_id=dialog.id)]
        if self.state is State.RECEIVED:
            # The caller's BYE on the early dialog: 487 to the INVITE (§15.1.2).
            out.append(SendResponse(response=self._response(self.invite, 487), txn=self._txn))
            self._rollback_offer()
        remote = self.pending_remote
        if remote is not None and not remote.answered:
            # §15.1.2: pending requests still get a response; 487 is recommended.
            out.append(SendResponse(response=self._response(remote.request, 487),
                                    txn=remote.txn))
        out.append(SendResponse(response=self._response(bye, 200), txn=txn))
        ended = self.state is State.TERMINATING
        out += self._end(State.TERMINATED, EndReason.REMOTE_BYE, None, announce=not ended)
        return out

    def _on_modify_received(self, request: Request, txn: object, now: float) -> list[Output]:
        method = request.method
        try:
            check_required(request, self.config)
        except BadExtension as exc:
            return [SendResponse(response=self._response(request, exc.status,
                                                         extra=exc.headers), txn=txn)]
        body = _sdp_of(request)
        if self.state is not State.CONFIRMED:
            return self._refuse_early_modify(request, txn, body)
        if method == "INVITE":
            if self.pending_remote is not None:
                # §14.2: an INVITE while one of the peer's is still in progress.
                return [self._retry_after(request, txn)]
            if (self.pending_local is not None and self.pending_local.method == "INVITE") \
                    or self.offer_state is OfferState.LOCAL_OFFER:
                return [SendResponse(response=self._response(request, 491), txn=txn)]  # §14.2
            if self.offer_state is OfferState.REMOTE_OFFER:
                return [self._retry_after(request, txn)]
        else:
            local = self.pending_local
            offer_coming = local is not None and local.method == "INVITE" and local.offer is None
            if body is not None and (self.offer_state is OfferState.LOCAL_OFFER or offer_coming):
                # RFC 3311 §5.2: our offer is out, or our offerless re-INVITE's 2xx
                # is about to bring one: a second offer would cross it.
                return [SendResponse(response=self._response(request, 491), txn=txn)]
            if body is not None and (self.offer_state is OfferState.REMOTE_OFFER
                                     or self.pending_remote is not None):
                return [self._retry_after(request, txn)]   # RFC 3311 §5.2
        try:
            check_request(request, self.config.session_timer)
        except SessionIntervalTooSmall as exc:
            return [SendResponse(response=self._response(request, exc.status,
                                                         extra=exc.headers), txn=txn)]
        negotiated, timer_headers = negotiate_as_uas(request, self.config.session_timer)
        remote = _Remote(request=request, txn=txn, method=method, cseq=cseq(request).seq,
                         offer=body, timer=negotiated, timer_headers=timer_headers)
        if method == "UPDATE" and body is None:
            # A bare UPDATE: a session refresh (RFC 4028 §7.4), answered at once.
            return self._answer_remote(remote, None, now)
        self.pending_remote = remote
        if body is not None:
            unchanged = body == self.remote_sdp and self.local_sdp is not None
            self._offer(OfferInput.RECEIVE_OFFER)
            self.remote_sdp = body
            if unchanged:
                # RFC 3264 §8: the same SDP (same o= version) changes nothing, as in a
                # session refresh (RFC 4028 §7.4); answer with what we answered before.
                return self._answer_remote(remote, self.local_sdp, now)
            return [OfferReceived(body=body, method=method)]
        return [OfferRequested(method=method)]

    def _refuse_early_modify(self, request: Request, txn: object, body: bytes | None
                             ) -> list[Output]:
        """re-INVITE/UPDATE before the session is confirmed (see the module notes)."""
        if request.method == "UPDATE" and body is None:
            return [SendResponse(response=self._response(request, 200, contact=True), txn=txn)]
        if self.state is State.RECEIVED:
            # §14.2 / RFC 3311 §5.2: our answer to the first INVITE is still owed.
            return [self._retry_after(request, txn)]
        return [SendResponse(response=self._response(request, 491), txn=txn)]

    def _retry_after(self, request: Request, txn: object) -> SendResponse:
        # §14.2: 500 with a Retry-After randomly chosen between 0 and 10 s.
        seconds = self.rng.randint(0, 10)
        return SendResponse(response=self._response(
            request, 500, extra=(("Retry-After", str(seconds)),)), txn=txn)

    # --- responses to our requests --------------------------------------------------

    def receive_response(self, response: Response, now: float) -> list[Output]:
        """A response to a request this session sent (CANCEL's are absorbed here)."""
        number_method = cseq(response)
        method, number, status = number_method.method, number_method.seq, response.status
        if method == "CANCEL":
            return []                         # 200/481 to CANCEL: nothing to learn
        if self._acks and method == "INVITE" and 200 <= status < 300:
            remote_tag = tag_of(response.headers.get("to") or "") or ""
            ack = self._acks.get((number, remote_tag))
            if ack is not None:
                return [SendAck(request=ack)]   # §13.2.2.4: ACK every retransmission
        if method == "INVITE" and number == self.invite_cseq and self.role is Role.UAC:
            return self._on_invite_response(response, now)
        local = self.pending_local
        if local is not None and local.method == method and local.cseq == number:
            if status < 200 or local.ack_waits_answer:
                return []    # a 1xx, or the 2xx again while our answer for the ACK is due
            if self.terminated:
                return self._on_late_modify_response(response)
            if status == 481:
                self._next(Input.DIALOG_GONE)
                self.pending_local = None
                self._rollback_offer()
                return self._end(State.TERMINATED, EndReason.DIALOG_GONE, 481)
            if status == 408:
                self._next(Input.REQUEST_TIMEOUT)
                self.pending_local = None
                self._rollback_offer()
                return self._send_bye(EndReason.DIALOG_GONE, 408)
            self._next(Input.MODIFY_RESPONSE)
            return self._on_modify_response(local, response, now)
        if method == "BYE" and number == self._bye_cseq and status >= 200 \
                and self.dialog is not None \
                and tag_of(response.headers.get("to") or "") == self.dialog.remote_tag:
            self._next(Input.BYE_RESPONSE)
            return self._end(State.TERMINATED, EndReason.LOCAL_BYE, None, announce=False)
        return []                             # stray: the transaction layer's leftovers

    def _classify_invite_response(self, response: Response) -> Input:
        status = response.status
        if status < 200:
            return Input.PROVISIONAL
        if status >= 300:
            if status == 422 and retry_interval(response, self.config.session_timer):
                return Input.RETRY_422
            return Input.FAILURE
        if self.dialog is not None:
            dialog_id = DialogId.of_response(response)
            if dialog_id is not None and dialog_id != self.dialog.id:
                return Input.SUCCESS_OTHER_FORK
            return Input.SUCCESS
        if _sdp_of(response) is not None and self.local_sdp is None:
            return Input.SUCCESS_WITH_OFFER
        return Input.SUCCESS

    def _on_invite_response(self, response: Response, now: float) -> list[Output]:
        event = self._classify_invite_response(response)
        next_state = self._next(event)
        status = response.status
        if event is Input.PROVISIONAL:
            out: list[Output] = []
            if self.state not in _PRE_FINAL:
                return out                    # a late 1xx: nothing to learn
            self._early_dialog(response)
            body = _sdp_of(response)
            if body is not None and self.offer_state is OfferState.LOCAL_OFFER:
                self.early_answer = body      # early media: the answer's preview (§13.3.1.1)
            else:
                body = None
            if self.state is State.CANCEL_QUEUED:
                out.append(self._cancel_command())
            self.state = next_state
            if status > 100 and self.state is State.PROCEEDING:
                out.append(ProgressReceived(status=status, reason=response.reason, body=body))
            return out
        if event is Input.FAILURE:
            self._rollback_offer()
            for dialog in self.early.values():
                dialog.terminate()
            self.early.clear()
            if self.state is State.TERMINATED:
                return []
            reason = EndReason.CANCELLED if self._cancelled else EndReason.REJECTED
            return self._end(State.TERMINATED, reason, status)
        if event is Input.RETRY_422:
            if next_state is State.TERMINATED:
                self._rollback_offer()
                return self._end(State.TERMINATED, EndReason.CANCELLED, status)
            return self._retry_initial_422(response)
        if event is Input.SUCCESS_OTHER_FORK:
            # §13.2.2.4: a second 2xx from another fork is ACKed and ended with BYE.
            fork = Dialog.as_uac(self.invite, response)
            ack = fork.create_ack(self.invite_cseq)
            self._acks[(self.invite_cseq, fork.remote_tag)] = ack
            return [SendAck(request=ack), SendRequest(request=fork.create_request("BYE"))]
        if self.state is State.ACKING or self.terminated:
            return []                         # 2xx again before we could ACK
        return self._on_initial_success(response, event, next_state, now)

    def _early_dialog(self, response: Response) -> None:
        remote_tag = tag_of(response.headers.get("to") or "")
        if remote_tag and 100 < response.status and remote_tag not in self.early:
            self.early[remote_tag] = Dialog.as_uac(self.invite, response)

    def _on_initial_success(self, response: Response, event: Input, next_state: State,
                            now: float) -> list[Output]:
        remote_tag = tag_of(response.headers.get("to") or "") or ""
        dialog = self.early.pop(remote_tag, None)
        if dialog is not None:
            dialog.confirm(response)
        else:
            dialog = Dialog.as_uac(self.invite, response)
        for other in self.early.values():
            other.terminate()
        self.early.clear()
        self.dialog = dialog
        self._peer_allow = response
        out: list[Output] = []
        body = _sdp_of(response)
        racing = next_state is State.TERMINATING
        if event is Input.SUCCESS_WITH_OFFER:
            if racing:
                out += self._ack(b"")
                return out + self._send_bye(EndReason.CANCELLED, 200)
            self._offer(OfferInput.RECEIVE_OFFER)
            self.remote_sdp = body
            self.state = State.ACKING
            out.append(OfferReceived(body=body or b"", method="INVITE"))
            out += self._start_timer(negotiate_as_uac(response), now)
            return out
        out += self._ack(b"")
        if racing:
            self._rollback_offer()
            return out + self._send_bye(EndReason.CANCELLED, 200)
        self.state = State.CONFIRMED
        answer = body if body is not None else self.early_answer
        if self.offer_state is OfferState.LOCAL_OFFER:
            if answer is None:
                self._offer(OfferInput.ROLLBACK)
                return out + self._send_bye(EndReason.PROTOCOL_ERROR, None)
            self._offer(OfferInput.RECEIVE_ANSWER)
            self.remote_sdp = answer
            out.append(AnswerReceived(body=answer))
        elif body is None:
            # Late offer and no SDP in the 2xx: §13.2.1 requires the offer there.
            return out + self._send_bye(EndReason.PROTOCOL_ERROR, None)
        out.append(SessionEstablished(dialog_id=dialog.id))
        out += self._start_timer(negotiate_as_uac(response), now)
        return out

    def _ack(self, body: bytes, *, number: int | None = None) -> list[Output]:
        assert self.dialog is not None
        seq = self.invite_cseq if number is None else number
        extra = [(name, value) for name in ("Authorization", "Proxy-Authorization")
                 for value in self.invite.headers.get_all(name)] if seq == self.invite_cseq \
            else []
        ack = self.dialog.create_ack(seq, body=body, content_type=SDP if body else None,
                                     extra=extra)
        self._acks[(seq, self.dialog.remote_tag)] = ack
        return [SendAck(request=ack)]

    def _retry_initial_422(self, response: Response) -> list[Output]:
        # RFC 4028 §7.4 (and §8.1): retry with an interval at least the peer's Min-SE.
        interval = retry_interval(response, self.config.session_timer)
        headers = self.invite.headers.copy()
        headers.remove("via")
        headers.remove("session-expires")
        headers.remove("min-se")
        self.invite_cseq += 1
        headers.set("CSeq", f"{self.invite_cseq} INVITE")
        headers.add("Session-Expires", str(interval))
        headers.add("Min-SE", str(interval))
        self.invite = Request("INVITE", self.invite.uri, headers, self.invite.body)
        for dialog in self.early.values():
            dialog.terminate()
        self.early.clear()
        self.state = State.CALLING
        return [SendRequest(request=self.invite)]

    def _on_modify_response(self, local: _Local, response: Response, now: float
                            ) -> list[Output]:
        status = response.status
        out: list[Output] = []
        dialog = self.dialog
        assert dialog is not None
        if 200 <= status < 300:
            dialog.refresh_target(response)            # §12.2.1.2
            body = _sdp_of(response)
            if local.method == "INVITE" and local.offer is None and body is not None:
                # The 2xx carries the offer; the ACK must carry our answer.
                local.ack_waits_answer = True
                local.response = response
                self._offer(OfferInput.RECEIVE_OFFER)
                self.remote_sdp = body
                out.append(OfferReceived(body=body, method="INVITE"))
                out += self._start_timer(negotiate_as_uac(response), now)
                return out
            if local.method == "INVITE":
                out += self._ack(b"", number=local.cseq)
            self.pending_local = None
            if local.offer is not None:
                if body is None:
                    self._offer(OfferInput.ROLLBACK)
                    out.append(ModificationFailed(method=local.method, status=status))
                    return out + self._after_modification(now)
                self._offer(OfferInput.RECEIVE_ANSWER)
                self.remote_sdp = body
                out.append(AnswerReceived(body=body))
            out.append(ModificationCompleted(method=local.method, local=True))
            out += self._start_timer(negotiate_as_uac(response), now)
            return out + self._after_modification(now)
        self.pending_local = None
        if local.offer is not None:
            self._offer(OfferInput.ROLLBACK)
        if status == 491:
            # §14.1: glare.  The Call-ID owner waits 2.1-4 s, the other 0-2 s (10 ms units).
            delay = (self.rng.randint(210, 400) if self.is_owner
                     else self.rng.randint(0, 200)) / 100.0
            self._glare = _Glare(method=local.method, offer=local.offer,
                                 refresh=local.refresh, at=now + delay,
                                 generation=self._generation)
            return [GlareDetected(method=local.method, retry_at=now + delay)]
        out.append(ModificationFailed(method=local.method, status=status))
        return out + self._after_modification(now)

    def _on_late_modify_response(self, response: Response) -> list[Output]:
        # §13.2.2.4, RFC 5407 §3.1.3: a 2xx that arrives after a BYE is still ACKed.
        local = self.pending_local
        assert local is not None
        self._next(Input.MODIFY_RESPONSE)
        self.pending_local = None
        if local.method == "INVITE" and 200 <= response.status < 300 \
                and self.dialog is not None:
            ack = self.dialog.create_ack(local.cseq)
            self._acks[(local.cseq, self.dialog.remote_tag)] = ack
            return [SendAck(request=ack)]
        return []

    # --- the call layer's decisions -------------------------------------------------

    def progress(self, now: float, status: int = 180, *, body: bytes | None = None
                 ) -> list[Output]:
        """UAS: a provisional response; with ``body``, early media (the answer's preview)."""
        if not 100 < status < 200:
            raise ValueError(f"not a provisional status: {status}")
        self._next(Input.PROGRESS)
        if body is not None:
            if self.offer_state is not OfferState.REMOTE_OFFER:
                raise InvalidTransition("early media needs the offer of the INVITE (no 100rel)")
            self.early_answer = body
        response = self._response(self.invite, status, contact=True, body=body)
        return [SendResponse(response=response, txn=self._txn)]

    def accept(self, now: float, *, body: bytes | None = None) -> list[Output]:
        """UAS: the 2xx.  ``body`` is the answer (default: the early answer) or our offer."""
        next_state = self._next(Input.ACCEPT)
        if self.offer_state is OfferState.REMOTE_OFFER:
            body = body if body is not None else self.early_answer
            if body is None:
                raise InvalidTransition("the 2xx must carry the answer (RFC 3261 §13.3.1.4)")
            self._offer(OfferInput.SEND_ANSWER)
        else:
            if body is None:
                raise InvalidTransition("late offer: the 2xx must carry our offer (§13.2.1)")
            self._offer(OfferInput.SEND_OFFER)
        self.local_sdp = body
        extra = list(self._initial_timer_headers)
        response = self._response(self.invite, 200, contact=True, body=body, extra=extra)
        assert self.dialog is not None
        self.dialog.confirm()
        self.state = next_state
        out: list[Output] = [SendResponse(response=response, txn=self._txn)]
        self._retransmit = _Retransmit(
            response=response, txn=self._txn, cseq=self.invite_cseq, initial=True,
            next_at=now + self.config.t1, interval=self.config.t1,
            give_up_at=now + 64 * self.config.t1)
        out += self._start_timer(self._initial_timer, now)
        return out

    def reject(self, now: float, status: int = 486, *,
               extra: tuple[tuple[str, str], ...] = ()) -> list[Output]:
        """UAS: a final non-2xx to the INVITE (the transaction layer absorbs its ACK)."""
        if not 300 <= status < 700:
            raise ValueError(f"not a failure status: {status}")
        self._next(Input.REJECT)
        self._rollback_offer()
        response = self._response(self.invite, status, extra=extra)
        return [SendResponse(response=response, txn=self._txn),
                *self._end(State.TERMINATED, EndReason.REJECTED, status)]

    def answer(self, now: float, body: bytes) -> list[Output]:
        """The SDP the pending exchange needs.

        After ``OfferReceived``: our answer (in the ACK of a late-offer 2xx, or in
        the 2xx to the peer's re-INVITE/UPDATE).  After ``OfferRequested`` for a
        re-INVITE: our offer for its 2xx.  (The initial INVITE is answered with
        ``accept``.)
        """
        self._next(Input.ANSWER)
        if self.state is State.ACKING:
            self._offer(OfferInput.SEND_ANSWER)
            self.local_sdp = body
            self.state = State.CONFIRMED
            assert self.dialog is not None
            return [*self._ack(body), SessionEstablished(dialog_id=self.dialog.id)]
        local = self.pending_local
        if local is not None and local.ack_waits_answer:
            self._offer(OfferInput.SEND_ANSWER)
            self.local_sdp = body
            self.pending_local = None
            out = self._ack(body, number=local.cseq)
            out.append(ModificationCompleted(method="INVITE", local=True))
            return out + self._after_modification(now)
        remote = self.pending_remote
        if remote is None or remote.answered or self.state is not State.CONFIRMED:
            raise InvalidTransition("no offer or request waiting for SDP")
        return self._answer_remote(remote, body, now)

    def _answer_remote(self, remote: _Remote, body: bytes | None, now: float
                       ) -> list[Output]:
        if body is not None:
            self._offer(OfferInput.SEND_ANSWER if remote.offer is not None
                        else OfferInput.SEND_OFFER)
            self.local_sdp = body
        response = self._response(remote.request, 200, contact=True, body=body,
                                  extra=remote.timer_headers)
        assert self.dialog is not None
        self.dialog.refresh_target(remote.request)       # RFC 6141 §4: on success only
        out: list[Output] = [SendResponse(response=response, txn=remote.txn)]
        out += self._start_timer(remote.timer, now)
        remote.answered = True
        if remote.method == "INVITE":
            self._retransmit = _Retransmit(
                response=response, txn=remote.txn, cseq=remote.cseq, initial=False,
                next_at=now + self.config.t1, interval=self.config.t1,
                give_up_at=now + 64 * self.config.t1)
            return out                                   # completed at the ACK
        if self.pending_remote is remote:
            self.pending_remote = None
        out.append(ModificationCompleted(method=remote.method, local=False))
        return out + self._after_modification(now)

    def reject_offer(self, now: float, status: int = 488) -> list[Output]:
        """Refuse the peer's re-INVITE/UPDATE; the session stays as it was (RFC 6141 §3)."""
        self._next(Input.REJECT_MODIFY)
        remote = self.pending_remote
        if remote is None or remote.answered or not 300 <= status < 700:
            raise InvalidTransition("no peer modification to reject")
        if remote.offer is not None:
            self._offer(OfferInput.ROLLBACK)
        self.pending_remote = None
        out: list[Output] = [SendResponse(response=self._response(remote.request, status),
                                          txn=remote.txn)]
        return out + self._after_modification(now)

    def reinvite(self, now: float, body: bytes | None = None) -> list[Output]:
        """Send a re-INVITE (hold/resume, new media, refresh); ``body`` is the offer."""
        return self._modify("INVITE", body, now, refresh=False)

    def update(self, now: float, body: bytes | None = None) -> list[Output]:
        """Send an UPDATE (RFC 3311); without ``body`` it only refreshes the session."""
        return self._modify("UPDATE", body, now, refresh=False)

    def _modify(self, method: str, body: bytes | None, now: float, *, refresh: bool
                ) -> list[Output]:
        self._next(Input.MODIFY)
        if not self.can_modify:
            raise RequestPending(f"cannot send {method}: another exchange is in progress")
        assert self.dialog is not None
        extra: list[tuple[str, str]] = []
        if self.timer.active and self.timer.interval is not None:
            # RFC 4028 §7.4: every refresh restates the interval; refresher=uac is us.
            we_refresh = self.timer.state is not TimerState.REFRESHEE
            extra = offer_headers(self.config.session_timer, interval=self.timer.interval,
                                  refresher="uac" if we_refresh else "uas")
        extra.append(("Allow", self.config.allow))
        request = self.dialog.create_request(method, body=body or b"",
                                             content_type=SDP if body else None, extra=extra)
        if body is not None:
            self._offer(OfferInput.SEND_OFFER)
            self.local_sdp = body
        self._glare = None
        self.pending_local = _Local(method=method, cseq=cseq(request).seq, offer=body,
                                    refresh=refresh)
        return [SendRequest(request=request)]

    def cancel(self, now: float) -> list[Output]:
        """UAC: cancel the INVITE (sent once a provisional has arrived, §9.1)."""
        next_state = self._next(Input.CANCEL)
        out: list[Output] = []
        if self.state is State.PROCEEDING:
            out.append(self._cancel_command())
        if not self.terminated:
            self._cancelled = True
        self.state = next_state
        return out

    def _cancel_command(self) -> SendCancel:
        return SendCancel(invite=self.invite, cancel=build_cancel(self.invite))

    def hangup(self, now: float, *, status: int = 480) -> list[Output]:
        """End the leg with whatever the state calls for (CANCEL, reject, BYE); idempotent.

        ``status`` is the final response a UAS leg not yet answered gets.
        """
        if self.state in _PRE_FINAL:
            return self.cancel(now)
        if self.state is State.RECEIVED:
            return self.reject(now, status)
        if self.state is State.TERMINATED:
            self._next(Input.BYE)
            return []
        next_state = self._next(Input.BYE)
        if next_state is State.BYE_QUEUED or self.state is State.TERMINATING:
            self.state = next_state
            return []                        # §15: the callee waits for the ACK first
        out: list[Output] = []
        if self.state is State.ACKING:
            out += self._ack(b"")            # see the module notes on the CANCEL race
            self._rollback_offer()
        return out + self._send_bye(EndReason.LOCAL_BYE, None)

    def _send_bye(self, reason: EndReason, status: int | None) -> list[Output]:
        out: list[Output] = []
        remote = self.pending_remote
        if remote is not None and not remote.answered:
            # RFC 5407 §3.1: answer the peer's pending request before our BYE.
            out.append(SendResponse(response=self._response(remote.request, 487),
                                    txn=remote.txn))
            self.pending_remote = None
        self._rollback_offer()
        assert self.dialog is not None
        bye = self.dialog.create_request("BYE")
        self._bye_cseq = self.dialog.local_cseq
        out.append(SendRequest(request=bye))
        out += self._end(State.TERMINATING, reason, status)
        return out

    # --- deadlines ------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline, or None."""
        # Read after every output batch (twice a message): no lists, no calls.
        at = self.timer.deadline
        retransmit = self._retransmit
        if retransmit is not None:
            due = retransmit.next_at
            if retransmit.give_up_at < due:
                due = retransmit.give_up_at
            if at is None or due < at:
                at = due
        glare = self._glare
        if glare is not None and (at is None or glare.at < at):
            at = glare.at
        return at

    def handle_timer(self, now: float) -> list[Output]:
        """Run what is due at ``now``."""
        out: list[Output] = []
        retransmit = self._retransmit
        if retransmit is not None and now >= retransmit.give_up_at:
            # §13.3.1.4: 64*T1 without an ACK: the session ends with a BYE.
            self._next(Input.ACK_TIMEOUT)
            self._retransmit = None
            if not retransmit.initial:
                self.pending_remote = None
                self._rollback_offer()
            out += self._send_bye(EndReason.ACK_TIMEOUT, None)
            return out
        if retransmit is not None and now >= retransmit.next_at:
            self._next(Input.RETRANSMIT_2XX)
            out.append(SendResponse(response=retransmit.response, txn=retransmit.txn,
                                    retransmission=True))
            retransmit.interval = min(retransmit.interval * 2, self.config.t2)
            retransmit.next_at = now + retransmit.interval
        glare = self._glare
        if glare is not None and now >= glare.at:
            self._next(Input.GLARE_RETRY)
            self._glare = None
            out += self._glare_retry(glare, now)
        due = self.timer.handle_timer(now)
        if due is Due.REFRESH:
            self._next(Input.REFRESH_DUE)
            out += self._refresh(now)
        elif due is Due.EXPIRE:
            self._next(Input.SESSION_EXPIRED)
            if self.state is State.ACKING:
                out += self._ack(b"")
            out += self._send_bye(EndReason.SESSION_EXPIRED, None)
        return out

    def _glare_retry(self, glare: _Glare, now: float) -> list[Output]:
        if self.can_modify and glare.generation == self._generation:
            return self._modify(glare.method, glare.offer, now, refresh=glare.refresh)
        if glare.refresh:
            return []      # another exchange completed meanwhile, and it refreshed
        return [ModificationRetryDue(method=glare.method)]

    def _refresh(self, now: float) -> list[Output]:
        """RFC 4028 §10: a session refresh, or later if an exchange is in progress."""
        if not self.can_modify:
            return []      # the exchange in progress refreshes when it succeeds
        if "UPDATE" in [m.upper() for m in self._peer_allow.headers.get_list("allow")]:
            return self._modify("UPDATE", None, now, refresh=True)
        return self._modify("INVITE", self.local_sdp, now, refresh=True)

    def _start_timer(self, negotiated: Negotiated | None, now: float) -> list[Output]:
        if negotiated is None:
            if self.timer.active:
                self.timer.stop()
            return []
        self.timer.start(negotiated, now)
        return [SessionRefreshed(interval=negotiated.interval,
                                 we_refresh=negotiated.we_refresh)]

    def _after_modification(self, now: float) -> list[Output]:
        """A refresh that fell due while busy goes out once idle."""
        if self.timer.state is TimerState.REFRESHING and self.can_modify:
            return self._refresh(now)
        return []

    # --- helpers ----------------------------------------------------------------------

    def _rollback_offer(self) -> None:
        if self.offer_state is not OfferState.STABLE:
            self._offer(OfferInput.ROLLBACK)

    def _end(self, state: State, reason: EndReason, status: int | None, *,
             announce: bool = True) -> list[Output]:
        self.state = state
        self._retransmit = None
        self._glare = None
        # The session is over: no offer is outstanding any more (RFC 6337 §3.4).  Our
        # own re-INVITE stays known, only so that a late 2xx to it is still ACKed.
        self._rollback_offer()
        self.pending_remote = None
        if self.pending_local is not None:
            self.pending_local.offer = None
            self.pending_local.ack_waits_answer = False
        if self.timer.active:
            self.timer.stop()
        if state is State.TERMINATED and self.dialog is not None \
                and self.dialog.state is not DialogState.TERMINATED:
            self.dialog.terminate()
        if self._terminated or not announce:
            return []
        self._terminated = True
        return [SessionTerminated(reason=reason, status=status)]

    def _response(self, request: Request, status: int, *, contact: bool = False,
                  body: bytes | None = None, extra: Iterable[tuple[str, str]] = ()
                  ) -> Response:
        """A response from this UAS (§8.2.6, §12.1.1 for dialog-creating ones)."""
        to_tag = self.dialog.local_tag if self.dialog is not None and self.role is Role.UAS \
            else self.local_tag
        response = make_response(request, status, to_tag=to_tag)
        headers: Headers = response.headers
        if request is self.invite and 100 < status < 300:
            # §12.1.1: dialog-creating responses copy the Record-Route.
            for value in request.headers.get_all("record-route"):
                headers.add("Record-Route", value)
        if contact and self.dialog is not None and self.dialog.local_contact:
            headers.add("Contact", self.dialog.local_contact)
        if 200 <= status < 300 and request.method in ("INVITE", "UPDATE"):
            headers.add("Allow", self.config.allow)
            if self.config.session_timer.enabled:
                headers.add("Supported", "timer")
        for name, value in extra:
            headers.add(name, value)
        if body:
            headers.add("Content-Type", SDP)
            response.body = body
        return response
