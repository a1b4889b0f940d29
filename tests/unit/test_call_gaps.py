"""Call-control gaps of issue 3, sans-I/O: the controller with fake SIP, media and time.

Max call duration (``[calls] max_duration``), the forced-release counter,
re-INVITE/UPDATE without SDP, the route set of in-dialog requests (RFC 3261
§12.2.1.1, §8.1.2), and ``Require: 100rel`` (RFC 3262, which we do not support).
"""

from __future__ import annotations

import pytest
from test_call_controller import ANSWER, OFFER, Caller, World, _hold
from test_call_lifecycle import GUARD, bye_to, fork_call_id, released

from switch.call.model import CallState
from switch.sip.headers import tag_of
from switch.sip.message import Request, make_response

# --- max call duration ----------------------------------------------------------------------


def test_max_duration_releases_the_call_with_bye_both_ways() -> None:
    w = World(max_duration=120)
    phone, fork, ok = w.established()
    (call,) = w.controller.calls
    assert call.state is CallState.ANSWERED
    w.clock.advance(119)
    assert w.controller.calls and not w.sent("BYE")
    w.clock.advance(2)
    assert not w.controller.calls
    assert {b.request.headers.get("call-id") for b in w.sent("BYE")} == {
        phone.call_id, fork_call_id(fork)}
    record = w.records.last(w.call_id())
    assert (record.result, record.cause) == ("answered", "max_duration")
    assert ("call.ended", "max_duration") in [(t, e.get("cause")) for t, e in w.bus.events]
    w.reply(bye_to(w, fork_call_id(fork)), 200)
    w.reply(bye_to(w, phone.call_id), 200)
    w.clock.advance(GUARD)
    released(w)


def test_max_duration_counts_from_the_answer_not_the_invite() -> None:
    w = World(max_duration=60, ring_timeout=100)
    phone = w.invite()
    (fork,) = w.forks()
    w.reply(fork, 180)
    w.clock.advance(50)                          # ringing does not count
    w.answer(fork)
    phone.ack()
    w.clock.advance(59)
    assert w.controller.calls
    w.clock.advance(2)
    assert not w.controller.calls
    assert w.records.last(w.call_id()).cause == "max_duration"


def test_max_duration_zero_is_unlimited_and_an_ended_call_leaves_no_timer() -> None:
    w = World(max_duration=0)
    w.established()
    w.clock.advance(10 * 86400)
    assert w.controller.calls                    # no session timer, no media timeout here
    w2 = World(max_duration=30)
    phone, fork, ok = w2.established()
    (call,) = w2.controller.calls
    phone.in_dialog("BYE")
    w2.reply(bye_to(w2, fork_call_id(fork)), 200)
    assert call.duration_timer is None           # cancelled with the call
    w2.clock.advance(60)
    assert [r.cause for r in w2.records.saved if r.cause] == ["caller_bye"]


# --- switch_calls_forced_release_total -------------------------------------------------------


def _forced(w: World, reason: str) -> float | None:
    return w.metrics.registry.get_sample_value("switch_calls_forced_release_total",
                                               {"reason": reason})


def test_forced_release_counter_by_reason() -> None:
    w = World()
    assert _forced(w, "ending_timeout") == 0.0   # zero-initialised: rate() works at once
    assert _forced(w, "shutdown") == 0.0 and _forced(w, "error") == 0.0
    phone, fork, ok = w.established()
    phone.in_dialog("BYE")                       # the callee never answers our BYE
    w.clock.advance(GUARD + 1)
    released(w)
    assert w.controller.forced_releases == 1
    assert _forced(w, "ending_timeout") == 1.0
    assert b'switch_calls_forced_release_total{reason="ending_timeout"} 1.0' in w.metrics.render()


async def test_forced_release_counter_at_shutdown() -> None:
    w = World()
    w.established()
    await w.controller.shutdown(0.01)            # nobody answers the BYEs
    assert _forced(w, "shutdown") == 2.0
    assert _forced(w, "ending_timeout") == 0.0


# --- re-INVITE / UPDATE without SDP ------------------------------------------------------------


