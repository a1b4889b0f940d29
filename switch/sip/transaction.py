"""RFC 3261 §17 transactions as table-driven, sans-I/O state machines.

Theory of operation
-------------------
A transaction is a request and every response to it, plus the
retransmissions that make them survive UDP.  There are four machines, one per
figure of RFC 3261 §17, each amended by RFC 6026 (the Accepted states, which
keep a transaction alive after a 2xx so that 2xx retransmissions and the ACK
are routed to the TU instead of being mistaken for new requests):

* INVITE client, Fig. 5 + RFC 6026 §7.2 (``INVITE_CLIENT``)::

      Calling --1xx--> Proceeding --300-699 / ACK--> Completed --D--> Terminated
         |  \\--A: resend        \\--2xx--> Accepted --M--> Terminated
         +--B / transport error--> Terminated

* non-INVITE client, Fig. 6 (``NON_INVITE_CLIENT``)::

      Trying --1xx--> Proceeding --200-699--> Completed --K--> Terminated
       (E: resend, doubling up to T2;  F / transport error --> Terminated)

* INVITE server, Fig. 7 + RFC 6026 §7.1 (``INVITE_SERVER``)::

      Proceeding --300-699--> Completed --ACK--> Confirmed --I--> Terminated
          |                     (G: resend, H --> Terminated)
          +--2xx--> Accepted (ACK --> TU) --L--> Terminated

* non-INVITE server, Fig. 8 (``NON_INVITE_SERVER``)::

      Trying --1xx--> Proceeding --200-699--> Completed --J--> Terminated

The four machines share the ``State`` and ``Input`` vocabularies; each has one
module-level table ``{(State, Input): (State, actions)}`` listing exactly the
pairs it accepts.  A pair that is not in the table raises
``TransactionStateError`` (e.g. a TU answering twice); a retransmitted request
or a late response that the RFC says to absorb is in the table, as an explicit
absorb (no actions).  Actions are values (``Action``) executed in order by
``Transaction._step``; they never touch I/O, they call the ``TransactionSink``
the endpoint provides (queue bytes, schedule a deadline, pass a message up).

Timers are deadlines computed from the ``now`` passed in (DESIGN.md rule 2).
Each transaction keeps ``deadlines[timer]``; the endpoint keeps one heap of
(deadline, timer, transaction) and calls ``fire_timer``, which ignores an
entry whose deadline is no longer the transaction's (lazy deletion).  Over a
reliable transport the retransmission timers (A, E, G) are never started and
the absorb timers (D, I, J, K) are zero: the transition they guard happens at
once (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).

Two guards beyond the RFC keep a transaction from living forever: Timer C for
an INVITE client stuck in Proceeding (§16.6 item 11), and ``TIMER_TU`` for a
server transaction whose TU never answers (the transaction then sends 500
itself and tells the TU it timed out).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import ClassVar, Literal, Protocol

from switch.fsm import FastEnum
from switch.sip.errors import SipError
from switch.sip.headers import cseq, tag_of
from switch.sip.message import Headers, Message, Request, Response, make_response, split_list
from switch.sip.timers import TimerConfig

# --- addresses the transaction layer sends to and receives from -------------------

TransportName = Literal["udp", "tcp"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """Where a message came from. ``connection_id`` identifies a TCP connection."""

    transport: str          # 'udp' | 'tcp'
    host: str
    port: int
    connection_id: int | None = None
    local_host: str = ""
    local_port: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """Where to send. Over TCP, ``connection_id`` names the connection to reuse
    (§18.2.2); when it is gone the transport connects to host:port."""

    transport: str          # 'udp' | 'tcp'
    host: str
    port: int
    connection_id: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """Bytes to put on the wire; ``transaction_id`` lets the driver report a failure."""

    data: bytes
    destination: Destination
    transaction_id: int | None = None


# --- vocabulary ------------------------------------------------------------------


class State(FastEnum):
    # Members are singletons: identity hashing keeps table lookups in C (Enum's own
    # __hash__ is a Python function, measurable on the hot path).
    __hash__ = object.__hash__

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"        # RFC 6026 §7.1, §7.2
    TERMINATED = "Terminated"


class Input(FastEnum):
    __hash__ = object.__hash__

    # from the network
    REQUEST = "request retransmission"      # server: the request that created it, again
    ACK = "ACK"                             # INVITE server: the ACK that matches it
    PROVISIONAL = "1xx"                     # client: responses
    FINAL_2XX = "2xx"
    FINAL_3XX_6XX = "300-699"
    # from the TU (server transactions)
    TU_1XX = "1xx from TU"
    TU_2XX = "2xx from TU"
    TU_3XX_6XX = "300-699 from TU"
    # timers (§17, Table 4 of Appendix A; L and M from RFC 6026 §8; C from §16.6)
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_C = "Timer C"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TIMER_TU = "TU guard"
    # from the transport
    TRANSPORT_ERROR = "transport error"


TIMERS: frozenset[Input] = frozenset(i for i in Input if i.name.startswith("TIMER_"))


class Action(FastEnum):
    __hash__ = object.__hash__

    SEND_REQUEST = "send request"           # (re)send the request bytes
    SEND_RESPONSE = "send response"         # (re)send the last response
    SEND_TRYING = "send 100 Trying"         # §17.2.1
    SEND_ACK = "send ACK"                   # §17.1.1.3, for a non-2xx final
    SEND_500 = "send 500"                   # TU guard: the TU never answered
    PASS_TO_TU = "pass to TU"
    INFORM_TIMEOUT = "inform TU: timeout"
    INFORM_TRANSPORT_ERROR = "inform TU: transport error"
    CANCEL_TIMERS = "cancel timers"
    START_A = "start A"                     # T1 over UDP
    DOUBLE_A = "restart A at 2x"            # §17.1.1.2: no cap
    START_B = "start B"
    START_C = "start C"
    START_D = "start D"
    START_E = "start E"                     # T1 over UDP
    BACKOFF_E = "restart E at min(2x, T2)"  # §17.1.2.2 Trying
    START_E_T2 = "restart E at T2"          # §17.1.2.2 Proceeding
    START_F = "start F"
    START_G = "start G"
    BACKOFF_G = "restart G at min(2x, T2)"  # §17.2.1
    START_H = "start H"
    START_I = "start I"
    START_J = "start J"
    START_K = "start K"
    START_L = "start L"
    START_M = "start M"
    START_TU = "start TU guard"


Row = tuple[State, tuple[Action, ...]]
Table = dict[tuple[State, Input], Row]

S = State
I = Input  # noqa: E741 - table shorthand
A = Action
ABSORB: tuple[Action, ...] = ()

# RFC 3261 Fig. 5, with RFC 6026 §7.2 (2xx → Accepted, Timer M) and Timer C.
INVITE_CLIENT: Table = {
    (S.CALLING, I.TIMER_A): (S.CALLING, (A.SEND_REQUEST, A.DOUBLE_A)),
    (S.CALLING, I.TIMER_B): (S.TERMINATED, (A.INFORM_TIMEOUT,)),
    (S.CALLING, I.PROVISIONAL): (S.PROCEEDING, (A.CANCEL_TIMERS, A.PASS_TO_TU, A.START_C)),
    (S.CALLING, I.FINAL_2XX): (S.ACCEPTED, (A.CANCEL_TIMERS, A.PASS_TO_TU, A.START_M)),
    (S.CALLING, I.FINAL_3XX_6XX): (S.COMPLETED,
                                   (A.CANCEL_TIMERS, A.PASS_TO_TU, A.SEND_ACK, A.START_D)),
    (S.CALLING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.INFORM_TRANSPORT_ERROR,)),
    (S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, (A.PASS_TO_TU, A.START_C)),
    (S.PROCEEDING, I.FINAL_2XX): (S.ACCEPTED, (A.CANCEL_TIMERS, A.PASS_TO_TU, A.START_M)),
    (S.PROCEEDING, I.FINAL_3XX_6XX): (S.COMPLETED,
                                      (A.CANCEL_TIMERS, A.PASS_TO_TU, A.SEND_ACK, A.START_D)),
    (S.PROCEEDING, I.TIMER_C): (S.TERMINATED, (A.INFORM_TIMEOUT,)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.INFORM_TRANSPORT_ERROR,)),
    # §17.1.1.2: a retransmitted final is answered with the ACK again, not passed up.
    (S.COMPLETED, I.FINAL_3XX_6XX): (S.COMPLETED, (A.SEND_ACK,)),
    (S.COMPLETED, I.PROVISIONAL): (S.COMPLETED, ABSORB),
    (S.COMPLETED, I.FINAL_2XX): (S.COMPLETED, ABSORB),
    (S.COMPLETED, I.TIMER_D): (S.TERMINATED, ABSORB),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (A.INFORM_TRANSPORT_ERROR,)),
    # RFC 6026 §7.2: every 2xx (retransmission or another fork) goes to the TU,
    # which ACKs it; anything else is absorbed.
    (S.ACCEPTED, I.FINAL_2XX): (S.ACCEPTED, (A.PASS_TO_TU,)),
    (S.ACCEPTED, I.PROVISIONAL): (S.ACCEPTED, ABSORB),
    (S.ACCEPTED, I.FINAL_3XX_6XX): (S.ACCEPTED, ABSORB),
    (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, ABSORB),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, ABSORB),   # nothing is sent in Accepted
}

_NON_INVITE_FINAL = (A.CANCEL_TIMERS, A.PASS_TO_TU, A.START_K)

# RFC 3261 Fig. 6.
NON_INVITE_CLIENT: Table = {
    (S.TRYING, I.TIMER_E): (S.TRYING, (A.SEND_REQUEST, A.BACKOFF_E)),
    (S.TRYING, I.TIMER_F): (S.TERMINATED, (A.INFORM_TIMEOUT,)),
    (S.TRYING, I.PROVISIONAL): (S.PROCEEDING, (A.PASS_TO_TU,)),     # E and F keep running
    (S.TRYING, I.FINAL_2XX): (S.COMPLETED, _NON_INVITE_FINAL),
    (S.TRYING, I.FINAL_3XX_6XX): (S.COMPLETED, _NON_INVITE_FINAL),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.INFORM_TRANSPORT_ERROR,)),
    (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, (A.SEND_REQUEST, A.START_E_T2)),
    (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, (A.INFORM_TIMEOUT,)),
    (S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, (A.PASS_TO_TU,)),
    (S.PROCEEDING, I.FINAL_2XX): (S.COMPLETED, _NON_INVITE_FINAL),
    (S.PROCEEDING, I.FINAL_3XX_6XX): (S.COMPLETED, _NON_INVITE_FINAL),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.INFORM_TRANSPORT_ERROR,)),
    # §17.1.2.2: Completed buffers response retransmissions.
    (S.COMPLETED, I.PROVISIONAL): (S.COMPLETED, ABSORB),
    (S.COMPLETED, I.FINAL_2XX): (S.COMPLETED, ABSORB),
    (S.COMPLETED, I.FINAL_3XX_6XX): (S.COMPLETED, ABSORB),
    (S.COMPLETED, I.TIMER_K): (S.TERMINATED, ABSORB),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.COMPLETED, ABSORB),  # nothing is sent in Completed
}

_GIVE_UP_INVITE = (A.CANCEL_TIMERS, A.SEND_500, A.INFORM_TIMEOUT, A.START_G, A.START_H)

# RFC 3261 Fig. 7, with RFC 6026 §7.1 (2xx → Accepted, Timer L) and the TU guard.
INVITE_SERVER: Table = {
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (A.SEND_RESPONSE,)),   # §17.2.1
    (S.PROCEEDING, I.TU_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_2XX): (S.ACCEPTED, (A.CANCEL_TIMERS, A.SEND_RESPONSE, A.START_L)),
    (S.PROCEEDING, I.TU_3XX_6XX): (S.COMPLETED,
                                   (A.CANCEL_TIMERS, A.SEND_RESPONSE, A.START_G, A.START_H)),
    (S.PROCEEDING, I.TIMER_TU): (S.COMPLETED, _GIVE_UP_INVITE),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.INFORM_TRANSPORT_ERROR,)),
    # An ACK before any final response acknowledges nothing (§17.2.1); dropped.
    (S.PROCEEDING, I.ACK): (S.PROCEEDING, ABSORB),
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (A.SEND_RESPONSE,)),
    (S.COMPLETED, I.ACK): (S.CONFIRMED, (A.CANCEL_TIMERS, A.START_I)),
    (S.COMPLETED, I.TIMER_G): (S.COMPLETED, (A.SEND_RESPONSE, A.BACKOFF_G)),
    (S.COMPLETED, I.TIMER_H): (S.TERMINATED, (A.INFORM_TIMEOUT,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (A.INFORM_TRANSPORT_ERROR,)),
    # §17.2.1: Confirmed absorbs further ACKs (and late INVITE retransmissions).
    (S.CONFIRMED, I.ACK): (S.CONFIRMED, ABSORB),
    (S.CONFIRMED, I.REQUEST): (S.CONFIRMED, ABSORB),
    (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, ABSORB),
    (S.CONFIRMED, I.TRANSPORT_ERROR): (S.CONFIRMED, ABSORB),  # nothing is sent in Confirmed
    # RFC 6026 §7.1: INVITE retransmissions are absorbed, ACKs go to the TU, the TU
    # retransmits its 2xx (§13.3.1.4) through the transaction.
    (S.ACCEPTED, I.REQUEST): (S.ACCEPTED, ABSORB),
    (S.ACCEPTED, I.ACK): (S.ACCEPTED, (A.PASS_TO_TU,)),
    (S.ACCEPTED, I.TU_2XX): (S.ACCEPTED, (A.SEND_RESPONSE,)),
    (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, ABSORB),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, (A.INFORM_TRANSPORT_ERROR,)),
}

_NON_INVITE_ANSWER = (A.CANCEL_TIMERS, A.SEND_RESPONSE, A.START_J)
_GIVE_UP_NON_INVITE = (A.CANCEL_TIMERS, A.SEND_500, A.INFORM_TIMEOUT, A.START_J)

# RFC 3261 Fig. 8, with the TU guard.
NON_INVITE_SERVER: Table = {
    (S.TRYING, I.REQUEST): (S.TRYING, ABSORB),       # §17.2.2: discarded in Trying
    (S.TRYING, I.TU_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.TRYING, I.TU_2XX): (S.COMPLETED, _NON_INVITE_ANSWER),
    (S.TRYING, I.TU_3XX_6XX): (S.COMPLETED, _NON_INVITE_ANSWER),
    (S.TRYING, I.TIMER_TU): (S.COMPLETED, _GIVE_UP_NON_INVITE),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.INFORM_TRANSPORT_ERROR,)),
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_1XX): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_2XX): (S.COMPLETED, _NON_INVITE_ANSWER),
    (S.PROCEEDING, I.TU_3XX_6XX): (S.COMPLETED, _NON_INVITE_ANSWER),
    (S.PROCEEDING, I.TIMER_TU): (S.COMPLETED, _GIVE_UP_NON_INVITE),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (A.INFORM_TRANSPORT_ERROR,)),
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (A.SEND_RESPONSE,)),
    (S.COMPLETED, I.TIMER_J): (S.TERMINATED, ABSORB),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (A.INFORM_TRANSPORT_ERROR,)),
}

del S, I, A


class TransactionStateError(SipError):
    """An input the transaction's table does not accept in its current state."""

    status = 500
    reason = "Server Internal Error"


