"""INVITE sessions (RFC 3261 §13-§15, RFC 3264/6337, RFC 3311, RFC 4028), both roles.

``Wire`` connects a UAC session and a UAS session in memory, standing in for
the transaction layer and the call layer's glue: commands become queued
messages, delivered on demand (so tests choose the order, and lose 2xx/ACKs),
and ``SipError`` raised by a session becomes the error response the glue
would send.  Time only moves when a test says so.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from switch.sip.dialog import InvalidTransition, OutOfOrderRequest
from switch.sip.errors import SipError, TransactionDoesNotExist
from switch.sip.headers import cseq
from switch.sip.invite import (
    OFFER_TRANSITIONS,
    TRANSITIONS,
    AnswerReceived,
    EarlyDialogTerminated,
    EndReason,
    GlareDetected,
    InDialogRequestReceived,
    Input,
    InviteConfig,
    InviteSession,
    ModificationCompleted,
    ModificationFailed,
    ModificationRetryDue,
    OfferInput,
    OfferReceived,
    OfferRequested,
    OfferState,
    Output,
    ProgressReceived,
    RequestPending,
    SendAck,
    SendCancel,
    SendRequest,
    SendResponse,
    SessionEstablished,
    SessionRefreshed,
    SessionTerminated,
    State,
)
from switch.sip.message import Headers, Request, Response, make_response
from switch.sip.session_timer import SessionTimerConfig

OFFER = b"v=0\r\no=alice 1 1 IN IP4 10.0.0.1\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=bob 2 2 IN IP4 10.0.0.2\r\nc=IN IP4 10.0.0.2\r\nm=audio 5000 RTP/AVP 0\r\n"
HOLD = OFFER.replace(b"m=audio 4000 RTP/AVP 0\r\n", b"m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n")
HELD = ANSWER.replace(b"m=audio 5000 RTP/AVP 0\r\n", b"m=audio 5000 RTP/AVP 0\r\na=recvonly\r\n")
NO_TIMER = InviteConfig(session_timer=SessionTimerConfig(enabled=False))


def make_invite(body: bytes = OFFER, *, record_route: tuple[str, ...] = (),
                extra: tuple[tuple[str, str], ...] = ()) -> Request:
    headers = Headers([
        ("From", "<sip:alice@example.com>;tag=alice-tag"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "call-1@10.0.0.1"),
        ("CSeq", "1 INVITE"),
        ("Contact", "<sip:alice@10.0.0.1:5060>"),
        ("Max-Forwards", "70"),
    ])
    for value in record_route:
        headers.add("Record-Route", value)
    for name, value in extra:
        headers.add(name, value)
    if body:
        headers.add("Content-Type", "application/sdp")
    return Request("INVITE", "sip:bob@example.com", headers, body)


@dataclass
class Packet:
    to: str                      # "uac" or "uas"
    message: Request | Response
    txn: object = None


@dataclass
class Wire:
    """Two sessions and the network between them."""

    uac_config: InviteConfig = field(default_factory=InviteConfig)
    uas_config: InviteConfig = field(default_factory=InviteConfig)
    uac_rng: random.Random = field(default_factory=lambda: random.Random(1))
    uas_rng: random.Random = field(default_factory=lambda: random.Random(2))
    now: float = 0.0
    uac: InviteSession = field(init=False)
    uas: InviteSession | None = None
    queue: list[Packet] = field(default_factory=list)
    outputs: dict[str, list[Output]] = field(
        default_factory=lambda: {"uac": [], "uas": []})
    sent: list[tuple[float, str, Request | Response]] = field(default_factory=list)
    txns: dict[int, tuple[str, Request]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def call(self, invite: Request | None = None) -> None:
        self.uac = InviteSession.uac(invite or make_invite(), config=self.uac_config,
                                     rng=self.uac_rng)
        self.take("uac", self.uac.start(self.now))

    def session(self, side: str) -> InviteSession:
        if side == "uac":
            return self.uac
        assert self.uas is not None
        return self.uas

    # --- commands → packets ------------------------------------------------------

    def take(self, side: str, outputs: list[Output]) -> list[Output]:
        other = "uas" if side == "uac" else "uac"
        self.outputs[side].extend(outputs)
        for item in outputs:
            if isinstance(item, SendRequest):
                txn = next(self._ids)
                self.txns[txn] = (side, item.request)
                self._send(Packet(other, item.request, txn))
            elif isinstance(item, SendAck):
                self._send(Packet(other, item.request))
            elif isinstance(item, SendCancel):
                txn = next(self._ids)
                self.txns[txn] = (side, item.cancel)
                self._send(Packet(other, item.cancel, txn))
            elif isinstance(item, SendResponse):
                assert isinstance(item.txn, int)
                origin, _ = self.txns[item.txn]
                self._send(Packet(origin, item.response))
        return outputs

    def _send(self, packet: Packet) -> None:
        self.sent.append((self.now, packet.to, packet.message))
        self.queue.append(packet)

    # --- delivery ----------------------------------------------------------------

    def deliver(self, index: int = 0) -> list[Output]:
        packet = self.queue.pop(index)
        message = packet.message
        if isinstance(message, Response):
            return self.take(packet.to, self.session(packet.to).receive_response(
                message, self.now))
        if packet.to == "uas" and self.uas is None:
            assert message.method == "INVITE"
            self.uas = InviteSession.uas(message, local_tag="bob-tag",
                                         local_contact="<sip:bob@10.0.0.2:5070>",
                                         txn=packet.txn, config=self.uas_config,
                                         rng=self.uas_rng)
            return self.take("uas", self.uas.start(self.now))
        try:
            return self.take(packet.to, self.session(packet.to).receive_request(
                message, self.now, packet.txn))
        except SipError as exc:
            # The glue converts once (DESIGN rule 5); never for an ACK.
            if message.method != "ACK":
                self.take(packet.to, [SendResponse(
                    response=make_response(message, exc.status, exc.reason),
                    txn=packet.txn)])
            return []

    def run(self) -> None:
        while self.queue:
            self.deliver()

    def drop(self, predicate: Callable[[Packet], bool]) -> None:
        self.queue = [p for p in self.queue if not predicate(p)]

    def advance(self, until: float, *, deliver: bool = True) -> None:
        """Move time to ``until``, firing every deadline on the way, in order."""
        while True:
            deadlines = [(d, side) for side in ("uac", "uas")
                         if (s := (self.uac if side == "uac" else self.uas)) is not None
                         and (d := s.get_timer()) is not None and d <= until]
            if not deadlines:
                break
            when, side = min(deadlines)
            self.now = max(self.now, when)
            self.take(side, self.session(side).handle_timer(self.now))
            if deliver:
                self.run()
        self.now = until

    def events(self, side: str, kind: type) -> list[object]:
        return [o for o in self.outputs[side] if isinstance(o, kind)]

    def established(self, *, offer: bool = True) -> None:
        self.call(make_invite(OFFER if offer else b""))
        self.run()
        assert self.uas is not None
        if offer:
            self.take("uas", self.uas.accept(self.now, body=ANSWER))
            self.run()
        else:
            self.take("uas", self.uas.accept(self.now, body=ANSWER))
            self.run()
            self.take("uac", self.uac.answer(self.now, OFFER))
            self.run()
        assert self.uac.state is State.CONFIRMED
        assert self.uas.state is State.CONFIRMED


def methods(sent: list[tuple[float, str, Request | Response]], to: str) -> list[str]:
    out = []
    for _, dest, message in sent:
        if dest != to:
            continue
        if isinstance(message, Request):
            out.append(message.method)
        else:
            out.append(f"{message.status} {cseq(message).method}")
    return out


# --- basic calls --------------------------------------------------------------------

def test_basic_call_caller_hangs_up() -> None:
    wire = Wire()
    wire.call()
    wire.run()
    uas = wire.uas
    assert uas is not None
    assert wire.events("uas", OfferReceived) == [OfferReceived(body=OFFER, method="INVITE")]
    wire.take("uas", uas.progress(wire.now, 180))
    wire.run()
    assert wire.uac.state is State.PROCEEDING
    assert wire.events("uac", ProgressReceived) == [
        ProgressReceived(status=180, reason="Ringing", body=None)]
    wire.take("uas", uas.accept(wire.now, body=ANSWER))
    wire.run()
    assert wire.events("uac", AnswerReceived) == [AnswerReceived(body=ANSWER)]
    assert len(wire.events("uac", SessionEstablished)) == 1
    assert len(wire.events("uas", SessionEstablished)) == 1
    assert uas.offer_state is wire.uac.offer_state is OfferState.STABLE
    wire.take("uac", wire.uac.hangup(wire.now))
    wire.run()
    assert wire.uac.state is uas.state is State.TERMINATED
    assert wire.events("uac", SessionTerminated) == [
        SessionTerminated(reason=EndReason.LOCAL_BYE)]
    assert wire.events("uas", SessionTerminated) == [
        SessionTerminated(reason=EndReason.REMOTE_BYE)]
    assert methods(wire.sent, "uas") == ["INVITE", "ACK", "BYE"]
    assert methods(wire.sent, "uac") == ["180 INVITE", "200 INVITE", "200 BYE"]
    assert wire.uac.get_timer() is None and uas.get_timer() is None


def test_basic_call_callee_hangs_up() -> None:
    wire = Wire()
    wire.established()
    assert wire.uas is not None
    wire.take("uas", wire.uas.hangup(wire.now))
    bye = wire.queue[0].message
    assert isinstance(bye, Request) and bye.method == "BYE"
    # The callee's BYE goes to the caller's Contact, From/To swapped, its own CSeq.
    assert bye.uri == "sip:alice@10.0.0.1:5060"
    assert bye.headers.get("from") == "<sip:bob@example.com>;tag=bob-tag"
    assert bye.headers.get("cseq") == "1 BYE"
    wire.run()
    assert wire.uac.state is wire.uas.state is State.TERMINATED
    assert wire.events("uac", SessionTerminated) == [
        SessionTerminated(reason=EndReason.REMOTE_BYE)]


def test_uas_response_headers() -> None:
    wire = Wire()
    wire.call(make_invite(record_route=("<sip:proxy.example.com;lr>",)))
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.accept(wire.now, body=ANSWER))
    ok = wire.queue[0].message
    assert isinstance(ok, Response)
    assert ok.headers.get("to") == "<sip:bob@example.com>;tag=bob-tag"
    assert ok.headers.get("contact") == "<sip:bob@10.0.0.2:5070>"
    assert ok.headers.get_all("record-route") == ["<sip:proxy.example.com;lr>"]
    assert ok.headers.get("content-type") == "application/sdp"
    wire.run()
    # The UAC routes the ACK and BYE through the recorded proxy (§12.1.2, §12.2.1.1).
    wire.take("uac", wire.uac.hangup(wire.now))
    bye = wire.queue[0].message
    assert isinstance(bye, Request)
    assert bye.headers.get_all("route") == ["<sip:proxy.example.com;lr>"]
    assert bye.uri == "sip:bob@10.0.0.2:5070"


def test_rejected_call() -> None:
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.reject(wire.now, 486))
    wire.run()
    assert wire.events("uac", SessionTerminated) == [
        SessionTerminated(reason=EndReason.REJECTED, status=486)]
    assert wire.events("uas", SessionTerminated) == [
        SessionTerminated(reason=EndReason.REJECTED, status=486)]
    assert wire.uac.offer_state is OfferState.STABLE


def test_late_offer() -> None:
    wire = Wire()
    wire.call(make_invite(b""))
    wire.run()
    assert wire.uas is not None
    assert wire.events("uas", OfferRequested) == [OfferRequested(method="INVITE")]
    with pytest.raises(InvalidTransition):
        wire.uas.accept(wire.now)        # the 2xx must carry the offer
    wire.take("uas", wire.uas.accept(wire.now, body=ANSWER))
    wire.run()
    # The 2xx carries the offer; the ACK waits for our answer (§13.2.2.4).
    assert wire.uac.state is State.ACKING
    assert wire.events("uac", OfferReceived) == [OfferReceived(body=ANSWER, method="INVITE")]
    assert methods(wire.sent, "uas") == ["INVITE"]
    wire.take("uac", wire.uac.answer(wire.now, OFFER))
    ack = wire.queue[0].message
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.body == OFFER
    wire.run()
    assert wire.events("uas", AnswerReceived) == [AnswerReceived(body=OFFER)]
    assert wire.uac.state is wire.uas.state is State.CONFIRMED
    assert wire.uac.offer_state is wire.uas.offer_state is OfferState.STABLE


def test_late_offer_ack_without_answer_ends_the_call() -> None:
    wire = Wire()
    wire.call(make_invite(b""))
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.accept(wire.now, body=ANSWER))
    wire.deliver()
    ack = wire.uac.dialog.create_ack(1) if wire.uac.dialog else None
    assert ack is not None
    wire.take("uas", wire.uas.receive_request(ack, wire.now))
    assert wire.events("uas", SessionTerminated) == [
        SessionTerminated(reason=EndReason.PROTOCOL_ERROR)]


def test_early_media_then_200() -> None:
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.progress(wire.now, 183, body=ANSWER))
    wire.run()
    assert wire.events("uac", ProgressReceived) == [
        ProgressReceived(status=183, reason="Session Progress", body=ANSWER)]
    # Without 100rel the early SDP is a preview: the offer is still outstanding.
    assert wire.uac.offer_state is OfferState.LOCAL_OFFER
    wire.take("uas", wire.uas.accept(wire.now))        # repeats the early answer
    ok = wire.queue[0].message
    assert isinstance(ok, Response) and ok.body == ANSWER
    wire.run()
    assert wire.events("uac", AnswerReceived) == [AnswerReceived(body=ANSWER)]
    assert wire.uac.offer_state is OfferState.STABLE


# --- CANCEL -------------------------------------------------------------------------

def test_cancel_waits_for_a_provisional() -> None:
    wire = Wire()
    wire.call()
    # §9.1: no CANCEL before a provisional response arrived.
    assert wire.take("uac", wire.uac.cancel(wire.now)) == []
    assert wire.uac.state is State.CANCEL_QUEUED
    wire.deliver()                                   # INVITE reaches the UAS
    assert wire.uas is not None
    wire.take("uas", wire.uas.progress(wire.now, 180))
    wire.deliver()                                   # 180 → the CANCEL goes out now
    assert wire.uac.state is State.CANCELLING
    assert isinstance(wire.queue[0].message, Request)
    assert wire.queue[0].message.method == "CANCEL"
    assert wire.queue[0].message.headers.get("cseq") == "1 CANCEL"
    wire.run()
    assert methods(wire.sent, "uac") == ["180 INVITE", "487 INVITE", "200 CANCEL"]
    assert wire.events("uac", SessionTerminated) == [
        SessionTerminated(reason=EndReason.CANCELLED, status=487)]
    assert wire.events("uas", SessionTerminated) == [
        SessionTerminated(reason=EndReason.REMOTE_CANCELLED, status=487)]
    assert wire.uas.offer_state is wire.uac.offer_state is OfferState.STABLE


def test_cancel_200_race() -> None:
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.progress(wire.now, 180))
    wire.run()
    # The callee answers while the caller cancels: the 200 and the CANCEL cross.
    wire.take("uas", wire.uas.accept(wire.now, body=ANSWER))
    wire.take("uac", wire.uac.cancel(wire.now))
    assert [type(p.message).__name__ for p in wire.queue] == ["Response", "Request"]
    wire.deliver(0)     # 200 INVITE reaches the UAC: ACK it, then BYE (the call is up)
    assert wire.uac.state is State.TERMINATING
    assert wire.events("uac", SessionTerminated) == [
        SessionTerminated(reason=EndReason.CANCELLED, status=200)]
    wire.deliver(0)     # the CANCEL reaches the UAS after its 2xx: 200, no effect (§9.2)
    assert wire.uas.state is State.ANSWERED
    wire.run()
    assert methods(wire.sent, "uas") == ["INVITE", "CANCEL", "ACK", "BYE"]
    assert methods(wire.sent, "uac") == ["180 INVITE", "200 INVITE", "200 CANCEL", "200 BYE"]
    assert wire.uac.state is wire.uas.state is State.TERMINATED
    assert wire.events("uas", SessionTerminated) == [
        SessionTerminated(reason=EndReason.REMOTE_BYE)]


def test_hangup_before_answer_is_cancel_or_reject() -> None:
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.progress(wire.now, 180))
    wire.run()
    wire.take("uac", wire.uac.hangup(wire.now))
    assert isinstance(wire.queue[0].message, Request)
    assert wire.queue[0].message.method == "CANCEL"
    wire.take("uac", wire.uac.hangup(wire.now))     # idempotent
    assert len(wire.queue) == 1
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.hangup(wire.now))
    wire.run()
    assert methods(wire.sent, "uac") == ["480 INVITE"]


def test_bye_from_caller_in_early_dialog() -> None:
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.progress(wire.now, 180))
    wire.run()
    # The caller may BYE an early dialog (§15); the INVITE gets 487 (§15.1.2).
    early = wire.uac.early["bob-tag"]
    bye = early.create_request("BYE")
    wire.take("uac", [SendRequest(request=bye)])
    wire.run()
    assert methods(wire.sent, "uac") == ["180 INVITE", "487 INVITE", "200 BYE"]
    assert wire.uas.state is State.TERMINATED


def test_bye_from_callee_ends_only_that_early_dialog() -> None:
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.progress(wire.now, 180))
    wire.run()
    assert wire.uas.dialog is not None
    bye = wire.uas.dialog.create_request("BYE")      # a peer breaking §15's MUST NOT
    wire.take("uas", [SendRequest(request=bye)])
    wire.run()
    assert wire.events("uac", EarlyDialogTerminated)
    assert wire.uac.state is State.PROCEEDING        # the INVITE is still pending
    assert "bob-tag" not in wire.uac.early


def test_second_fork_2xx_is_acked_and_byed() -> None:
    wire = Wire()
    wire.established()
    invite = wire.uac.invite
    fork = make_response(invite, 200, to_tag="fork-2")
    fork.headers.add("Contact", "<sip:bob@10.0.0.3>")
    out = wire.uac.receive_response(fork, wire.now)
    assert [type(o) for o in out] == [SendAck, SendRequest]
    assert isinstance(out[1], SendRequest) and out[1].request.method == "BYE"
    assert out[1].request.uri == "sip:bob@10.0.0.3"
    assert wire.uac.state is State.CONFIRMED


# --- ACK loss -------------------------------------------------------------------------

def test_ack_loss_retransmits_2xx_then_byes() -> None:
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.accept(wire.now, body=ANSWER))
    wire.queue.clear()                  # the 2xx is lost, so no ACK ever comes
    wire.advance(40.0, deliver=False)
    retransmits = [(t, m) for t, to, m in wire.sent if to == "uac" and isinstance(
        m, Response) and m.status == 200 and t > 0]
    times = [t for t, _ in retransmits]
    # §13.3.1.4: T1, then doubling to T2: intervals 0.5, 1, 2, 4, 4, ...
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(m is retransmits[0][1] for _, m in retransmits)
    # 64*T1 = 32 s without an ACK: BYE.
    byes = [(t, m) for t, to, m in wire.sent if to == "uac" and isinstance(m, Request)
            and m.method == "BYE"]
    assert [t for t, _ in byes] == [32.0]
    assert wire.events("uas", SessionTerminated) == [
        SessionTerminated(reason=EndReason.ACK_TIMEOUT)]
    assert wire.uas.get_timer() is None


def test_lost_ack_is_resent_for_each_2xx_retransmission() -> None:
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.accept(wire.now, body=ANSWER))
    wire.deliver()                         # the 2xx reaches the UAC, which ACKs
    wire.drop(lambda p: isinstance(p.message, Request) and p.message.method == "ACK")
    wire.advance(0.5)                      # 2xx retransmitted → ACK again → delivered
    acks = [m for _, to, m in wire.sent if to == "uas" and isinstance(m, Request)
            and m.method == "ACK"]
    assert len(acks) == 2 and acks[0] is acks[1]     # §13.2.2.4: the same ACK
    assert wire.uas.state is State.CONFIRMED
    assert wire.uas.get_timer() != 1.5               # retransmissions stopped
    assert len(wire.events("uac", SessionEstablished)) == 1
    assert len(wire.events("uas", SessionEstablished)) == 1


def test_callee_hangup_waits_for_the_ack() -> None:
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.accept(wire.now, body=ANSWER))
    # §15: the callee must not BYE before the ACK (or its timeout).
    assert wire.take("uas", wire.uas.hangup(wire.now)) == []
    assert wire.uas.state is State.BYE_QUEUED
    wire.run()
    assert methods(wire.sent, "uac") == ["200 INVITE", "BYE"]
    assert wire.uac.state is wire.uas.state is State.TERMINATED


# --- re-INVITE / UPDATE ---------------------------------------------------------------

@pytest.mark.parametrize("method", ["INVITE", "UPDATE"])
@pytest.mark.parametrize("sender", ["uac", "uas"])
def test_hold_and_resume(method: str, sender: str) -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    receiver = "uas" if sender == "uac" else "uac"
    for offer, answer in ((HOLD, HELD), (OFFER, ANSWER)):
        send = wire.session(sender).reinvite if method == "INVITE" \
            else wire.session(sender).update
        wire.take(sender, send(wire.now, offer))
        assert wire.session(sender).offer_state is OfferState.LOCAL_OFFER
        with pytest.raises(RequestPending):
            wire.session(sender).reinvite(wire.now, offer)    # one at a time (§14.1)
        wire.run()
        assert wire.events(receiver, OfferReceived)[-1] == OfferReceived(
            body=offer, method=method)
        wire.take(receiver, wire.session(receiver).answer(wire.now, answer))
        wire.run()
        assert wire.events(sender, AnswerReceived)[-1] == AnswerReceived(body=answer)
        assert wire.events(sender, ModificationCompleted)[-1] == ModificationCompleted(
            method=method, local=True)
        assert wire.events(receiver, ModificationCompleted)[-1] == ModificationCompleted(
            method=method, local=False)
        assert wire.session(sender).offer_state is OfferState.STABLE
        assert wire.session(receiver).offer_state is OfferState.STABLE
    assert wire.uac.state is State.CONFIRMED
    assert wire.session(receiver).get_timer() is None


def test_reinvite_target_refresh() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None and wire.uas.dialog is not None
    wire.uas.dialog.local_contact = "<sip:bob@192.0.2.50:5070>"
    wire.take("uas", wire.uas.reinvite(wire.now, HELD))
    wire.run()
    wire.take("uac", wire.uac.answer(wire.now, HOLD))
    wire.run()
    assert wire.uac.dialog is not None
    assert wire.uac.dialog.remote_target == "sip:bob@192.0.2.50:5070"


def test_reinvite_without_offer() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None
    wire.take("uac", wire.uac.reinvite(wire.now))
    wire.run()
    assert wire.events("uas", OfferRequested) == [OfferRequested(method="INVITE")]
    wire.take("uas", wire.uas.answer(wire.now, HOLD))      # our offer in the 2xx
    wire.run()
    assert wire.events("uac", OfferReceived)[-1] == OfferReceived(body=HOLD, method="INVITE")
    wire.take("uac", wire.uac.answer(wire.now, HELD))      # the answer in the ACK
    wire.run()
    assert wire.events("uas", AnswerReceived)[-1] == AnswerReceived(body=HELD)
    assert wire.uac.offer_state is wire.uas.offer_state is OfferState.STABLE
    assert wire.uas.pending_remote is None and wire.uac.pending_local is None


def test_rejected_reinvite_keeps_the_session() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None
    wire.take("uac", wire.uac.reinvite(wire.now, HOLD))
    wire.run()
    wire.take("uas", wire.uas.reject_offer(wire.now, 488))
    wire.run()
    assert wire.events("uac", ModificationFailed) == [
        ModificationFailed(method="INVITE", status=488)]
    assert wire.uac.state is wire.uas.state is State.CONFIRMED
    assert wire.uac.offer_state is wire.uas.offer_state is OfferState.STABLE
    assert wire.uac.local_sdp == HOLD and wire.uac.remote_sdp == ANSWER


def test_update_offer_while_answer_owed_gets_500_retry_after() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None and wire.uac.dialog is not None
    wire.take("uac", wire.uac.update(wire.now, HOLD))
    wire.run()                                   # UAS owes the answer now
    second = wire.uac.dialog.create_request("UPDATE", body=OFFER)
    out = wire.uas.receive_request(second, wire.now, 99)
    assert isinstance(out[0], SendResponse)
    assert out[0].response.status == 500
    assert 0 <= int(out[0].response.headers.get("retry-after") or "-1") <= 10


class FixedRandom(random.Random):
    """``randint`` returns the low or high end, to check both ends of a window."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def randint(self, a: int, b: int) -> int:
        return b if self.high else a