def test_offerless_reinvite_is_offered_the_codecs_in_use_and_not_relayed() -> None:
    """Our 2xx offers the leg's current media restricted to the formats the bridge uses
    (we relay without transcoding); the other leg is not re-INVITEd (RFC 3261 §14.2)."""
    w = World()
    phone, fork, ok = w.established()            # caller offered 0 8 101, callee answered 0 101
    invites_before = len(w.sent("INVITE"))
    w.callee_request(fork, ok, "ACK", 1)         # (stray ACK: ignored)
    txn, _ = w.callee_request(fork, ok, "INVITE", 2)      # the callee: re-INVITE, no SDP
    (response,) = w.sip.responses[txn]
    assert response.status == 200
    from switch.sip.sdp import parse_sdp
    offer = parse_sdp(response.body)
    assert offer.media[0].formats == ("0", "101")         # not PCMA: the caller uses PCMU
    assert offer.media_direction(0).value == "sendrecv"
    assert offer.connection is not None and offer.connection.address == "198.51.100.1"
    assert len(w.sent("INVITE")) == invites_before        # nothing sent to the caller
    w.callee_request(fork, ok, "ACK", 2, _hold(ANSWER, b"sendrecv", b"7"))
    (call,) = w.controller.calls
    assert call.state is CallState.ANSWERED
    assert w.media.configs[call.forks[0].id].direction == "sendrecv"
    assert w.media.bridges[call.forks[0].id] == call.caller.id  # type: ignore[union-attr]


def test_offerless_reinvite_answered_on_hold_relays_the_hold() -> None:
    """A phone that holds by answering our offer ``sendonly`` in its ACK: the other
    party is re-INVITEd ``sendonly`` as if the hold had come as an offer."""
    w = World()
    phone, fork, ok = w.established()
    txn, _ = phone.in_dialog("INVITE")           # the caller: re-INVITE without SDP
    (response,) = w.sip.responses[txn]
    from switch.sip.sdp import parse_sdp
    offer = parse_sdp(response.body)
    assert offer.media[0].formats == ("0", "101")
    before = len(w.sent("INVITE"))
    phone.in_dialog("ACK", _hold(OFFER.replace(b" 0 8 101", b" 0 101"), b"sendonly", b"2"),
                    cseq=phone.cseq)
    (call,) = w.controller.calls
    assert call.caller is not None
    assert w.media.configs[call.caller.id].direction == "recvonly"
    reinvites = w.sent("INVITE")[before:]
    assert len(reinvites) == 1
    assert parse_sdp(reinvites[0].request.body).media_direction(0).value == "sendonly"
    assert tag_of(reinvites[0].request.headers.get("to") or "") == "btag"


def test_a_direction_change_during_a_pending_reinvite_is_offered_after_it() -> None:
    """Hold then resume in quick succession, both by offerless re-INVITEs answered in
    the ACKs: the resume comes while our hold re-INVITE to the callee is unanswered,
    so it is offered to the callee once that exchange is over (not dropped)."""
    from switch.sip.sdp import parse_sdp
    w = World()
    phone, fork, ok = w.established()
    before = len(w.sent("INVITE"))
    answer = OFFER.replace(b" 0 8 101", b" 0 101")
    phone.in_dialog("INVITE")                                    # offerless: we offer
    phone.in_dialog("ACK", _hold(answer, b"sendonly", b"2"), cseq=phone.cseq)
    (hold,) = w.sent("INVITE")[before:]                          # to the callee, unanswered
    assert parse_sdp(hold.request.body).media_direction(0).value == "sendonly"
    phone.in_dialog("INVITE")                                    # resume, at once
    phone.in_dialog("ACK", _hold(answer, b"sendrecv", b"3"), cseq=phone.cseq)
    assert len(w.sent("INVITE")) == before + 1                  # deferred, not sent yet
    w.answer(hold, _hold(ANSWER, b"recvonly", b"8"))            # the callee takes the hold
    resume = w.sent("INVITE")[before + 1:]
    assert len(resume) == 1
    assert parse_sdp(resume[0].request.body).media_direction(0).value == "sendrecv"
    assert parse_sdp(resume[0].request.body).media[0].formats == ("0", "101")
    w.answer(resume[0], _hold(ANSWER, b"sendrecv", b"9"))
    (call,) = w.controller.calls
    assert w.media.configs[call.forks[0].id].direction == "sendrecv"
    assert call.forks[0].pending_direction is None


def test_offerless_update_is_a_refresh_answered_without_sdp() -> None:
    w = World()
    phone, fork, ok = w.established()
    txn, _ = phone.in_dialog("UPDATE")
    (response,) = w.sip.responses[txn]
    assert response.status == 200 and not response.body
    assert w.controller.calls[0].state is CallState.ANSWERED


# --- route set: in-dialog requests through a Record-Routing proxy ------------------------------

PROXY = "192.0.2.50"


