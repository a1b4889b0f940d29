"""Every call ends and releases everything, whatever the phones do (DESIGN.md rule 5).

Each test drives one way a call or a leg used to outlive its purpose (a phone that
never answers our BYE or CANCEL, never ACKs, hangs up mid-exchange; a send that
fails; a handler that raises) and ends with the controller's call and leg tables,
the fake relay's open ports and ``switch_calls_active`` all empty.  The fake SIP
driver has no transaction timers: a request nobody answers stays unanswered
unless the test says the transaction timed out, which is what the ending guard
(64*T1 + T2 after the last request an ending leg sent) is for.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from test_call_controller import ANSWER, OFFER, Sent, World, _hold, binding

from switch.call.model import Leg, LegState
from switch.sip.invite import InviteSession, Role
from switch.sip.message import Headers, Request, Response

T1 = 0.5
LINGER = 64 * T1          # retransmissions of a 2xx, Timer B/F (RFC 3261 §17)
GUARD = LINGER + 4.0      # + T2: the ending guard


def released(w: World) -> None:
    """Nothing of any call is left: calls, legs, media ports, the active-calls gauge."""
    assert list(w.controller.calls) == []
    assert w.controller.leg_count == 0
    assert w.media.legs == {}
    assert w.metrics.registry.get_sample_value("switch_calls_active") == 0.0


def two_contacts(w: World) -> None:
    w.bindings["1002"] = [binding("1002", "sip:1002@10.0.0.2:5062", "203.0.113.5", 40000),
                          binding("1002", "sip:1002@10.0.0.3:5062", "203.0.113.6", 40000)]


def bye_to(w: World, call_id: str) -> Sent:
    (sent,) = [s for s in w.sent("BYE") if s.request.headers.get("call-id") == call_id]
    return sent


def fork_call_id(fork: Sent) -> str:
    return fork.request.headers.get("call-id") or ""


class FailingSip:
    """Makes the fake driver's ``send_request`` raise for ``method`` (the first
    ``times`` such requests; all of them by default)."""

    def __init__(self, w: World, method: str, times: int | None = None) -> None:
        self.method = method
        self.times = times
        self._send = w.sip.send_request
        w.sip.send_request = self.send_request  # type: ignore[method-assign]

    def send_request(self, request: Request, destination: Any) -> int:
        if request.method == self.method and (self.times is None or self.times > 0):
            if self.times is not None:
                self.times -= 1
            raise OSError("sendto: no buffer space available")
        return self._send(request, destination)


# --- peers that never answer the end of the call ------------------------------------------


def test_bye_nobody_answers_is_released_by_the_ending_guard() -> None:
    w = World()
    phone, fork, ok = w.established()
    phone.in_dialog("BYE")                       # the caller hangs up; we BYE the callee
    bye = bye_to(w, fork_call_id(fork))
    assert w.controller.leg_count == 1           # the callee leg waits for its 200
    w.clock.advance(GUARD - 1)
    assert w.controller.leg_count == 1
    with capture_logs() as logs:
        w.clock.advance(2)
    released(w)
    assert w.controller.forced_releases == 1
    assert [e["session_state"] for e in logs
            if e["event"] == "call.leg_forced_release"] == ["terminating"]
    w.reply(bye, 200)                            # far too late: nothing left to do
    released(w)


def test_bye_timeout_releases_without_the_guard() -> None:
    w = World()
    phone, fork, ok = w.established()
    phone.in_dialog("BYE")
    bye = bye_to(w, fork_call_id(fork))
    w.clock.advance(LINGER)
    w.controller.transaction_timed_out(bye.txn, "BYE", "F")     # §17.1.2.2 Timer F
    w.clock.advance(LINGER + 1)
    released(w)
    assert w.controller.forced_releases == 0


def test_481_to_our_bye_releases_the_leg() -> None:
    w = World()
    phone, fork, ok = w.established()
    phone.in_dialog("BYE")
    w.reply(bye_to(w, fork_call_id(fork)), 481)
    w.clock.advance(LINGER + 1)
    released(w)
    assert w.controller.forced_releases == 0


def test_caller_never_acks_nor_answers_our_byes() -> None:
    w = World()
    phone = w.invite()
    (fork,) = w.forks()
    w.answer(fork)
    w.clock.advance(LINGER + 1)                  # §13.3.1.4: no ACK -> BYE both legs
    bye_to(w, phone.call_id)
    assert len(w.sent("BYE")) == 2
    assert not w.controller.calls
    w.clock.advance(GUARD + 1)                   # and nobody answers the BYEs
    released(w)
    assert w.controller.forced_releases == 2


def test_callee_bye_while_the_caller_has_not_acked_yet() -> None:
    w = World()
    phone = w.invite()
    (fork,) = w.forks()
    ok = w.answer(fork)
    w.callee_request(fork, ok, "BYE", 1)         # before the caller's ACK
    assert not w.controller.calls
    assert not [s for s in w.sent("BYE") if s.request.headers.get("call-id") == phone.call_id]
    phone.ack()                                  # §15: the BYE goes once the ACK came
    to_caller = bye_to(w, phone.call_id)
    txn, _ = phone.in_dialog("BYE")              # the caller's BYE crosses ours
    assert w.responses(txn) == [200]
    w.reply(to_caller, 200)
    w.clock.advance(LINGER + 1)
    released(w)
    assert w.controller.forced_releases == 0


def test_callee_bye_while_the_caller_never_acks() -> None:
    w = World()
    phone = w.invite()
    (fork,) = w.forks()
    ok = w.answer(fork)
    w.callee_request(fork, ok, "BYE", 1)
    w.clock.advance(LINGER + 1)                  # ACK timeout: now the BYE goes out
    bye_to(w, phone.call_id)
    w.clock.advance(GUARD + 1)                   # unanswered
    released(w)


# --- forks ----------------------------------------------------------------------------------


def test_cancelled_fork_that_never_answers_the_cancel() -> None:
    w = World()
    two_contacts(w)
    phone = w.invite()
    first, second = w.forks()
    w.reply(first, 180)
    w.reply(second, 180, to_tag="ctag")
    w.answer(first)
    phone.ack()
    assert len(w.sent("CANCEL")) == 1            # the loser is CANCELed ... and stays silent
    w.clock.advance(GUARD + 1)
    assert w.controller.forced_releases == 1
    assert w.controller.leg_count == 2           # the call itself goes on
    phone.in_dialog("BYE")
    w.reply(bye_to(w, fork_call_id(first)), 200)
    w.clock.advance(LINGER + 1)
    released(w)


def test_fork_loser_whose_200_crosses_the_cancel() -> None:
    w = World()
    two_contacts(w)
    phone = w.invite()
    first, second = w.forks()
    w.reply(first, 180)
    w.reply(second, 180, to_tag="ctag")
    w.answer(first)
    phone.ack()
    w.answer(second, to_tag="ctag")              # §9.1: the 200 crossed our CANCEL
    assert len(w.sip.acks()) == 2
    w.reply(bye_to(w, fork_call_id(second)), 200)
    phone.in_dialog("BYE")
    w.reply(bye_to(w, fork_call_id(first)), 200)
    w.clock.advance(LINGER + 1)
    released(w)
    assert w.controller.forced_releases == 0


def test_fork_timer_b_releases_everything() -> None:
    w = World()
    phone = w.invite()
    (fork,) = w.forks()
    w.controller.transaction_timed_out(fork.txn, "INVITE", "B")
    assert phone.final.status == 408
    released(w)


def test_forks_not_yet_sent_when_the_call_fails_while_forking(
        monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    two_contacts(w)
    start = InviteSession.start

    def first_fork_explodes(self: InviteSession, now: float) -> list[Any]:
        if self.role is Role.UAC:
            raise RuntimeError("injected")
        return start(self, now)

    monkeypatch.setattr(InviteSession, "start", first_fork_explodes)
    phone = w.invite()
    assert phone.final.status == 500
    released(w)                                  # the second fork, never sent, too


def test_forking_failing_half_way_closes_every_port(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    two_contacts(w)
    built = w.controller._fork_invite
    calls: list[int] = []

    def second_fails(*args: Any) -> Request:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected")
        return built(*args)

    monkeypatch.setattr(w.controller, "_fork_invite", second_fails)
    phone = w.invite()
    assert phone.final.status == 500
    released(w)                                  # the port of the fork never created too


# --- BYE against a re-INVITE, BYE to an ending call ---------------------------------------


def test_bye_crossing_our_relayed_reinvite() -> None:
    w = World()
    phone, fork, ok = w.established()
    hold_txn, _ = phone.in_dialog("INVITE", _hold(OFFER, b"sendonly", b"2"))
    relayed = [s for s in w.sent("INVITE") if s is not fork][-1]
    bye_txn, _ = w.callee_request(fork, ok, "BYE", 1)           # before answering it
    assert w.responses(bye_txn) == [200]
    assert 487 in w.responses(hold_txn)          # RFC 5407 §3.1: the caller's re-INVITE
    w.reply(relayed, 200, body=_hold(ANSWER, b"recvonly", b"3"))
    assert len(w.sip.acks()) == 2                # the late 2xx is still ACKed
    w.reply(bye_to(w, phone.call_id), 200)
    w.clock.advance(LINGER + 1)
    released(w)
    assert w.controller.forced_releases == 0


def test_bye_to_an_ending_leg_gets_200_not_481() -> None:
    w = World()
    phone, fork, ok = w.established()
    phone.in_dialog("BYE")
    w.reply(bye_to(w, fork_call_id(fork)), 200)  # the callee leg lingers (2xx retransmissions)
    assert w.controller.leg_count == 1
    txn, _ = w.callee_request(fork, ok, "BYE", 1)   # a BYE of its own, late
    assert w.responses(txn) == [200]


def test_bye_after_release_gets_200_for_64_t1() -> None:
    w = World()
    phone, fork, ok = w.established()
    w.callee_request(fork, ok, "BYE", 1)          # the callee hangs up; we BYE the caller
    w.reply(bye_to(w, phone.call_id), 200)        # the caller leg is released at once
    txn, _ = phone.in_dialog("BYE")               # its own BYE, which crossed ours, comes late
    assert w.responses(txn) == [200]
    w.clock.advance(2 * LINGER + 1)
    released(w)
    late = Request("BYE", "sip:switch@192.0.2.1:5060", Headers([
        ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-late"),
        ("From", "<sip:1001@switch.local>;tag=atag"),
        ("To", phone.final.headers.get("to") or ""),
        ("Call-ID", phone.call_id),
        ("CSeq", "9 BYE"),
    ]))
    # Long after: not a dialog of ours any more (the service answers 481).
    assert w.controller.receive_in_dialog(99, late, phone.source) is False


# --- send failures -----------------------------------------------------------------------------


def test_invite_that_cannot_be_sent_fails_the_call() -> None:
    w = World()
    FailingSip(w, "INVITE")
    phone = w.invite()
    w.clock.advance(0)                            # the failure is told on the next loop turn
    # The fork's 503 (§8.1.3.1) is passed back as 500 (§16.7 item 6).
    assert phone.final.status == 500
    released(w)


def test_invite_to_one_fork_cannot_be_sent_the_other_rings_on() -> None:
    w = World()
    two_contacts(w)
    FailingSip(w, "INVITE", times=1)
    phone = w.invite()
    w.clock.advance(0)
    assert phone.statuses == []                   # the failed fork alone does not end it
    (fork,) = w.forks()
    w.answer(fork)
    phone.ack()
    assert phone.final.status == 200
    phone.in_dialog("BYE")
    w.reply(bye_to(w, fork_call_id(fork)), 200)
    w.clock.advance(LINGER + 1)
    released(w)


def test_bye_that_cannot_be_sent_still_releases_everything() -> None:
    w = World()
    phone, fork, ok = w.established()
    FailingSip(w, "BYE")
    w.callee_request(fork, ok, "BYE", 1)          # -> BYE to the caller, which fails
    assert not w.controller.calls
    w.clock.advance(LINGER + 1)
    released(w)
    assert w.controller.forced_releases == 0


# --- exceptions in handlers -----------------------------------------------------------------------


def test_exception_in_an_in_dialog_handler_ends_and_releases_the_call() -> None:
    w = World()
    phone, fork, ok = w.established()

    def broken(leg: Leg, request: Request, txn: int) -> Response | None:
        raise RuntimeError("injected")

    w.controller.register_in_dialog("INFO", broken)
    txn, _ = phone.in_dialog("INFO")
    assert w.responses(txn) == [500]
    assert not w.controller.calls
    for bye in w.sent("BYE"):
        w.reply(bye, 200)
    w.clock.advance(LINGER + 1)
    released(w)


def test_exception_in_a_media_observer_still_returns_the_ports() -> None:
    w = World()

    class Broken:
        def leg_media_configured(self, leg: Leg, config: Any) -> None:
            pass

        def leg_media_closed(self, leg: Leg) -> None:
            raise RuntimeError("injected")

    w.controller.add_media_observer(Broken())
    phone, fork, ok = w.established()
    phone.in_dialog("BYE")
    assert w.media.legs == {}
    w.reply(bye_to(w, fork_call_id(fork)), 200)
    w.clock.advance(LINGER + 1)
    released(w)


def test_hanging_up_one_leg_failing_spares_the_others() -> None:
    w = World()
    phone, fork, ok = w.established()
    (call,) = w.controller.calls
    callee = call.forks[0]

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    callee.session.hangup = explode  # type: ignore[method-assign]
    phone.in_dialog("BYE")                        # the caller leaves; the callee's hangup fails
    assert callee.state is LegState.ENDED
    released(w)
    assert w.metrics.registry.get_sample_value("switch_call_errors_total") == 1.0


# --- the call's policy ------------------------------------------------------------------


def test_held_callee_leaving_ends_the_call() -> None:
    w = World()
    phone, fork, ok = w.established()
    (call,) = w.controller.calls
    callee = call.forks[0]
    w.controller.hold(callee)                     # unbridged, re-INVITEd sendonly
    reinvite = [s for s in w.sent("INVITE") if s is not fork][-1]
    w.reply(reinvite, 200, body=_hold(ANSWER, b"recvonly", b"3"))
    w.callee_request(fork, ok, "BYE", 1)          # ... and hangs up: the caller is alone
    assert not w.controller.calls
    w.reply(bye_to(w, phone.call_id), 200)
    w.clock.advance(LINGER + 1)
    released(w)


async def test_shutdown_releases_everything_after_the_grace() -> None:
    w = World()
    w.established()
    with capture_logs() as logs:
        await w.controller.shutdown(0.01)         # nobody answers the BYEs
    (incomplete,) = [e for e in logs if e["event"] == "call.shutdown_incomplete"]
    assert incomplete["legs"] == 2
    released(w)


def test_lingering_legs_are_released_in_deadline_order_under_one_loop_timer() -> None:
    w = World()
    first, first_fork, _ = w.established()            # answered at 1000: lingers to 1032
    w.clock.advance(5)
    second = w.invite()
    second_fork = w.forks()[-1]
    w.answer(second_fork)                               # answered at 1005: lingers to 1037
    second.ack()
    w.clock.advance(5)
    second.in_dialog("BYE")                             # the later deadline is filed first
    w.reply(bye_to(w, fork_call_id(second_fork)), 200)
    first.in_dialog("BYE")
    w.reply(bye_to(w, fork_call_id(first_fork)), 200)
    assert w.controller.leg_count == 2                  # both callee legs linger
    pending = [callback for _, _, handle, callback in w.clock.heap if not handle.cancelled]
    assert pending == [w.controller._release_lingering]
    w.clock.advance(1032.5 - w.clock.now)
    assert w.controller.leg_count == 1
    (leg,) = w.controller._legs.values()
    assert leg.call is not None and leg.id.startswith(leg.call.id)
    assert leg.session.invite.headers.get("call-id") == fork_call_id(second_fork)
    w.clock.advance(5)
    released(w)
    assert [h for _, _, h, _ in w.clock.heap if not h.cancelled] == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.floats(0.001, 40), st.booleans(),
                          st.booleans()), max_size=30))
def test_the_linger_heap_releases_each_leg_at_its_deadline_once(
        ops: list[tuple[float, float, bool, bool]]) -> None:
    """As with a loop timer per leg: each leg released once, at its deadline, in
    deadline order (filing order for equal ones), a cancelled one never; a release
    may file another leg (what a release's observers may cause)."""
    w = World()
    controller = w.controller
    released: list[tuple[str, float]] = []
    expected: dict[str, float] = {}
    refile: set[str] = set()

    def file(leg_id: str, until: float, cancel: bool = False) -> None:
        leg = Leg.__new__(Leg)
        leg.id = leg_id
        handle = controller._linger_until(leg, until)
        if cancel:
            handle.cancel()
        else:
            expected[leg_id] = until

    def release(leg: Leg) -> None:
        released.append((leg.id, w.clock.now))
        if leg.id in refile:
            file(f"re-{leg.id}", w.clock.now + 1.0)

    controller._release = release  # type: ignore[method-assign]
    for n, (wait, linger, cancel, again) in enumerate(ops):
        w.clock.advance(wait)
        if again:
            refile.add(f"leg-{n}")
        file(f"leg-{n}", w.clock.now + linger, cancel)
    w.clock.advance(100)
    assert dict(released) == expected and len(released) == len(expected)
    assert [at for _, at in released] == sorted(at for _, at in released)
    assert controller._linger_timer is None and controller._lingering == []