class TransactionSink(Protocol):
    """What a transaction's actions produce; the endpoint implements it (sans-I/O)."""

    def send(self, transaction: Transaction, data: bytes, method: str, status: int) -> None:
        """Queue bytes for ``transaction.destination``; ``status`` 0 for a request."""

    def schedule(self, transaction: Transaction, timer: Input, deadline: float) -> None:
        """Call ``transaction.fire_timer(timer, deadline, now)`` once ``now >= deadline``."""

    def pass_up(self, transaction: Transaction, message: Message) -> None:
        """A response (client) or an ACK in Accepted (INVITE server) for the TU."""

    def timed_out(self, transaction: Transaction, timer: Input) -> None: ...

    def transport_failed(self, transaction: Transaction) -> None: ...

    def terminated(self, transaction: Transaction) -> None: ...


_tag_prefix = secrets.token_hex(4)
_tag_counter = count(1)


def new_tag() -> str:
    """A From/To tag unique to this process (RFC 3261 §19.3: at least 32 random bits)."""
    return f"{_tag_prefix}{next(_tag_counter):x}"


def new_branch() -> str:
    """An RFC 3261 branch (§8.1.1.7: magic cookie + unique in space and time)."""
    return f"z9hG4bK{_tag_prefix}{next(_tag_counter):x}"