def _invite_through(w: World, record_route: str) -> Caller:
    """The caller's INVITE as a proxy that Record-Routes would pass it on."""
    plain = Caller.request

    def request(self: Caller, *, cseq: int, authorization: str | None = None) -> Request:
        out = plain(self, cseq=cseq, authorization=authorization)
        out.headers.add("Record-Route", record_route)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Caller, "request", request)
        return w.invite()


def test_requests_to_the_caller_follow_a_loose_route_set() -> None:
    w = World(max_duration=60)
    phone = _invite_through(w, f"<sip:{PROXY}:5070;lr>")
    (fork,) = w.forks()
    w.answer(fork)
    assert phone.final.headers.get_all("record-route") == [f"<sip:{PROXY}:5070;lr>"]
    phone.ack()
    w.clock.advance(61)                          # max_duration: BYE to both sides
    bye = bye_to(w, phone.call_id)
    assert (bye.destination.host, bye.destination.port) == (PROXY, 5070)
    assert bye.request.headers.get_all("route") == [f"<sip:{PROXY}:5070;lr>"]
    assert bye.request.uri == "sip:1001@10.0.0.1:5060"        # the remote target
    callee_bye = bye_to(w, fork_call_id(fork))                  # no route set: its flow
    assert (callee_bye.destination.host, callee_bye.destination.port) == ("203.0.113.5", 40000)


def test_requests_to_the_caller_through_a_strict_router() -> None:
    w = World()
    phone = _invite_through(w, f"<sip:{PROXY}:5080>")
    (fork,) = w.forks()
    w.answer(fork)
    phone.ack()
    w.controller.hold(w.controller.calls[0].caller)  # type: ignore[arg-type]
    (reinvite,) = [s for s in w.sent("INVITE") if s.request.headers.get("call-id")
                   == phone.call_id]
    # §12.2.1.1: the strict router becomes the Request-URI, the remote target the last Route.
    assert reinvite.request.uri == f"sip:{PROXY}:5080"
    assert reinvite.request.headers.get_all("route") == ["<sip:1001@10.0.0.1:5060>"]
    assert (reinvite.destination.host, reinvite.destination.port) == (PROXY, 5080)


def test_requests_to_the_callee_follow_the_route_set_of_its_2xx() -> None:
    w = World()
    phone = w.invite()
    (fork,) = w.forks()
    ok = make_response(fork.request, 200, to_tag="btag")
    ok.headers.add("Record-Route", f"<sip:{PROXY}:5090;transport=tcp;lr>")
    ok.headers.add("Record-Route", "<sip:192.0.2.51:5091;lr>")
    ok.headers.add("Contact", "<sip:1002@10.0.0.2:5062>")
    ok.headers.add("Content-Type", "application/sdp")
    ok.body = ANSWER
    w.controller.receive_response(fork.txn, ok)
    # the ACK for the 2xx: to the last Record-Route (our side of the route set), §12.1.2
    ((ack, destination),) = [(m, d) for m, d in w.sip.stateless
                             if isinstance(m, Request) and m.method == "ACK"]
    assert (destination.host, destination.port, destination.transport) == (
        "192.0.2.51", 5091, "udp")
    assert ack.headers.get_all("route") == [
        "<sip:192.0.2.51:5091;lr>", f"<sip:{PROXY}:5090;transport=tcp;lr>"]
    assert ack.headers.get("via", "").startswith("SIP/2.0/UDP ")
    phone.ack()
    phone.in_dialog("BYE")
    bye = bye_to(w, fork_call_id(fork))
    assert (bye.destination.host, bye.destination.port) == ("192.0.2.51", 5091)
    assert bye.request.uri == "sip:1002@10.0.0.2:5062"


def test_next_hop_of_a_request() -> None:
    from switch.sip.dialog import next_hop, route_hop
    from switch.sip.message import Headers

    def req(*headers: tuple[str, str], uri: str = "sip:b@10.0.0.9:5062") -> Request:
        return Request("BYE", uri, Headers([("To", "<sip:b@x>;tag=t"), *headers]))

    assert next_hop(req()) == "sip:b@10.0.0.9:5062"
    assert route_hop(req()) is None                       # no route set: the flow
    loose = req(("Route", "<sip:p1.example:5070;lr>"), ("Route", "<sip:p2;lr>"))
    assert next_hop(loose) == "sip:p1.example:5070;lr"
    hop = route_hop(loose)
    assert hop is not None and (hop.host, hop.port, hop.transport) == ("p1.example", 5070, None)
    strict = req(("Route", "<sip:b@10.0.0.9:5062>"), uri="sip:[2001:db8::1];transport=TCP")
    hop = route_hop(strict)
    assert hop is not None and (hop.host, hop.port, hop.transport) == ("2001:db8::1", 5060, "tcp")
    # an initial request (no To tag) with a preloaded Route goes where its caller says
    assert route_hop(Request("INVITE", "sip:b@x", Headers([
        ("To", "<sip:b@x>"), ("Route", "<sip:p1;lr>")]))) is None


