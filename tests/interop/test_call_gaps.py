"""Call-control gaps of issue 3 against real peers: route sets, delayed offer,
max call duration, the forced-release metric, 420 Bad Extension for a required
extension, offerless re-INVITEs (SIPp on both sides, and a small Record-Routing
proxy, rrproxy.py, in front of the caller).

Two of these found engine bugs when written (``Require: timer`` refused while
session timers were on; hold/resume re-offers with codecs no longer in use):
both fixed since."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from .callcheck import (
    TracedMessage,
    assert_sdp_points_at_engine,
    calls_list,
    parse_trace,
    wait_no_active_calls,
)
from .harness import LOOPBACK, Engine, wait_until
from .rrproxy import RecordRouteProxy
from .sipp import SippResult, SippServer, registered_uas, run_sipp, write_callers_csv

pytestmark = pytest.mark.interop

CALLER, CALLEE = "1001", "1002"


def call_records(engine: Engine) -> list[dict[str, object]]:
    """The call records switch stored (SQLite, read-only while it runs)."""
    rows: list[dict[str, object]] = []
    for path in engine.data_dir.glob("*.db"):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            db.row_factory = sqlite3.Row
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if "calls" in tables:
                for row in db.execute("SELECT * FROM calls ORDER BY started_at"):
                    record = dict(row)
                    record["parties"] = json.loads(str(record["parties"]))
                    rows.append(record)
        finally:
            db.close()
    return rows


def wait_call_record(engine: Engine, cause: str | None = None) -> dict[str, object]:
    """The first ended call record (with ``cause``, if given), once it is written."""
    def ended() -> dict[str, object] | None:
        for record in call_records(engine):
            if record["ended_at"] is not None and cause in (None, record["cause"]):
                return record
        return None
    found = wait_until(ended, 15, f"an ended call record (cause {cause})", interval=0.2,
                       detail=lambda: f"{call_records(engine)}\n{engine.diagnostics(30)}")
    assert found is not None
    return found


def _callee(engine: Engine, workdir: Path) -> SippServer:
    return registered_uas(workdir, "uas_call", engine.sip_addr, CALLEE,
                          engine.user(CALLEE).password, trace_msg=True, calls=1)


def _caller(engine: Engine, workdir: Path, scenario: str, target: tuple[str, int]
            ) -> SippResult:
    csv = write_callers_csv(workdir / "caller.csv", [(CALLER, engine.user(CALLER).password)])
    return run_sipp(workdir, scenario, target, users_csv=csv, service=CALLEE,
                    auth_uri=f"{CALLEE}@{target[0]}:{target[1]}", tag="caller", calls=1,
                    trace_msg=True, timeout_s=30)


def test_route_set_of_a_record_routing_proxy_and_max_duration(
        engine_factory, peer_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """The caller's INVITE comes through a proxy that Record-Routes an address other
    than the one it sends from: the BYE switch sends at max_duration follows the
    route set (RFC 3261 §12.2.1.1) and reaches the caller through the proxy."""
    engine = engine_factory(extra_config="[calls]\nmax_duration = 2\n").start()
    assert engine.metric_value("switch_calls_forced_release_total",
                               {"reason": "ending_timeout"}) == 0
    callee = _callee(engine, peer_dir)
    try:
        with RecordRouteProxy(engine.sip_addr) as proxy:
            result = _caller(engine, peer_dir, "uac_bye_in", (LOOPBACK, proxy.port))
            seen = list(proxy.seen)
    finally:
        uas = callee.wait(15)
    assert (result.returncode, result.successful) == (0, 1), result.describe()
    assert uas.successful == 1, uas.describe()
    invite = next(m for m in parse_trace(uas.messages) if m.is_request and m.method == "INVITE")
    assert "Record-Route" not in invite.text, "the caller's route set stays on its side"
    byes = [s for s in seen if s.method == "BYE"]
    assert byes, seen
    assert {b.socket for b in byes} == {"listen"}, (
        f"switch's BYE must go to the Record-Route address, not the proxy's source: {byes}")
    ok = next(m for m in parse_trace(result.messages)
              if m.direction == "received" and m.status == 200 and m.method == "INVITE")
    assert ok.header("Record-Route") == proxy.record_route, ok.text
    bye_in = next(m for m in parse_trace(result.messages)
                  if m.direction == "received" and m.is_request and m.method == "BYE")
    assert proxy.record_route not in bye_in.text, "the proxy consumed its own Route"

    wait_no_active_calls(engine)
    record = wait_call_record(engine, "max_duration")
    assert (record["result"], record["caller"], record["callee"]) == ("answered", CALLER, CALLEE)
    assert engine.metric_value("switch_calls_forced_release_total") == 0
    assert engine.problems() == []


def test_delayed_offer_from_the_caller(engine_factory, peer_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """INVITE without SDP (RFC 3261 §13.2.1): the callee's INVITE has none either, its
    200's offer reaches the caller in switch's 200, the caller's answer in its ACK
    reaches the callee in switch's ACK (RFC 6337 §2.1)."""
    engine = engine_factory(extra_config="[calls]\nmax_duration = 2\n").start()
    callee = _callee(engine, peer_dir)
    try:
        result = _caller(engine, peer_dir, "uac_late_offer", engine.sip_addr)
    finally:
        uas = callee.wait(15)
    assert (result.returncode, result.successful) == (0, 1), result.describe()
    assert uas.successful == 1, uas.describe()
    callee_msgs = parse_trace(uas.messages)
    invite = next(m for m in callee_msgs if m.is_request and m.method == "INVITE")
    assert not invite.body.strip(), invite.text
    ack = next(m for m in callee_msgs if m.is_request and m.method == "ACK")
    assert_sdp_points_at_engine(engine, ack.body, "ACK to the callee (the caller's answer)")
    ok = next(m for m in parse_trace(result.messages)
              if m.direction == "received" and m.status == 200 and m.method == "INVITE")
    assert_sdp_points_at_engine(engine, ok.body, "200 to the caller (the callee's offer)")
    wait_no_active_calls(engine)
    assert wait_call_record(engine, "max_duration")["result"] == "answered"