@pytest.mark.parametrize("high", [False, True])
def test_reinvite_glare(high: bool) -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER,
                uac_rng=FixedRandom(high), uas_rng=FixedRandom(high))
    wire.established()
    assert wire.uas is not None
    wire.now = 10.0
    # Both sides send a re-INVITE; they cross.
    wire.take("uac", wire.uac.reinvite(wire.now, HOLD))
    wire.take("uas", wire.uas.reinvite(wire.now, HELD))
    wire.run()
    # §14.2: each answers the other 491.
    assert methods(wire.sent, "uac")[-2:] == ["INVITE", "491 INVITE"]
    assert methods(wire.sent, "uas")[-2:] == ["INVITE", "491 INVITE"]
    (uac_glare,) = wire.events("uac", GlareDetected)
    (uas_glare,) = wire.events("uas", GlareDetected)
    assert isinstance(uac_glare, GlareDetected) and isinstance(uas_glare, GlareDetected)
    # §14.1: the Call-ID owner waits 2.1-4 s, the other side 0-2 s.
    assert uac_glare.retry_at == pytest.approx(10.0 + (4.0 if high else 2.1))
    assert uas_glare.retry_at == pytest.approx(10.0 + (2.0 if high else 0.0))
    assert wire.uac.offer_state is wire.uas.offer_state is OfferState.STABLE
    # The callee retries first: the same offer (nothing changed meanwhile).
    wire.advance(uas_glare.retry_at)
    assert wire.events("uac", OfferReceived)[-1] == OfferReceived(body=HELD, method="INVITE")
    wire.take("uac", wire.uac.answer(wire.now, HOLD))
    wire.run()
    assert wire.events("uas", ModificationCompleted) == [
        ModificationCompleted(method="INVITE", local=True)]
    # The caller's turn: its SDP changed meanwhile, so it is asked for a fresh offer.
    wire.advance(uac_glare.retry_at)
    assert wire.events("uac", ModificationRetryDue) == [ModificationRetryDue(method="INVITE")]
    assert wire.uac.can_modify