# --- 100rel: not supported, refused when required ----------------------------------------------


def _invite_with(w: World, *extra: tuple[str, str]) -> Caller:
    plain = Caller.request

    def request(self: Caller, *, cseq: int, authorization: str | None = None) -> Request:
        out = plain(self, cseq=cseq, authorization=authorization)
        for name, value in extra:
            out.headers.add(name, value)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Caller, "request", request)
        return w.invite()


def test_require_100rel_gets_420_unsupported() -> None:
    w = World()
    phone = _invite_with(w, ("Supported", "timer"), ("Require", "100rel"))
    assert phone.final.status == 420
    assert phone.final.headers.get("unsupported") == "100rel"
    assert not w.forks() and not w.controller.calls


def test_require_timer_is_accepted_only_with_session_timers() -> None:
    w = World(session_timer=True)
    phone = _invite_with(w, ("Supported", "timer"), ("Require", "timer"),
                         ("Session-Expires", "1800"))
    assert w.forks() and phone.statuses == []     # routed: nothing refused
    w2 = World(session_timer=False)
    refused = _invite_with(w2, ("Require", "timer, 100rel"))
    assert refused.final.status == 420
    assert refused.final.headers.get("unsupported") == "timer, 100rel"


def test_supported_100rel_is_not_used() -> None:
    """A caller offering 100rel gets ordinary unreliable provisionals (no Require, no
    RSeq) and the call goes on; our INVITE to the callee does not offer 100rel."""
    w = World()
    phone = _invite_with(w, ("Supported", "100rel, timer"))
    (fork,) = w.forks()
    assert "100rel" not in (fork.request.headers.get("supported") or "")
    assert "require" not in fork.request.headers
    w.reply(fork, 180)
    ringing = [r for r in w.sip.responses[phone.txn] if r.status == 180]
    assert ringing and "require" not in ringing[0].headers and "rseq" not in ringing[0].headers
    w.answer(fork)
    assert phone.final.status == 200 and "require" not in phone.final.headers
    phone.ack()
    assert w.controller.calls[0].state is CallState.ANSWERED


def test_reinvite_requiring_100rel_gets_420_and_the_call_goes_on() -> None:
    from switch.sip.message import Headers
    w = World()
    phone, fork, ok = w.established()
    invites = len(w.sent("INVITE"))
    request = Request("INVITE", "sip:switch@192.0.2.1:5060", Headers([
        ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-rel"),
        ("From", '"Mallory" <sip:1001@switch.local>;tag=atag'),
        ("To", phone.final.headers.get("to") or ""),
        ("Call-ID", phone.call_id), ("CSeq", "10 INVITE"),
        ("Contact", "<sip:1001@10.0.0.1:5060>"), ("Require", "100rel"),
        ("Content-Type", "application/sdp")]), _hold(OFFER, b"sendonly", b"2"))
    assert w.controller.receive_in_dialog(77, request, phone.source) is True
    (response,) = w.sip.responses[77]
    assert (response.status, response.headers.get("unsupported")) == (420, "100rel")
    assert len(w.sent("INVITE")) == invites              # nothing relayed
    assert w.controller.calls[0].state is CallState.ANSWERED
    txn, _ = phone.in_dialog("INVITE", _hold(OFFER, b"sendonly", b"3"), cseq=11)
    assert len(w.sent("INVITE")) == invites + 1          # the same offer without Require


def test_dead_signalling_only_call_ends_by_its_session_timer() -> None:
    """No RTP to watch and no max_duration: the session timer the caller negotiated
    (RFC 4028) is what ends a call whose caller vanished: no refresh, BYE both ways."""
    w = World(session_timer=True, max_duration=0)
    phone = _invite_with(w, ("Supported", "timer"), ("Session-Expires", "90;refresher=uac"))
    (fork,) = w.forks()
    w.answer(fork)
    assert phone.final.headers.get("session-expires") == "90;refresher=uac"
    phone.ack()
    w.clock.advance(90)                          # the caller never refreshes (RFC 4028 §10)
    assert not w.controller.calls
    assert {b.request.headers.get("call-id") for b in w.sent("BYE")} == {
        phone.call_id, fork_call_id(fork)}
    assert w.records.last(w.call_id()).cause == "caller_session_expired"