# --- 420 Bad Extension (RFC 3261 §8.2.2.3) ------------------------------------------------


def _distinct(trace: str) -> list[TracedMessage]:
    """A SIPp message trace without retransmissions (a loaded machine makes some):
    a message counts once per (direction, first line, CSeq, top Via)."""
    seen: set[tuple[str, str, str | None, str | None]] = set()
    out: list[TracedMessage] = []
    for m in parse_trace(trace):
        key = (m.direction, m.first_line, m.header("CSeq"), m.header("Via"))
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def _calls_total(engine: Engine) -> float:
    return engine.metric_value("switch_calls_total") or 0.0


def _require_call(engine: Engine, workdir: Path, require: str, tag: str) -> SippResult:
    """uac_require.xml with ``Require: <require>`` (its 407 branch taken if challenged)."""
    csv = write_callers_csv(workdir / f"{tag}.csv", [(CALLER, engine.user(CALLER).password)])
    return run_sipp(workdir, "uac_require", engine.sip_addr, users_csv=csv, service=CALLEE,
                    auth_uri=f"{CALLEE}@{engine.sip_addr[0]}:{engine.sip_addr[1]}",
                    tag=tag, calls=1, trace_msg=True, timeout_s=30,
                    keys={"require": require})


def _refused_with_420(engine: Engine, workdir: Path, require: str, unsupported: str,
                      tag: str) -> None:
    """``Require: <require>`` is refused 420 with ``Unsupported: <unsupported>``.

    switch makes the §8.2 header checks (420) before it authenticates the INVITE
    (switch/service.py: ``core.check`` before ``receive_invite``), so there is no 407
    first; a challenge first (§8.2's suggested order) would do as well."""
    result = _require_call(engine, workdir, require, tag)
    assert (result.returncode, result.successful) == (0, 1), result.describe()
    finals = [m for m in _distinct(result.messages)
              if m.direction == "received" and not m.is_request and (m.status or 0) >= 200]
    assert [m.status for m in finals] in ([420], [407, 420]), result.describe()
    refusal = finals[-1]
    assert refusal.first_line == "SIP/2.0 420 Bad Extension", refusal.text
    assert refusal.header("Unsupported") == unsupported, refusal.text
    sent = [m.method for m in _distinct(result.messages)
            if m.direction == "sent" and m.is_request]
    assert sent == ["INVITE", "ACK"] * len(finals), result.describe()


