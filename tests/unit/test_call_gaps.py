"""Call-control gaps of issue 3, sans-I/O: the controller with fake SIP, media and time.

Max call duration (``[calls] max_duration``), the forced-release counter,
re-INVITE/UPDATE without SDP, the route set of in-dialog requests (RFC 3261
§12.2.1.1, §8.1.2), and ``Require: 100rel`` (RFC 3262, which we do not support).
"""

from __future__ import annotations

from test_call_controller import ANSWER, OFFER, World, _hold
from test_call_lifecycle import GUARD, bye_to, fork_call_id, released

from switch.call.model import CallState
from switch.sip.headers import tag_of

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


def test_offerless_update_is_a_refresh_answered_without_sdp() -> None:
    w = World()
    phone, fork, ok = w.established()
    txn, _ = phone.in_dialog("UPDATE")
    (response,) = w.sip.responses[txn]
    assert response.status == 200 and not response.body
    assert w.controller.calls[0].state is CallState.ANSWERED
