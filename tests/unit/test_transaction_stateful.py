"""Hypothesis state machines: random inputs and times into each transaction machine.

Invariants (RFC 3261 §17): a terminated transaction never sends again; a client
transaction passes at most one final response up (RFC 6026 §7.2 aside: every
2xx an INVITE client sees in Accepted goes up, and nothing else after it);
no timer is ever set in the past; inputs outside the table raise and change
nothing.
"""

from __future__ import annotations

import heapq

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from switch.sip.message import Headers, Message, Request, Response, make_response
from switch.sip.timers import TimerConfig
from switch.sip.transaction import (
    ClientTransaction,
    Destination,
    Input,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    State,
    Transaction,
    TransactionStateError,
    make_ack,
)

CONFIG = TimerConfig(timer_c=90.0)


def request(method: str) -> Request:
    return Request(method, "sip:bob@example.com", Headers([
        ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKh"),
        ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "h1"),
        ("CSeq", f"1 {method}"),
    ]))


class Sink:
    def __init__(self) -> None:
        self.now = 0.0
        self.sends: list[float] = []
        self.past_timers: list[tuple[Input, float, float]] = []
        self.heap: list[tuple[float, int, Input]] = []
        self.seq = 0
        self.finals: list[int] = []
        self.terminated_at: int | None = None

    def send(self, transaction: Transaction, data: bytes, method: str, status: int) -> None:
        self.sends.append(self.now)

    def schedule(self, transaction: Transaction, timer: Input, deadline: float) -> None:
        if deadline < self.now:
            self.past_timers.append((timer, deadline, self.now))
        self.seq += 1
        heapq.heappush(self.heap, (deadline, self.seq, timer))

    def pass_up(self, transaction: Transaction, message: Message) -> None:
        if isinstance(message, Response) and message.status >= 200:
            self.finals.append(message.status)

    def timed_out(self, transaction: Transaction, timer: Input) -> None:
        pass

    def transport_failed(self, transaction: Transaction) -> None:
        pass

    def terminated(self, transaction: Transaction) -> None:
        assert self.terminated_at is None, "terminated twice"
        self.terminated_at = len(self.sends)


NETWORK_CLIENT = [Input.PROVISIONAL, Input.FINAL_2XX, Input.FINAL_3XX_6XX,
                  Input.TRANSPORT_ERROR]
NETWORK_SERVER = [Input.REQUEST, Input.ACK, Input.TU_1XX, Input.TU_2XX, Input.TU_3XX_6XX,
                  Input.TRANSPORT_ERROR]
STATUS = {Input.PROVISIONAL: (100, 180, 183), Input.FINAL_2XX: (200, 202),
          Input.FINAL_3XX_6XX: (302, 404, 486, 503, 603),
          Input.TU_1XX: (180,), Input.TU_2XX: (200,), Input.TU_3XX_6XX: (404, 486)}


class TransactionMachine(RuleBasedStateMachine):
    cls: type[Transaction] = NonInviteServerTransaction
    method = "OPTIONS"
    inputs: list[Input] = NETWORK_SERVER

    def __init__(self) -> None:
        super().__init__()
        self.sink = Sink()
        self.txn: Transaction

    @initialize(reliable=st.booleans())
    def start(self, reliable: bool) -> None:
        destination = Destination(transport="tcp" if reliable else "udp", host="192.0.2.9",
                                  port=5060)
        self.req = request(self.method)
        if issubclass(self.cls, ClientTransaction):
            self.txn = self.cls(1, self.req, destination, self.sink, CONFIG, branch="z9hG4bKh")
        else:
            self.txn = self.cls(1, self.req, destination, self.sink, CONFIG)
        self.txn.start(0.0)

    @rule(data=st.data(), index=st.integers(0, 20))
    def feed(self, data: st.DataObject, index: int) -> None:
        txn = self.txn
        if txn.terminated:
            return      # the endpoint no longer routes anything to it
        inp = self.inputs[index % len(self.inputs)]
        before_state = txn.state
        before_sends = len(self.sink.sends)
        message: Message | None = None
        if inp in STATUS:
            message = make_response(self.req, data.draw(st.sampled_from(STATUS[inp])),
                                    to_tag="t")
        elif inp is Input.REQUEST:
            message = self.req
        elif inp is Input.ACK:
            message = make_ack(self.req, make_response(self.req, 486, to_tag="t"))
        accepted = txn.accepts(inp)
        try:
            if isinstance(txn, ClientTransaction) and isinstance(message, Response):
                txn.receive_response(message, self.sink.now)
            elif isinstance(txn, ServerTransaction) and isinstance(message, Response):
                txn.send_response(message, self.sink.now)
            elif isinstance(txn, ServerTransaction) and isinstance(message, Request):
                txn.receive_request(message, self.sink.now)
            else:
                txn.transport_error(self.sink.now)
        except TransactionStateError:
            assert not accepted
            assert txn.state is before_state
            assert len(self.sink.sends) == before_sends
        else:
            assert accepted

    @rule(dt=st.floats(0.0, 40.0, allow_nan=False))
    def advance(self, dt: float) -> None:
        sink = self.sink
        until = sink.now + dt
        while sink.heap and sink.heap[0][0] <= until:
            deadline, _, timer = heapq.heappop(sink.heap)
            sink.now = max(sink.now, deadline)
            self.txn.fire_timer(timer, deadline, sink.now)
        sink.now = until

    @invariant()
    def terminated_never_sends(self) -> None:
        if self.sink.terminated_at is not None:
            assert len(self.sink.sends) == self.sink.terminated_at
            assert self.txn.deadlines == {}
            assert self.txn.state is State.TERMINATED

    @invariant()
    def timers_never_in_the_past(self) -> None:
        assert self.sink.past_timers == []
        if hasattr(self, "txn"):
            # advance() fires everything due, so what is left lies ahead
            assert all(d >= self.sink.now for d in self.txn.deadlines.values())

    @invariant()
    def one_final_up(self) -> None:
        finals = self.sink.finals
        if self.cls is InviteClientTransaction and finals and finals[0] < 300:
            assert all(status < 300 for status in finals)   # RFC 6026 §7.2: 2xx only
        else:
            assert len(finals) <= 1


class InviteClientMachine(TransactionMachine):
    cls = InviteClientTransaction
    method = "INVITE"
    inputs = NETWORK_CLIENT


class NonInviteClientMachine(TransactionMachine):
    cls = NonInviteClientTransaction
    method = "OPTIONS"
    inputs = NETWORK_CLIENT


class InviteServerMachine(TransactionMachine):
    cls = InviteServerTransaction
    method = "INVITE"
    inputs = NETWORK_SERVER


class NonInviteServerMachine(TransactionMachine):
    cls = NonInviteServerTransaction
    method = "OPTIONS"
    inputs = NETWORK_SERVER


SETTINGS = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestInviteClient = InviteClientMachine.TestCase
TestInviteClient.settings = SETTINGS
TestNonInviteClient = NonInviteClientMachine.TestCase
TestNonInviteClient.settings = SETTINGS
TestInviteServer = InviteServerMachine.TestCase
TestInviteServer.settings = SETTINGS
TestNonInviteServer = NonInviteServerMachine.TestCase
TestNonInviteServer.settings = SETTINGS
