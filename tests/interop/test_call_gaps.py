"""Call-control gaps of issue 3 against real peers: route sets, delayed offer,
max call duration, the forced-release metric (SIPp on both sides, and a small
Record-Routing proxy, rrproxy.py, in front of the caller)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from .callcheck import assert_sdp_points_at_engine, parse_trace, wait_no_active_calls
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