def test_required_extensions_get_420_before_any_call(
        engine_factory, peer_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """An INVITE that requires 100rel (RFC 3262, which switch does not do) or an unknown
    option tag is refused 420 with Unsupported listing them (RFC 3261 §8.2.2.3): no call
    is created (no record, switch_calls_total unchanged) and nothing reaches the callee.
    Then an ordinary call goes through to the same callee: the check is not vacuous."""
    engine = engine_factory().start()
    callee = _callee(engine, peer_dir)
    try:
        before = _calls_total(engine)
        for i, (require, unsupported) in enumerate([("100rel", "100rel"), ("foo", "foo"),
                                                    ("100rel, foo", "100rel, foo")]):
            _refused_with_420(engine, peer_dir, require, unsupported, f"require{i}")
        assert _calls_total(engine) == before
        assert calls_list(engine) == []
        assert call_records(engine) == []
        assert (engine.metric_value("switch_calls_active") or 0) == 0
        result = _caller(engine, peer_dir, "uac_call", engine.sip_addr)
    finally:
        uas = callee.wait(15)
    assert (result.returncode, result.successful) == (0, 1), result.describe()
    assert uas.successful == 1, uas.describe()
    invites = [m for m in _distinct(uas.messages) if m.is_request and m.method == "INVITE"]
    assert len(invites) == 1, uas.describe()
    assert "Require" not in invites[0].text.split("\n\n", 1)[0], invites[0].text
    wait_no_active_calls(engine)
    record = wait_call_record(engine, "caller_bye")
    assert len(call_records(engine)) == 1, call_records(engine)
    assert (record["result"], record["caller"], record["callee"]) == ("answered", CALLER, CALLEE)
    assert _calls_total(engine) == before + 1
    assert engine.problems() == []


def test_require_timer_gets_420_when_session_timers_are_off(
        engine_factory, peer_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """``[calls] session_timer = false``: ``Require: timer`` (RFC 4028) is an extension
    switch lacks, refused 420 ``Unsupported: timer`` with no call created."""
    engine = engine_factory(extra_config="[calls]\nsession_timer = false\n").start()
    before = _calls_total(engine)
    _refused_with_420(engine, peer_dir, "timer", "timer", "require_timer")
    assert _calls_total(engine) == before
    assert calls_list(engine) == []
    assert call_records(engine) == []
    assert engine.problems() == []


def test_require_timer_is_accepted_when_session_timers_are_on(
        engine_factory, peer_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Session timers on (the default): an INVITE with ``Require: timer`` (RFC 4028 §7.1)
    must not be refused 420 (it is challenged, then reaches the callee)."""
    engine = engine_factory().start()
    callee = _callee(engine, peer_dir)
    try:
        result = _require_call(engine, peer_dir, "timer", "require_timer_on")
    finally:
        uas = callee.stop()     # today no INVITE reaches it: do not wait for one
    statuses = [m.status for m in _distinct(result.messages)
                if m.direction == "received" and not m.is_request]
    assert 420 not in statuses, result.describe()
    invites = [m for m in _distinct(uas.messages) if m.is_request and m.method == "INVITE"]
    assert invites, uas.describe()


# --- offerless re-INVITE (RFC 3261 §14.2, RFC 3264) ----------------------------------------


def _sdp_formats(body: str) -> list[str]:
    found = re.search(r"^m=audio \d+ \S+ (.*)$", body, re.M)
    assert found is not None, body
    return found.group(1).split()


def _sdp_direction(body: str) -> str:
    found = re.findall(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", body, re.M)
    return found[-1] if found else "sendrecv"


def _sdp_origin(body: str) -> tuple[str, int]:
    """(username + sess-id, sess-version) of the o= line."""
    found = re.search(r"^o=(\S+) (\S+) (\d+) ", body, re.M)
    assert found is not None, body
    return f"{found.group(1)} {found.group(2)}", int(found.group(3))


def _sdp_port(body: str) -> int:
    found = re.search(r"^m=audio (\d+) ", body, re.M)
    assert found is not None, body
    return int(found.group(1))


def _without_origin(body: str) -> str:
    return re.sub(r"^o=.*$", "", body, flags=re.M).strip()


def _assert_next_version(previous: str, current: str, what: str) -> None:
    """RFC 3264 §8: same session id; the version is kept for an identical SDP and
    incremented by one for a changed one."""
    (sid0, v0), (sid1, v1) = _sdp_origin(previous), _sdp_origin(current)
    assert sid1 == sid0, f"{what}: o= session changed\n{previous}\n{current}"
    same = _without_origin(previous) == _without_origin(current)
    assert v1 == (v0 if same else v0 + 1), f"{what}: o= version {v0} -> {v1}\n{current}"


def _reinvite_call(engine: Engine, workdir: Path, callee_scenario: str,
                   dirs: tuple[str, str]) -> tuple[SippResult, SippResult]:
    callee = registered_uas(workdir, callee_scenario, engine.sip_addr, CALLEE,
                            engine.user(CALLEE).password, trace_msg=True, calls=1)
    csv = write_callers_csv(workdir / "caller.csv", [(CALLER, engine.user(CALLER).password)])
    try:
        result = run_sipp(workdir, "uac_reinvite_offerless", engine.sip_addr, users_csv=csv,
                          service=CALLEE, auth_uri=f"{CALLEE}@{LOOPBACK}:{engine.sip_addr[1]}",
                          tag="caller", calls=1, trace_msg=True, timeout_s=60,
                          keys={"dir1": dirs[0], "dir2": dirs[1],
                                "ver2": "2" if dirs[0] == dirs[1] else "3"})
    finally:
        uas = callee.wait(20)
    assert (result.returncode, result.successful) == (0, 1), result.describe()
    assert uas.successful == 1, uas.describe()
    return result, uas


def _requests_in(peer: SippResult) -> list[str]:
    """The methods of the requests a peer received, in order; an ACK repeated for a
    retransmitted 2xx (switch gives each ACK a new branch, §13.2.2.4) counts once."""
    methods: list[str] = []
    for m in _distinct(peer.messages):
        if m.direction == "received" and m.is_request \
                and not (m.method == "ACK" and methods[-1:] == ["ACK"]):
            methods.append(m.method)
    return methods


def _check_offers_to_caller(engine: Engine, result: SippResult, uas: SippResult) -> None:
    """switch's 200s on the caller's side: the answer to its INVITE, then one offer per
    re-INVITE, on switch's media port (not the callee's), with only the codecs in use."""
    oks = [m for m in _distinct(result.messages)
           if m.direction == "received" and m.status == 200 and m.method == "INVITE"]
    assert len(oks) == 3, result.describe()
    answer, offer1, offer2 = (m.body for m in oks)
    callee_ok = next(m for m in _distinct(uas.messages)
                     if m.direction == "sent" and m.status == 200 and m.method == "INVITE")
    _, leg_port = assert_sdp_points_at_engine(engine, answer, "200 to the caller's INVITE")
    assert _sdp_formats(answer) == ["0", "101"], answer      # what the callee accepted
    for what, offer in (("first", offer1), ("second", offer2)):
        _, port = assert_sdp_points_at_engine(
            engine, offer, f"200 to the caller's {what} offerless re-INVITE (switch's offer)")
        assert port == leg_port, f"{what} offer: the caller's leg keeps its media port"
        assert port != _sdp_port(callee_ok.body), f"{what} offer: the callee's port leaked"
        assert _sdp_direction(offer) == "sendrecv", offer
        assert "PCMA" not in offer and "8" not in _sdp_formats(offer), (
            f"{what} offer: PCMA was offered by the caller but is not in use\n{offer}")
    # the first offer: the codecs of the call (PCMU + telephone-event); the caller's
    # answer keeps PCMU only, so the second offer is limited to it
    assert _sdp_formats(offer1) == ["0", "101"], offer1
    assert _sdp_formats(offer2) == ["0"], offer2
    _assert_next_version(answer, offer1, "first re-offer")
    _assert_next_version(offer1, offer2, "second re-offer")


def test_offerless_reinvite_from_the_caller(engine_factory, peer_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """A re-INVITE without SDP in an established call (RFC 3261 §14.2): switch's 200
    carries an offer (switch's media address, the codecs in use), the caller's ACK the
    answer; switch answers it itself, the callee is not re-INVITEd (no direction
    change), the call stays up and the caller's BYE ends it."""
    engine = engine_factory().start()
    result, uas = _reinvite_call(engine, peer_dir, "uas_call", ("sendrecv", "sendrecv"))
    _check_offers_to_caller(engine, result, uas)
    assert _requests_in(uas) == ["INVITE", "ACK", "BYE"], uas.describe()
    assert not [m for m in _distinct(result.messages)
                if m.direction == "received" and m.is_request], "switch sent the caller a request"
    wait_no_active_calls(engine)
    record = wait_call_record(engine, "caller_bye")
    assert (record["result"], record["caller"], record["callee"]) == ("answered", CALLER, CALLEE)
    assert engine.problems() == []


def test_offerless_reinvite_answered_sendonly_holds_the_callee(
        engine_factory, peer_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """The caller holds with an offerless re-INVITE (its ACK's answer is a=sendonly),
    then resumes the same way (a=sendrecv): switch passes each direction change on to
    the callee with a re-INVITE of its own (RFC 3264 §8.4), on switch's media port."""
    engine = engine_factory().start()
    result, uas = _reinvite_call(engine, peer_dir, "uas_reinvite", ("sendonly", "sendrecv"))
    _check_offers_to_caller(engine, result, uas)
    received = [m for m in _distinct(uas.messages) if m.direction == "received"]
    assert _requests_in(uas) == [
        "INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "BYE"], uas.describe()
    initial, hold, resume = (m for m in received if m.is_request and m.method == "INVITE")
    _, port = assert_sdp_points_at_engine(engine, initial.body, "INVITE to the callee")
    for what, invite, direction in (("hold", hold, "sendonly"), ("resume", resume, "sendrecv")):
        assert invite.header("To") and "tag=" in (invite.header("To") or ""), invite.text
        _, reinvite_port = assert_sdp_points_at_engine(engine, invite.body, f"{what} re-INVITE")
        assert reinvite_port == port, f"{what} re-INVITE: the callee's leg keeps its media port"
        assert _sdp_direction(invite.body) == direction, f"{what}:\n{invite.body}"
    _assert_next_version(initial.body, hold.body, "hold re-INVITE")
    _assert_next_version(hold.body, resume.body, "resume re-INVITE")
    wait_no_active_calls(engine)
    record = wait_call_record(engine, "caller_bye")
    assert (record["result"], record["caller"], record["callee"]) == ("answered", CALLER, CALLEE)
    assert engine.problems() == []


def test_direction_reoffer_to_the_callee_keeps_to_the_codecs_in_use(
        engine_factory, peer_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """The hold/resume re-INVITEs switch sends the callee after an offerless re-INVITE
    offer only the codecs the call uses: not PCMA, which the caller offered at first but
    neither side agreed to (the callee answered PCMU + telephone-event)."""
    engine = engine_factory().start()
    _, uas = _reinvite_call(engine, peer_dir, "uas_reinvite", ("sendonly", "sendrecv"))
    invites = [m for m in _distinct(uas.messages)
               if m.direction == "received" and m.is_request and m.method == "INVITE"]
    assert len(invites) == 3, uas.describe()
    for invite in invites[1:]:
        assert "8" not in _sdp_formats(invite.body), invite.body
