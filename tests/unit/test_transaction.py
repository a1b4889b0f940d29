"""The four RFC 3261 §17 transaction machines, table by table, without I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from switch.sip.headers import cseq, from_header, to_header, top_via
from switch.sip.message import Headers, Message, Request, Response, make_response
from switch.sip.parser import parse_message
from switch.sip.timers import DEFAULT_TIMERS, TimerConfig
from switch.sip.transaction import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    Action,
    ClientTransaction,
    Destination,
    Input,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    State,
    Table,
    Transaction,
    TransactionStateError,
    make_ack,
    make_cancel,
)

UDP = Destination(transport="udp", host="192.0.2.10", port=5060)
TCP = Destination(transport="tcp", host="192.0.2.10", port=5060, connection_id=7)


def request(method: str = "INVITE", branch: str = "z9hG4bKabc") -> Request:
    return Request(method, "sip:bob@example.com", Headers([
        ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"),
        ("Max-Forwards", "70"),
        ("Route", "<sip:proxy.example.com;lr>"),
        ("From", "Alice <sip:alice@example.com>;tag=a1"),
        ("To", "Bob <sip:bob@example.com>"),
        ("Call-ID", "call-1@192.0.2.1"),
        ("CSeq", f"7 {method}"),
    ]))


def response(req: Request, status: int) -> Response:
    return make_response(req, status, to_tag=None if status == 100 else "b2")


@dataclass
class Recorder:
    """A TransactionSink that records what the actions produced."""

    now: float = 0.0
    sent: list[tuple[str, int, bytes]] = field(default_factory=list)
    scheduled: list[tuple[Input, float, float]] = field(default_factory=list)
    passed: list[Message] = field(default_factory=list)
    timeouts: list[Input] = field(default_factory=list)
    transport_errors: int = 0
    terminations: int = 0
    heap: list[tuple[float, Input, Transaction]] = field(default_factory=list)

    def send(self, transaction: Transaction, data: bytes, method: str, status: int) -> None:
        self.sent.append((method, status, data))

    def schedule(self, transaction: Transaction, timer: Input, deadline: float) -> None:
        self.scheduled.append((timer, deadline, self.now))
        self.heap.append((deadline, timer, transaction))

    def pass_up(self, transaction: Transaction, message: Message) -> None:
        self.passed.append(message)

    def timed_out(self, transaction: Transaction, timer: Input) -> None:
        self.timeouts.append(timer)

    def transport_failed(self, transaction: Transaction) -> None:
        self.transport_errors += 1

    def terminated(self, transaction: Transaction) -> None:
        self.terminations += 1

    def run_until(self, until: float) -> list[float]:
        """Fire due timers in deadline order; the times at which something fired."""
        fired: list[float] = []
        while True:
            due = sorted((e for e in self.heap if e[0] <= until), key=lambda e: e[0])
            if not due:
                return fired
            entry = due[0]
            self.heap.remove(entry)
            deadline, timer, txn = entry
            self.now = deadline
            if txn.fire_timer(timer, deadline, deadline):
                fired.append(deadline)


KINDS: dict[str, tuple[type[Transaction], Table, str]] = {
    "invite_client": (InviteClientTransaction, INVITE_CLIENT, "INVITE"),
    "non_invite_client": (NonInviteClientTransaction, NON_INVITE_CLIENT, "OPTIONS"),
    "invite_server": (InviteServerTransaction, INVITE_SERVER, "INVITE"),
    "non_invite_server": (NonInviteServerTransaction, NON_INVITE_SERVER, "OPTIONS"),
}


def make(kind: str, destination: Destination = UDP,
         config: TimerConfig = DEFAULT_TIMERS) -> tuple[Transaction, Recorder, Request]:
    cls, _, method = KINDS[kind]
    sink = Recorder()
    req = request(method)
    txn: Transaction
    if issubclass(cls, ClientTransaction):
        txn = cls(1, req, destination, sink, config, branch="z9hG4bKabc")
    else:
        txn = cls(1, req, destination, sink, config)
    return txn, sink, req


def message_for(inp: Input, req: Request) -> Message | None:
    return {
        Input.PROVISIONAL: lambda: response(req, 180),
        Input.FINAL_2XX: lambda: response(req, 200),
        Input.FINAL_3XX_6XX: lambda: response(req, 486),
        Input.TU_1XX: lambda: response(req, 180),
        Input.TU_2XX: lambda: response(req, 200),
        Input.TU_3XX_6XX: lambda: response(req, 486),
        Input.REQUEST: lambda: req,
        Input.ACK: lambda: make_ack(req, response(req, 486)),
    }.get(inp, lambda: None)()


SEND_ACTIONS = {Action.SEND_REQUEST, Action.SEND_RESPONSE, Action.SEND_TRYING, Action.SEND_ACK,
                Action.SEND_500}
TIMER_OF = {a: Input[f"TIMER_{a.name.split('_')[-1]}"] for a in Action
            if a.name.startswith(("START_", "DOUBLE_", "BACKOFF_")) and a is not Action.START_E_T2}
TIMER_OF[Action.START_E_T2] = Input.TIMER_E


ROWS = [(kind, state, inp) for kind, (_, table, _) in KINDS.items() for (state, inp) in table]


@pytest.mark.parametrize(("kind", "state", "inp"), ROWS,
                         ids=[f"{k}-{s.name}-{i.name}" for k, s, i in ROWS])
def test_every_row_of_every_table(kind: str, state: State, inp: Input) -> None:
    _, table, _ = KINDS[kind]
    txn, sink, req = make(kind)
    txn.state = state
    if isinstance(txn, InviteServerTransaction | NonInviteServerTransaction):
        txn._set_response(response(req, 180 if state is State.PROCEEDING else 486))
        txn.request = req
    if inp in txn.deadlines or inp.name.startswith("TIMER_"):
        txn.deadlines[inp] = 1.0
    new_state, actions = table[(state, inp)]
    message = message_for(inp, req)
    if inp.name.startswith("TIMER_"):
        assert txn.fire_timer(inp, 1.0, 1.0)
    elif isinstance(message, Response) and isinstance(txn, ClientTransaction):
        txn.receive_response(message, 1.0)
    elif isinstance(message, Response):
        txn.send_response(message, 1.0)   # type: ignore[attr-defined]
    elif isinstance(message, Request):
        txn.receive_request(message, 1.0)   # type: ignore[attr-defined]
    else:
        txn._step(inp, 1.0, None)
    assert txn.state is new_state
    assert len(sink.sent) == sum(a in SEND_ACTIONS for a in actions)
    assert len(sink.passed) == (Action.PASS_TO_TU in actions)
    assert len(sink.timeouts) == (Action.INFORM_TIMEOUT in actions)
    assert sink.transport_errors == (Action.INFORM_TRANSPORT_ERROR in actions)
    assert sink.terminations == (new_state is State.TERMINATED)
    started = {TIMER_OF[a] for a in actions if a in TIMER_OF}
    if new_state is State.TERMINATED:
        assert txn.deadlines == {}
    else:
        assert started <= set(txn.deadlines)
        assert all(d >= 1.0 for d in txn.deadlines.values())
    if Action.CANCEL_TIMERS in actions and new_state is not State.TERMINATED:
        assert set(txn.deadlines) == started


UNKNOWN = [(kind, state, inp) for kind, (_, table, _) in KINDS.items()
           for state in State for inp in Input if (state, inp) not in table]


@pytest.mark.parametrize(("kind", "state", "inp"), UNKNOWN,
                         ids=[f"{k}-{s.name}-{i.name}" for k, s, i in UNKNOWN])
def test_inputs_a_table_does_not_know_raise(kind: str, state: State, inp: Input) -> None:
    txn, sink, req = make(kind)
    txn.state = state
    with pytest.raises(TransactionStateError, match="not accepted"):
        txn._step(inp, 1.0, message_for(inp, req))
    assert txn.state is state
    assert not sink.sent and not sink.passed


def test_initial_states_are_in_their_tables() -> None:
    for cls, table, _ in KINDS.values():
        assert any(state is cls.initial_state for state, _ in table)
        # Terminated is final: no row leaves it.
        assert not any(state is State.TERMINATED for state, _ in table)


# --- timer sequences (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2) ---------------------------


def test_invite_client_timer_a_doubles_until_timer_b() -> None:
    txn, sink, _ = make("invite_client")
    txn.start(0.0)
    fired = sink.run_until(100.0)
    resends = [t for t in fired if t < 32.0]
    assert resends == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert len(sink.sent) == 1 + 6
    assert sink.timeouts == [Input.TIMER_B]
    assert txn.state is State.TERMINATED
    assert fired[-1] == 32.0


def test_non_invite_client_timer_e_caps_at_t2_and_f_times_out() -> None:
    txn, sink, _ = make("non_invite_client")
    txn.start(0.0)
    fired = sink.run_until(100.0)
    assert fired[:-1] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert sink.timeouts == [Input.TIMER_F] and fired[-1] == 32.0


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    txn, sink, req = make("non_invite_client")
    assert isinstance(txn, ClientTransaction)
    txn.start(0.0)
    sink.run_until(0.6)                 # one resend at 0.5, E now 1.0 → due 1.5
    txn.receive_response(response(req, 100), 0.7)
    fired = sink.run_until(20.0)
    assert fired == [1.5, 5.5, 9.5, 13.5, 17.5]


def test_reliable_transport_never_retransmits_and_waits_zero() -> None:
    for kind in ("invite_client", "non_invite_client"):
        txn, sink, req = make(kind, TCP)
        assert isinstance(txn, ClientTransaction)
        txn.start(0.0)
        assert Input.TIMER_A not in txn.deadlines and Input.TIMER_E not in txn.deadlines
        txn.receive_response(response(req, 486), 1.0)
        # Timer D / K are zero over TCP: straight to Terminated.
        assert txn.state is State.TERMINATED
        assert len(sink.sent) == (2 if kind == "invite_client" else 1)


def test_timer_d_is_32s_over_udp_and_k_is_t4() -> None:
    txn, sink, req = make("invite_client")
    assert isinstance(txn, ClientTransaction)
    txn.start(0.0)
    txn.receive_response(response(req, 486), 1.0)
    assert txn.state is State.COMPLETED and txn.deadlines == {Input.TIMER_D: 33.0}
    txn2, sink2, req2 = make("non_invite_client")
    assert isinstance(txn2, ClientTransaction)
    txn2.start(0.0)
    txn2.receive_response(response(req2, 200), 1.0)
    assert txn2.deadlines == {Input.TIMER_K: 6.0}


def test_invite_server_g_backs_off_to_t2_until_h() -> None:
    txn, sink, req = make("invite_server")
    assert isinstance(txn, InviteServerTransaction)
    txn.start(0.0)
    assert [s[:2] for s in sink.sent] == [("INVITE", 100)]     # §17.2.1: 100 Trying
    txn.send_response(response(req, 486), 0.0)
    fired = sink.run_until(100.0)
    assert fired == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0]
    assert sink.timeouts == [Input.TIMER_H]
    assert txn.state is State.TERMINATED


def test_invite_server_ack_confirms_and_timer_i_terminates() -> None:
    txn, sink, req = make("invite_server")
    assert isinstance(txn, InviteServerTransaction)
    txn.start(0.0)
    txn.send_response(response(req, 486), 0.0)
    txn.receive_request(make_ack(req, response(req, 486)), 0.7)
    assert txn.state is State.CONFIRMED
    assert set(txn.deadlines) == {Input.TIMER_I}
    assert sink.run_until(100.0) == [5.7]
    assert txn.state is State.TERMINATED
    # over TCP, Timer I is zero
    txn, sink, req = make("invite_server", TCP)
    assert isinstance(txn, InviteServerTransaction)
    txn.start(0.0)
    txn.send_response(response(req, 486), 0.0)
    txn.receive_request(make_ack(req, response(req, 486)), 0.1)
    assert txn.state is State.TERMINATED


def test_invite_server_2xx_accepted_until_timer_l() -> None:
    txn, sink, req = make("invite_server")
    assert isinstance(txn, InviteServerTransaction)
    txn.start(0.0)
    txn.send_response(response(req, 200), 1.0)
    assert txn.state is State.ACCEPTED
    txn.receive_request(req, 2.0)                 # absorbed, RFC 6026 §7.1
    ack = make_ack(req, response(req, 200))
    txn.receive_request(ack, 2.0)
    assert sink.passed == [ack]
    txn.send_response(response(req, 200), 3.0)    # TU retransmission of its 2xx
    assert len(sink.sent) == 3
    sink.run_until(1.0 + 32.0)
    assert txn.state is State.TERMINATED


def test_non_invite_server_j_and_absorption() -> None:
    txn, sink, req = make("non_invite_server")
    assert isinstance(txn, NonInviteServerTransaction)
    txn.start(0.0)
    txn.receive_request(req, 0.1)            # Trying: discarded
    assert sink.sent == []
    txn.send_response(response(req, 200), 0.2)
    txn.receive_request(req, 0.3)            # Completed: the final again
    assert [s[:2] for s in sink.sent] == [("OPTIONS", 200)] * 2
    assert sink.sent[0][2] == sink.sent[1][2]
    with pytest.raises(TransactionStateError):
        txn.send_response(response(req, 500), 0.4)     # a second final
    assert sink.run_until(100.0) == [32.2]
    assert txn.state is State.TERMINATED


def test_tu_guard_sends_500_when_the_tu_never_answers() -> None:
    txn, sink, _ = make("non_invite_server")
    txn.start(0.0)
    sink.run_until(32.0)
    assert [s[:2] for s in sink.sent] == [("OPTIONS", 500)]
    assert b"no response from the application" in sink.sent[0][2]
    assert sink.timeouts == [Input.TIMER_TU]
    assert txn.state is State.COMPLETED
    sink.run_until(100.0)
    assert txn.state is State.TERMINATED


def test_invite_client_timer_c_bounds_proceeding() -> None:
    txn, sink, req = make("invite_client", config=TimerConfig(timer_c=60.0))
    assert isinstance(txn, ClientTransaction)
    txn.start(0.0)
    txn.receive_response(response(req, 180), 1.0)
    txn.receive_response(response(req, 183), 30.0)   # restarts C
    sink.run_until(200.0)
    assert sink.timeouts == [Input.TIMER_C]
    assert sink.now == 90.0


# --- ACK and CANCEL construction ------------------------------------------------------------


def test_ack_for_non_2xx_follows_17_1_1_3() -> None:
    txn, sink, req = make("invite_client")
    assert isinstance(txn, ClientTransaction)
    txn.start(0.0)
    final = response(req, 486)
    txn.receive_response(final, 0.2)
    assert [s[:2] for s in sink.sent] == [("INVITE", 0), ("ACK", 0)]
    ack = parse_message(sink.sent[1][2])
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == req.uri
    assert top_via(ack).branch == top_via(req).branch
    assert len(ack.headers.get_all("via")) == 1
    assert ack.headers.get("call-id") == req.headers.get("call-id")
    assert from_header(ack).tag == "a1"
    assert to_header(ack).tag == "b2"
    assert cseq(ack).seq == 7 and cseq(ack).method == "ACK"
    assert ack.headers.get_all("route") == ["<sip:proxy.example.com;lr>"]
    # a retransmitted final gets the same ACK again and is not passed up twice
    txn.receive_response(response(req, 486), 0.4)
    assert sink.sent[2] == sink.sent[1]
    assert len(sink.passed) == 1


def test_make_cancel_follows_9_1() -> None:
    req = request("INVITE")
    cancel = make_cancel(req)
    assert cancel.method == "CANCEL" and cancel.uri == req.uri
    assert top_via(cancel).branch == top_via(req).branch
    assert cseq(cancel).seq == 7 and cseq(cancel).method == "CANCEL"
    for name in ("from", "to", "call-id"):
        assert cancel.headers.get(name) == req.headers.get(name)
    assert cancel.headers.get_all("route") == req.headers.get_all("route")