def test_glare_retry_resends_when_nothing_changed() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER, uac_rng=FixedRandom(False))
    wire.established()
    assert wire.uas is not None
    wire.take("uac", wire.uac.reinvite(wire.now, HOLD))
    wire.take("uas", wire.uas.reinvite(wire.now, HELD))
    wire.run()
    wire.take("uas", [])
    wire.uas._glare = None      # the callee gave up on its change
    wire.advance(2.1)
    last = [m for _, to, m in wire.sent if to == "uas" and isinstance(m, Request)][-1]
    assert last.method == "INVITE" and last.body == HOLD
    assert last.headers.get("cseq") == "3 INVITE"


def test_glare_window_in_10ms_steps() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None
    delays = []
    for seed in range(40):
        wire.uac.rng = random.Random(seed)
        wire.take("uac", wire.uac.reinvite(wire.now, HOLD))
        request = wire.queue.pop().message
        assert isinstance(request, Request)
        out = wire.uac.receive_response(make_response(request, 491), wire.now)
        assert isinstance(out[0], GlareDetected)
        delays.append(out[0].retry_at - wire.now)
        wire.uac._glare = None
    assert all(2.1 <= d <= 4.0 and round(d * 100) == pytest.approx(d * 100) for d in delays)


def test_bye_during_remote_reinvite() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None
    wire.take("uas", wire.uas.reinvite(wire.now, HELD))
    wire.run()                        # the UAC holds an unanswered offer
    wire.take("uac", wire.uac.hangup(wire.now))
    # RFC 5407 §3.1: the pending re-INVITE is answered 487 before our BYE.
    assert [p.message.status if isinstance(p.message, Response) else p.message.method
            for p in wire.queue] == [487, "BYE"]
    wire.run()
    assert wire.uac.state is wire.uas.state is State.TERMINATED
    # The 487 arrives first: the re-INVITE failed, then the session ended.
    assert wire.events("uas", ModificationFailed) == [
        ModificationFailed(method="INVITE", status=487)]
    assert wire.events("uas", SessionTerminated) == [
        SessionTerminated(reason=EndReason.REMOTE_BYE)]
    assert wire.uac.offer_state is wire.uas.offer_state is OfferState.STABLE


