"""INVITE sessions under random inputs: a hypothesis ``RuleBasedStateMachine``.

A UAC and a UAS session are wired together (``test_invite.Wire``).  Rules make
the call layer's decisions on either side (valid or not), deliver queued
messages in any order, lose 2xx responses and ACKs (the only losses the TU
repairs itself; the transaction layer repairs the rest), send requests for
unknown dialogs, and move time forward.  Invariants:

* a session never has two offers outstanding, and its bookkeeping agrees
  with its offer/answer state;
* after ``SessionTerminated`` a session sends only ACKs and responses
  (nothing else the RFC does not require), and has no deadline once
  TERMINATED; it says ``SessionTerminated`` at most once;
* at most one final response per server transaction (so per INVITE);
* a call that raises (an input the state does not allow) changes nothing;
* nothing but ``SipError`` is ever raised.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from test_invite import ANSWER, HELD, HOLD, OFFER, Wire, make_invite

from switch.sip.errors import SipError
from switch.sip.headers import cseq
from switch.sip.invite import (
    InviteSession,
    OfferState,
    Output,
    SendAck,
    SendResponse,
    SessionTerminated,
    State,
)
from switch.sip.message import Request, Response

SIDES = st.sampled_from(["uac", "uas"])
BODIES = st.sampled_from([OFFER, ANSWER, HOLD, HELD, OFFER + b"a=x\r\n"])


def snapshot(session: InviteSession) -> tuple[Any, ...]:
    return (session.state, session.offer_state, session.pending_local,
            session.pending_remote, session.get_timer(), session._generation)


class InviteMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.wire = Wire()
        self.finals: dict[object, int] = {}
        self.ended_at: dict[str, int] = {}
        self._watch()

    @initialize(established=st.booleans(), late_offer=st.booleans())
    def start(self, established: bool, late_offer: bool) -> None:
        # Half the runs start from a confirmed call, so that re-INVITEs, UPDATEs,
        # glare and session timers get explored as much as call set-up.
        if established:
            self.wire.established(offer=not late_offer)
        else:
            self.wire.call(make_invite(b"" if late_offer else OFFER))

    # --- bookkeeping -----------------------------------------------------------

    def _watch(self) -> None:
        """Wrap Wire.take to check every output as it is produced."""
        original = self.wire.take

        def take(side: str, outputs: list[Output]) -> list[Output]:
            self._check_outputs(side, outputs)
            return original(side, outputs)

        self.wire.take = take   # type: ignore[method-assign]

    def _check_outputs(self, side: str, outputs: list[Output]) -> None:
        for item in outputs:
            if isinstance(item, SendResponse) and not item.retransmission \
                    and item.response.status >= 200:
                key = (item.txn, cseq(item.response).method)
                self.finals[key] = self.finals.get(key, 0) + 1
                assert self.finals[key] == 1, f"two final responses on {key}"
            if side in self.ended_at:
                assert isinstance(item, SendAck | SendResponse), \
                    f"{side} sent {item} after SessionTerminated"
                assert not (isinstance(item, SendResponse) and item.retransmission), \
                    f"{side} retransmits a 2xx after SessionTerminated"
            if isinstance(item, SessionTerminated):
                assert side not in self.ended_at, f"{side} terminated twice"
                self.ended_at[side] = 1

    def _sessions(self) -> list[tuple[str, InviteSession]]:
        out = [("uac", self.wire.uac)]
        if self.wire.uas is not None:
            out.append(("uas", self.wire.uas))
        return out

    def _act(self, side: str, action: str, *args: Any) -> None:
        session = self.wire.session(side)
        before = snapshot(session)
        try:
            outputs = getattr(session, action)(self.wire.now, *args)
        except SipError:
            assert snapshot(session) == before, f"{action} raised but changed the session"
            return
        self.wire.take(side, outputs)

    # --- rules: the call layer --------------------------------------------------

    # Ending a call is made rarer than the rest (1 draw in 6), or little else happens.
    @precondition(lambda self: self.wire.uas is not None)
    @rule(side=SIDES, draw=st.integers(min_value=0, max_value=5))
    def hangup(self, side: str, draw: int) -> None:
        if draw == 0:
            self._act(side, "hangup")

    @rule(draw=st.integers(min_value=0, max_value=5))
    def cancel(self, draw: int) -> None:
        if draw == 0:
            self._act("uac", "cancel")

    @precondition(lambda self: self.wire.uas is not None)
    @rule(early=st.booleans())
    def progress(self, early: bool) -> None:
        if early:
            self._act("uas", "progress", 183)
        else:
            self._act("uas", "progress", 180)

    @precondition(lambda self: self.wire.uas is not None)
    @rule(body=BODIES, default=st.booleans())
    def accept(self, body: bytes, default: bool) -> None:
        session = self.wire.session("uas")
        before = snapshot(session)
        try:
            outputs = session.accept(self.wire.now, body=None if default else body)
        except SipError:
            assert snapshot(session) == before
            return
        self.wire.take("uas", outputs)

    @precondition(lambda self: self.wire.uas is not None)
    @rule(status=st.sampled_from([404, 486, 603]))
    def reject(self, status: int) -> None:
        self._act("uas", "reject", status)

    @precondition(lambda self: self.wire.uas is not None)
    @rule(side=SIDES, body=BODIES)
    def answer(self, side: str, body: bytes) -> None:
        self._act(side, "answer", body)

    @precondition(lambda self: self.wire.uas is not None)
    @rule(side=SIDES)
    def reject_offer(self, side: str) -> None:
        self._act(side, "reject_offer")

    @precondition(lambda self: self.wire.uas is not None)
    @rule(side=SIDES, body=st.one_of(st.none(), BODIES), update=st.booleans())
    def modify(self, side: str, body: bytes | None, update: bool) -> None:
        self._act(side, "update" if update else "reinvite", body)

    # --- rules: the network and the clock ----------------------------------------

    @precondition(lambda self: bool(self.wire.queue))
    @rule(index=st.integers(min_value=0, max_value=50))
    def deliver(self, index: int) -> None:
        self.wire.deliver(index % len(self.wire.queue))

    @precondition(lambda self: bool(self.wire.queue))
    @rule()
    def flush(self) -> None:
        self.wire.run()

    @precondition(lambda self: any(self._lossy(p.message) for p in self.wire.queue))
    @rule(index=st.integers(min_value=0, max_value=50))
    def lose(self, index: int) -> None:
        lossy = [i for i, p in enumerate(self.wire.queue) if self._lossy(p.message)]
        self.wire.queue.pop(lossy[index % len(lossy)])

    @staticmethod
    def _lossy(message: Request | Response) -> bool:
        if isinstance(message, Request):
            return message.method == "ACK"
        return 200 <= message.status < 300 and cseq(message).method == "INVITE"

    @rule(delta=st.one_of(st.floats(min_value=0.0, max_value=5.0),
                          st.floats(min_value=0.0, max_value=1000.0)))
    def advance(self, delta: float) -> None:
        self.wire.advance(self.wire.now + delta, deliver=False)

    @precondition(lambda self: self.wire.uas is not None)
    @rule(side=SIDES, method=st.sampled_from(["BYE", "INFO", "INVITE", "UPDATE"]))
    def unknown_dialog(self, side: str, method: str) -> None:
        session = self.wire.session(side)
        request = make_invite(b"")
        request.method = method
        request.headers.set("To", "<sip:bob@example.com>;tag=nobody")
        request.headers.set("CSeq", f"99 {method}")
        before = snapshot(session)
        try:
            session.receive_request(request, self.wire.now, ("stray", method))
        except SipError as exc:
            assert exc.status == 481
        else:
            raise AssertionError("a request for an unknown dialog was accepted")
        assert snapshot(session) == before

    # --- invariants -----------------------------------------------------------------

    @invariant()
    def offers_consistent(self) -> None:
        for _, session in self._sessions():
            local = session.pending_local
            remote = session.pending_remote
            ours_out = local is not None and local.offer is not None \
                and not local.ack_waits_answer
            theirs_owed = remote is not None and remote.offer is not None \
                and not remote.answered
            assert not (ours_out and theirs_owed), "two offers outstanding"
            if ours_out:
                assert session.offer_state is OfferState.LOCAL_OFFER
            if theirs_owed:
                assert session.offer_state is OfferState.REMOTE_OFFER
            if session.state is State.TERMINATED:
                assert session.offer_state is OfferState.STABLE

    @invariant()
    def terminated_sessions_are_quiet(self) -> None:
        for _, session in self._sessions():
            if session.state is State.TERMINATED:
                assert session.get_timer() is None
            if session.terminated:
                assert not session.timer.active


TestInviteMachine = InviteMachine.TestCase
TestInviteMachine.settings = settings(max_examples=300, stateful_step_count=40,
                                      deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