def _top_via_line(request: Request) -> str:
    first = request.headers.get("via")
    if first is None:
        raise SipError("request without Via", status=400)
    return split_list(first)[0] if "," in first else first


def make_ack(request: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response to ``request`` (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From, top Via (hence branch) and CSeq number as
    the INVITE, method ACK; To from the response (it carries the tag); the
    INVITE's Route header fields.
    """
    src = request.headers
    headers = Headers()
    headers.add("Via", _top_via_line(request))
    headers.add("Max-Forwards", "70")
    for route in src.get_all("route"):
        headers.add("Route", route)
    headers.add("From", src.get("from") or "")
    headers.add("To", response.headers.get("to") or src.get("to") or "")
    headers.add("Call-ID", src.get("call-id") or "")
    headers.add("CSeq", f"{cseq(request).seq} ACK")
    return Request("ACK", request.uri, headers)


def make_cancel(request: Request) -> Request:
    """A CANCEL for ``request`` (RFC 3261 §9.1): same Request-URI, Call-ID, To,
    From, top Via and CSeq number; the request's Route header fields."""
    src = request.headers
    headers = Headers()
    headers.add("Via", _top_via_line(request))
    headers.add("Max-Forwards", "70")
    for route in src.get_all("route"):
        headers.add("Route", route)
    for name in ("From", "To", "Call-ID"):
        headers.add(name, src.get(name) or "")
    headers.add("CSeq", f"{cseq(request).seq} CANCEL")
    return Request("CANCEL", request.uri, headers)


class Transaction:
    """What the four machines share: state, deadlines and the action executor."""

    __slots__ = ("id", "state", "sink", "config", "reliable", "destination", "deadlines",
                 "interval", "method", "request", "key", "_fire_now", "_durations")

    table: ClassVar[Table]
    initial_state: ClassVar[State]
    initial_actions: ClassVar[tuple[Action, ...]]
    is_client: ClassVar[bool]
    # ``table`` and ``initial_actions`` compiled by ``_compile`` below, done by
    # _step without a call per CANCEL_TIMERS or START_x nor an _ACTIONS lookup.
    _rows: ClassVar[dict[tuple[State, Input], CompiledRow]]
    _initial: ClassVar[CompiledRow]

    def __init__(self, transaction_id: int, request: Request, destination: Destination,
                 sink: TransactionSink, config: TimerConfig) -> None:
        self.id = transaction_id
        self.state = self.initial_state
        self.sink = sink
        self.config = config
        self.destination = destination
        self.reliable = destination.transport != "udp"
        self.deadlines: dict[Input, float] = {}
        self.interval = config.t1
        self.method = request.method
        self.request: Request | None = request
        self.key: tuple[object, ...] = ()
        self._fire_now: Input | None = None
        cached = _DURATIONS.get((id(config), self.reliable))    # _fixed_durations, inlined
        self._durations = (cached[1] if cached is not None and cached[0] is config
                           else _fixed_durations(config, self.reliable))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.method} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def start(self, now: float) -> None:
        """Run the machine's initial actions (sending the request, starting timers)."""
        self._step(Input.REQUEST, now, None, self._initial)

    def accepts(self, inp: Input) -> bool:
        return (self.state, inp) in self.table

    def fire_timer(self, timer: Input, deadline: float, now: float) -> bool:
        """Fire ``timer`` if ``deadline`` is still its deadline (lazy deletion)."""
        if self.deadlines.get(timer) != deadline:
            return False
        del self.deadlines[timer]
        self._step(timer, now, None)
        return True

    def transport_error(self, now: float) -> None:
        self._step(Input.TRANSPORT_ERROR, now, None)

    # --- the executor ---------------------------------------------------------

    def _step(self, inp: Input, now: float, message: Message | None,
              row: CompiledRow | None = None) -> None:
        """Take ``inp`` by the table (``row``: the initial actions, from start)."""
        if row is None:
            row = self._rows.get((self.state, inp))
            if row is None:
                raise self._refused(inp)
        self.state, cancel_timers, actions, starts = row
        if cancel_timers:
            self.deadlines.clear()
        for action in actions:
            action(self, now, inp, message)
        for timer, compute in starts:       # the row's START_x, after its other actions
            length = self._durations[timer] if compute is None else compute(self)
            if length is None:
                continue
            deadline = now + length
            self.deadlines[timer] = deadline
            if length == 0.0:
                self._fire_now = timer
            else:
                self.sink.schedule(self, timer, deadline)
        # _after has nothing to do in the usual case: no call for it then.
        if self._fire_now is not None or self.state is State.TERMINATED:
            self._after(now)

    def _refused(self, inp: Input) -> TransactionStateError:
        return TransactionStateError(
            f"{type(self).__name__} {self.id} ({self.method}): input {inp.value!r} "
            f"not accepted in state {self.state.value}")

    def _after(self, now: float) -> None:
        # A zero-duration timer (D, I, J, K over a reliable transport) fires at once.
        pending = self._fire_now
        if pending is not None:
            self._fire_now = None
            self.deadlines.pop(pending, None)
            self._step(pending, now, None)
            return
        if self.state is State.TERMINATED:
            self.deadlines.clear()
            self.request = None
            self.sink.terminated(self)

    # Overridden by the kinds that support them; the tables never ask otherwise.
    def _send_request(self, now: float, inp: Input, message: Message | None) -> None:
        raise TransactionStateError(f"{self!r} has no request to send")

    def _send_response(self, now: float, inp: Input, message: Message | None) -> None:
        raise TransactionStateError(f"{self!r} has no response to send")


# --- client transactions (§17.1) ----------------------------------------------------


class ClientTransaction(Transaction):
    __slots__ = ("request_bytes", "ack_bytes", "branch", "finals_passed")

    is_client = True

    def __init__(self, transaction_id: int, request: Request, destination: Destination,
                 sink: TransactionSink, config: TimerConfig, *, branch: str) -> None:
        super().__init__(transaction_id, request, destination, sink, config)
        self.request_bytes = request.encode()
        self.ack_bytes: bytes | None = None
        self.branch = branch
        self.finals_passed = 0

    def receive_response(self, response: Response, now: float) -> None:
        """A response matched to this transaction (§17.1.3)."""
        status = response.status
        if status < 200:
            inp = Input.PROVISIONAL
        elif status < 300:
            inp = Input.FINAL_2XX
        else:
            inp = Input.FINAL_3XX_6XX
        self._step(inp, now, response)
        if status >= 200:
            # Nothing is retransmitted after a final response (the ACK is built).
            self.request = None
            self.request_bytes = b""

    def _send_request(self, now: float, inp: Input, message: Message | None) -> None:
        self.sink.send(self, self.request_bytes, self.method, 0)


class InviteClientTransaction(ClientTransaction):
    __slots__ = ()

    table = INVITE_CLIENT
    initial_state = State.CALLING
    initial_actions = (Action.SEND_REQUEST, Action.START_A, Action.START_B)


class NonInviteClientTransaction(ClientTransaction):
    __slots__ = ()

    table = NON_INVITE_CLIENT
    initial_state = State.TRYING
    initial_actions = (Action.SEND_REQUEST, Action.START_E, Action.START_F)


# --- server transactions (§17.2) ----------------------------------------------------


class ServerTransaction(Transaction):
    __slots__ = ("response_bytes", "response_status", "to_tag", "request_to_tag")

    is_client = False

    def __init__(self, transaction_id: int, request: Request, destination: Destination,
                 sink: TransactionSink, config: TimerConfig) -> None:
        super().__init__(transaction_id, request, destination, sink, config)
        self.response_bytes = b""
        self.response_status = 0
        # The To tag of the last response sent: RFC 2543 ACK matching (§17.2.3) and
        # the To tag of a 200 to CANCEL (§9.2).
        self.to_tag: str | None = None
        self.request_to_tag: str | None = None

    def send_response(self, response: Response, now: float) -> None:
        """A response from the TU (§17.2.1, §17.2.2)."""
        status = response.status
        if status < 200:
            inp = Input.TU_1XX
        elif status < 300:
            inp = Input.TU_2XX
        else:
            inp = Input.TU_3XX_6XX
        if (self.state, inp) not in self._rows:
            raise self._refused(inp)        # before the refused response is recorded
        self._set_response(response)
        self._step(inp, now, response)

    def receive_request(self, request: Request, now: float) -> None:
        """A retransmission of the request, or (INVITE) the ACK, matched to us (§17.2.3)."""
        self._step(Input.ACK if request.method == "ACK" else Input.REQUEST, now, request)

    def _set_response(self, response: Response) -> None:
        self.response_bytes = response.encode()
        status = self.response_status = response.status
        if self.method == "INVITE" and status > 100:
            to = response.headers.get("to")
            if to is not None:
                self.to_tag = tag_of(to)
        if status >= 200:
            # Matching no longer needs the request (the key and to_tag suffice);
            # dropping it keeps a transaction in Completed small for the 32 s of
            # Timer J, which matters to memory and to the cyclic GC.
            self.request = None

    def _send_response(self, now: float, inp: Input, message: Message | None) -> None:
        self.sink.send(self, self.response_bytes, self.method, self.response_status)


class InviteServerTransaction(ServerTransaction):
    __slots__ = ()

    table = INVITE_SERVER
    initial_state = State.PROCEEDING
    initial_actions = (Action.SEND_TRYING, Action.START_TU)


class NonInviteServerTransaction(ServerTransaction):
    __slots__ = ()

    table = NON_INVITE_SERVER
    initial_state = State.TRYING
    initial_actions = (Action.START_TU,)


# --- actions --------------------------------------------------------------------------


ActionFunction = Callable[["Transaction", float, Input, "Message | None"], None]
DurationFunction = Callable[["Transaction"], "float | None"]
# A START_x action: the timer and how long (None: the transaction's fixed duration).
TimerStart = tuple[Input, "DurationFunction | None"]
# (new state, CANCEL_TIMERS first?, the other actions, then the timers started)
CompiledRow = tuple[State, bool, tuple[ActionFunction, ...], tuple[TimerStart, ...]]


def _send_request(txn: Transaction, now: float, inp: Input, message: Message | None) -> None:
    txn._send_request(now, inp, message)


def _send_response(txn: Transaction, now: float, inp: Input, message: Message | None) -> None:
    txn._send_response(now, inp, message)


def _send_trying(txn: Transaction, now: float, inp: Input, message: Message | None) -> None:
    assert isinstance(txn, ServerTransaction) and txn.request is not None
    txn._set_response(make_response(txn.request, 100))
    txn._send_response(now, inp, message)


def _send_500(txn: Transaction, now: float, inp: Input, message: Message | None) -> None:
    assert isinstance(txn, ServerTransaction)
    request = txn.request
    if request is None:
        return
    txn._set_response(make_response(
        request, 500, to_tag=new_tag(),
        extra=(("Warning", '399 switch "no response from the application"'),)))
    txn._send_response(now, inp, message)


def _send_ack(txn: Transaction, now: float, inp: Input, message: Message | None) -> None:
    assert isinstance(txn, ClientTransaction)
    if txn.ack_bytes is None:
        request = txn.request
        if request is None or not isinstance(message, Response):
            return
        txn.ack_bytes = make_ack(request, message).encode()
    txn.sink.send(txn, txn.ack_bytes, "ACK", 0)


def _pass_to_tu(txn: Transaction, now: float, inp: Input, message: Message | None) -> None:
    if message is not None:
        if txn.is_client and isinstance(message, Response) and message.status >= 200:
            assert isinstance(txn, ClientTransaction)
            txn.finals_passed += 1
        txn.sink.pass_up(txn, message)


def _inform_timeout(txn: Transaction, now: float, inp: Input, message: Message | None) -> None:
    txn.sink.timed_out(txn, inp)


def _inform_transport_error(txn: Transaction, now: float, inp: Input,
                            message: Message | None) -> None:
    txn.sink.transport_failed(txn)


def _cancel_timers(txn: Transaction, now: float, inp: Input, message: Message | None) -> None:
    txn.deadlines.clear()


Durations = dict[Input, float | None]
_DURATIONS: dict[tuple[int, bool], tuple[TimerConfig, Durations]] = {}


def _fixed_durations(config: TimerConfig, reliable: bool) -> Durations:
    """The timers whose duration depends only on the config and the transport,
    computed once per (config, reliable) rather than at every start."""
    cached = _DURATIONS.get((id(config), reliable))
    if cached is not None and cached[0] is config:
        return cached[1]
    durations: Durations = {
        # A, E and G start at T1 (``interval`` starts at T1, and nothing changes it
        # before they start), then back off with _double/_backoff/_at_t2.
        Input.TIMER_A: config.retransmit_first(reliable),
        Input.TIMER_E: config.retransmit_first(reliable),
        Input.TIMER_G: config.retransmit_first(reliable),
        Input.TIMER_B: config.timeout,
        Input.TIMER_C: config.timer_c,
        Input.TIMER_D: config.timer_d_for(reliable),
        Input.TIMER_F: config.timeout,
        Input.TIMER_H: config.timeout,
        Input.TIMER_I: config.timer_i_for(reliable),
        Input.TIMER_J: config.timer_j_for(reliable),
        Input.TIMER_K: config.timer_k_for(reliable),
        Input.TIMER_L: config.timeout,
        Input.TIMER_M: config.timeout,
        Input.TIMER_TU: config.tu_guard,
    }
    if len(_DURATIONS) >= 64:       # configs are few; tests make many
        _DURATIONS.clear()
    _DURATIONS[(id(config), reliable)] = (config, durations)
    return durations


def _double(txn: Transaction) -> float | None:
    txn.interval *= 2
    return txn.interval


def _backoff(txn: Transaction) -> float | None:
    txn.interval = min(txn.interval * 2, txn.config.t2)
    return txn.interval


def _at_t2(txn: Transaction) -> float | None:
    txn.interval = txn.config.t2
    return txn.interval


_ACTIONS: dict[Action, ActionFunction] = {
    Action.SEND_REQUEST: _send_request,
    Action.SEND_RESPONSE: _send_response,
    Action.SEND_TRYING: _send_trying,
    Action.SEND_ACK: _send_ack,
    Action.SEND_500: _send_500,
    Action.PASS_TO_TU: _pass_to_tu,
    Action.INFORM_TIMEOUT: _inform_timeout,
    Action.INFORM_TRANSPORT_ERROR: _inform_transport_error,
    Action.CANCEL_TIMERS: _cancel_timers,
}

_TIMER_STARTS: dict[Action, TimerStart] = {
    Action.START_A: (Input.TIMER_A, None),
    Action.DOUBLE_A: (Input.TIMER_A, _double),
    Action.START_B: (Input.TIMER_B, None),
    Action.START_C: (Input.TIMER_C, None),
    Action.START_D: (Input.TIMER_D, None),
    Action.START_E: (Input.TIMER_E, None),
    Action.BACKOFF_E: (Input.TIMER_E, _backoff),
    Action.START_E_T2: (Input.TIMER_E, _at_t2),
    Action.START_F: (Input.TIMER_F, None),
    Action.START_G: (Input.TIMER_G, None),
    Action.BACKOFF_G: (Input.TIMER_G, _backoff),
    Action.START_H: (Input.TIMER_H, None),
    Action.START_I: (Input.TIMER_I, None),
    Action.START_J: (Input.TIMER_J, None),
    Action.START_K: (Input.TIMER_K, None),
    Action.START_L: (Input.TIMER_L, None),
    Action.START_M: (Input.TIMER_M, None),
    Action.START_TU: (Input.TIMER_TU, None),
}

assert set(_ACTIONS) | set(_TIMER_STARTS) == set(Action)


def _compile(cls: type[Transaction]) -> None:
    def action_function(action: Action) -> ActionFunction:
        # The sends straight to the class's method: one call less than _ACTIONS'.
        if action is Action.SEND_REQUEST:
            return cls._send_request
        if action is Action.SEND_RESPONSE:
            return cls._send_response
        return _ACTIONS[action]

    def compiled(state: State, actions: tuple[Action, ...]) -> CompiledRow:
        cancel = actions[:1] == (Action.CANCEL_TIMERS,)
        rest = actions[1:] if cancel else actions
        others = tuple(a for a in rest if a not in _TIMER_STARTS)
        starts = rest[len(others):]
        # _step runs the timers last: the tables list them last.
        assert all(a in _TIMER_STARTS for a in starts), f"{cls.__name__}: {actions}"
        return state, cancel, tuple(action_function(a) for a in others), tuple(
            _TIMER_STARTS[a] for a in starts)

    cls._rows = {key: compiled(state, actions) for key, (state, actions) in cls.table.items()}
    cls._initial = compiled(cls.initial_state, cls.initial_actions)


MACHINES: dict[str, type[Transaction]] = {
    "invite_client": InviteClientTransaction,
    "non_invite_client": NonInviteClientTransaction,
    "invite_server": InviteServerTransaction,
    "non_invite_server": NonInviteServerTransaction,
}

for _machine in MACHINES.values():
    _compile(_machine)