def test_bye_received_during_pending_reinvite() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None
    wire.take("uac", wire.uac.reinvite(wire.now, HOLD))
    wire.run()                          # the UAS owes an answer
    assert wire.uac.dialog is not None
    bye = wire.uac.dialog.create_request("BYE")
    wire.take("uac", [SendRequest(request=bye)])
    wire.run()
    # §15.1.2: 487 to the pending re-INVITE, 200 to the BYE.
    assert methods(wire.sent, "uac")[-2:] == ["487 INVITE", "200 BYE"]
    assert wire.uas.state is State.TERMINATED


def test_2xx_to_reinvite_after_bye_is_still_acked() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None
    wire.take("uac", wire.uac.reinvite(wire.now, HOLD))
    wire.run()
    wire.take("uas", wire.uas.answer(wire.now, HELD))     # 200 re-INVITE in flight
    wire.take("uac", wire.uac.hangup(wire.now))             # BYE crosses it
    wire.run()
    assert methods(wire.sent, "uas")[-3:] == ["INVITE", "BYE", "ACK"]
    assert wire.uac.state is wire.uas.state is State.TERMINATED
    assert len(wire.events("uac", SessionTerminated)) == 1


def test_reinvite_481_ends_the_dialog() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    wire.take("uac", wire.uac.reinvite(wire.now, HOLD))
    request = wire.queue.pop().message
    assert isinstance(request, Request)
    out = wire.uac.receive_response(make_response(request, 481), wire.now)
    assert out == [SessionTerminated(reason=EndReason.DIALOG_GONE, status=481)]
    assert wire.uac.state is State.TERMINATED


def test_reinvite_408_sends_bye() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    wire.take("uac", wire.uac.reinvite(wire.now, HOLD))
    request = wire.queue.pop().message
    assert isinstance(request, Request)
    out = wire.uac.receive_response(make_response(request, 408), wire.now)
    assert isinstance(out[0], SendRequest) and out[0].request.method == "BYE"
    assert wire.uac.state is State.TERMINATING


def test_reinvite_ack_timeout_sends_bye() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None
    wire.take("uac", wire.uac.reinvite(wire.now, HOLD))
    wire.run()
    wire.take("uas", wire.uas.answer(wire.now, HELD))
    wire.queue.clear()                  # the 2xx never arrives, so no ACK
    wire.advance(wire.now + 32.0, deliver=False)
    assert wire.events("uas", SessionTerminated) == [
        SessionTerminated(reason=EndReason.ACK_TIMEOUT)]


# --- in-dialog checks -------------------------------------------------------------------

def test_lower_cseq_gets_500() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None and wire.uac.dialog is not None
    info = wire.uac.dialog.create_request("INFO")
    wire.take("uac", [SendRequest(request=info)])
    wire.run()
    assert isinstance(wire.events("uas", InDialogRequestReceived)[0], InDialogRequestReceived)
    stale = wire.uac.dialog.create_request("INFO", cseq_number=1)
    with pytest.raises(OutOfOrderRequest):
        wire.uas.receive_request(stale, wire.now, 5)
    wire.take("uac", [SendRequest(request=stale)])
    wire.run()
    assert methods(wire.sent, "uac")[-1] == "500 INFO"


def test_unknown_dialog_gets_481() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None and wire.uac.dialog is not None
    bye = wire.uac.dialog.create_request("BYE")
    bye.headers.set("To", "<sip:bob@example.com>;tag=someone-else")
    with pytest.raises(TransactionDoesNotExist):
        wire.uas.receive_request(bye, wire.now, 5)
    assert wire.uas.state is State.CONFIRMED


def test_requests_after_termination_get_481() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None and wire.uac.dialog is not None
    info = wire.uac.dialog.create_request("INFO")
    wire.take("uac", wire.uac.hangup(wire.now))
    wire.run()
    out = wire.uas.receive_request(info, wire.now, 7)
    assert len(out) == 1 and isinstance(out[0], SendResponse)
    assert out[0].response.status == 481


# --- session timers ---------------------------------------------------------------------

def test_session_timer_refresh_by_update() -> None:
    wire = Wire()
    wire.established()
    assert wire.uas is not None
    # The UAC offered 1800 s with Supported: timer; the UAS leaves the refresh to it.
    assert wire.events("uac", SessionRefreshed) == [
        SessionRefreshed(interval=1800, we_refresh=True)]
    assert wire.events("uas", SessionRefreshed) == [
        SessionRefreshed(interval=1800, we_refresh=False)]
    assert wire.uac.get_timer() == 900.0
    wire.advance(900.0)
    refresh = [m for t, to, m in wire.sent if to == "uas" and t == 900.0]
    assert [m.method for m in refresh if isinstance(m, Request)] == ["UPDATE"]
    assert refresh[0].headers.get("session-expires") == "1800;refresher=uac"
    assert wire.uac.get_timer() == 1800.0
    assert wire.uas.get_timer() == 900.0 + 1800.0 - 32.0
    wire.advance(3000.0)
    assert wire.uac.state is wire.uas.state is State.CONFIRMED


def test_session_timer_refresh_by_reinvite_when_update_not_allowed() -> None:
    # The refresh re-INVITE repeats our SDP unchanged; the peer answers it by itself.
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    wire.uas.config = InviteConfig(allow="INVITE, ACK, CANCEL, BYE")
    wire.take("uas", wire.uas.accept(wire.now, body=ANSWER))
    wire.run()
    wire.advance(900.0)
    refresh = [m for t, to, m in wire.sent if to == "uas" and t == 900.0]
    assert isinstance(refresh[0], Request) and refresh[0].method == "INVITE"
    assert refresh[0].body == OFFER      # the unchanged SDP (same o= version)
    assert wire.uac.state is wire.uas.state is State.CONFIRMED
    assert wire.uac.offer_state is wire.uas.offer_state is OfferState.STABLE


def test_session_expires_without_refresh() -> None:
    wire = Wire()
    wire.established()
    assert wire.uas is not None
    wire.drop(lambda p: True)
    wire.advance(900.0, deliver=False)           # the refresh is lost
    wire.queue.clear()
    wire.advance(1800.0, deliver=False)
    byes = {(t, to) for t, to, m in wire.sent if isinstance(m, Request) and m.method == "BYE"}
    # Each side ends the session min(32, SE/3) before expiry (RFC 4028 §10).
    assert byes == {(1768.0, "uac"), (1768.0, "uas")}
    assert wire.events("uas", SessionTerminated) == [
        SessionTerminated(reason=EndReason.SESSION_EXPIRED)]


def test_session_interval_too_small_422_and_retry() -> None:
    uas_config = InviteConfig(session_timer=SessionTimerConfig(min_se=1800,
                                                               session_expires=1800))
    uac_config = InviteConfig(session_timer=SessionTimerConfig(session_expires=120))
    wire = Wire(uac_config=uac_config, uas_config=uas_config)
    wire.call()
    first = wire.queue[0].message
    wire.deliver()                  # the INVITE: 422
    wire.deliver()                  # the 422: the UAC retries
    assert methods(wire.sent, "uac") == ["422 INVITE"]
    # RFC 4028 §7.4: a new INVITE with the peer's Min-SE and the next CSeq.
    assert wire.uac.state is State.CALLING
    retry = wire.uac.invite
    assert retry is not first
    assert retry.headers.get("session-expires") == "1800"
    assert retry.headers.get("cseq") == "2 INVITE"
    assert wire.uas is not None and wire.uas.state is State.TERMINATED
    wire.uas = None                 # the retry is a new server transaction and session
    wire.run()
    assert wire.uas is not None
    wire.take("uas", wire.uas.accept(wire.now, body=ANSWER))
    wire.run()
    assert wire.uac.state is State.CONFIRMED


# --- the tables ---------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Input)))
def test_session_table(state: State, event: Input) -> None:
    session = InviteSession.uac(make_invite())
    session.state = state
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(InvalidTransition):
            session._next(event)
    else:
        assert session._next(event) is expected
    assert session.state is state          # _next only looks


@pytest.mark.parametrize(("state", "event"), list(itertools.product(OfferState, OfferInput)))
def test_offer_answer_table(state: OfferState, event: OfferInput) -> None:
    session = InviteSession.uac(make_invite())
    session.offer_state = state
    expected = OFFER_TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(InvalidTransition):
            session._offer(event)
        assert session.offer_state is state
    else:
        session._offer(event)
        assert session.offer_state is expected


def test_every_state_is_reachable_and_every_input_used() -> None:
    assert {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values()) == set(State)
    assert {i for _, i in TRANSITIONS} == set(Input)


@pytest.mark.parametrize("call", [
    lambda s, now: s.accept(now, body=ANSWER),
    lambda s, now: s.progress(now, 180),
    lambda s, now: s.reject(now, 486),
    lambda s, now: s.answer(now, ANSWER),
    lambda s, now: s.reject_offer(now),
    lambda s, now: s.reinvite(now, HOLD),
])
def test_calls_invalid_for_a_calling_uac_raise_and_change_nothing(
        call: Callable[[InviteSession, float], list[Output]]) -> None:
    session = InviteSession.uac(make_invite())
    session.start(0.0)
    with pytest.raises(SipError):
        call(session, 0.0)
    assert session.state is State.CALLING
    assert session.offer_state is OfferState.LOCAL_OFFER


def test_cancel_is_uac_only() -> None:
    wire = Wire()
    wire.call()
    wire.run()
    assert wire.uas is not None
    with pytest.raises(InvalidTransition):
        wire.uas.cancel(wire.now)
    assert wire.uas.state is State.RECEIVED


# --- regressions found by test_invite_fuzz ------------------------------------------------

def test_2xx_retransmission_while_answer_for_ack_is_due() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None
    wire.take("uac", wire.uac.reinvite(wire.now))          # no offer: it comes in the 2xx
    wire.run()
    wire.take("uas", wire.uas.answer(wire.now, HOLD))
    wire.advance(wire.now + 1.0, deliver=False)             # the 2xx goes out twice
    wire.run()
    assert len(wire.events("uac", OfferReceived)) == 1      # the retransmission is not an offer
    wire.take("uac", wire.uac.answer(wire.now, HELD))
    wire.run()
    assert wire.uac.offer_state is wire.uas.offer_state is OfferState.STABLE


def test_2xx_to_reinvite_crossing_the_peers_bye_is_acked() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None
    wire.take("uas", wire.uas.reinvite(wire.now))
    wire.run()
    wire.take("uac", wire.uac.answer(wire.now, OFFER))      # 200 with the offer, in flight
    wire.take("uac", wire.uac.hangup(wire.now))              # then BYE
    wire.deliver(1)                                          # the BYE arrives first
    assert wire.uas.state is State.TERMINATED
    wire.run()                                               # then the 200: still ACKed
    assert methods(wire.sent, "uac")[-2:] == ["200 BYE", "ACK"]
    assert wire.uas.offer_state is OfferState.STABLE


def test_update_offer_while_our_offerless_reinvite_is_pending_gets_491() -> None:
    wire = Wire(uac_config=NO_TIMER, uas_config=NO_TIMER)
    wire.established()
    assert wire.uas is not None and wire.uas.dialog is not None
    wire.take("uac", wire.uac.reinvite(wire.now))          # its 2xx will carry an offer
    update = wire.uas.dialog.create_request("UPDATE", body=HELD)
    out = wire.uac.receive_request(update, wire.now, 42)
    assert isinstance(out[0], SendResponse) and out[0].response.status == 491
    assert wire.uac.offer_state is OfferState.STABLE


def test_uac_adds_its_fields_to_a_copy_unless_the_invite_is_handed_over() -> None:
    invite = make_invite()
    copied = InviteSession.uac(invite)
    assert copied.invite is not invite and "allow" not in invite.headers
    assert "allow" in copied.invite.headers
    owned = InviteSession.uac(invite, owned=True)
    assert owned.invite is invite and "allow" in invite.headers
    assert list(owned.invite.headers) == list(copied.invite.headers)
