"""Calls through switch, driven by SIPp on both sides (issue 3).

The callee is a SIPp UAS registered first from the port it then answers on
(sipp.registered_uas); the caller is a SIPp UAC that answers the 407 digest
challenge (scenarios/uac_*.xml, checked SIPp against SIPp in
test_sipp_scenarios.py).  CONTRACT.md: INVITE from a registered user -> 407,
then routed by Request-URI user (extension or direct number, with or without
'+'); 404 unknown, 480 not registered, 486/603 passed back, 408 after the ring
timeout; CANCEL -> 487; each side its own dialog and SDP pointing at switch's
media address; switch_calls_* metrics, /api/v1/calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .callcheck import (
    assert_sdp_points_at_engine,
    calls_list,
    calls_total,
    parse_trace,
    wait_no_active_calls,
)
from .harness import LOOPBACK, Engine, wait_until
from .sipp import SippResult, SippServer, registered_uas, run_sipp, write_callers_csv

pytestmark = pytest.mark.interop

CALLER, CALLEE = "1001", "1002"


@pytest.fixture
def call_engine(engine_factory) -> Engine:  # type: ignore[no-untyped-def]
    # 20 calls/s of short calls: ~10 calls up at once, 4 ports each.
    return engine_factory(rtp_ports=400).start()


def _callee(engine: Engine, workdir: Path, scenario: str, **kwargs: object) -> SippServer:
    return registered_uas(
        workdir, scenario, engine.sip_addr, CALLEE, engine.user(CALLEE).password,
        trace_msg=True, **kwargs,
    )  # fmt: skip


def _call(
    engine: Engine, workdir: Path, scenario: str, target: str, **kwargs: object
) -> SippResult:
    csv = write_callers_csv(workdir / "caller.csv", [(CALLER, engine.user(CALLER).password)])
    kwargs.setdefault("calls", 1)
    return run_sipp(
        workdir, scenario, engine.sip_addr, users_csv=csv, service=target,
        auth_uri=f"{target}@{LOOPBACK}:{engine.sip_port}", tag="caller",
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def test_many_calls_b2bua_dialogs_and_media_address(call_engine: Engine, peer_dir: Path) -> None:
    engine = call_engine
    calls = 200
    callee = _callee(engine, peer_dir, "uas_call", calls=calls)
    try:
        result = _call(engine, peer_dir, "uac_call", CALLEE, calls=calls, rate=20,
                       duration_ms=200, trace_msg=True, timeout_s=60)  # fmt: skip
    finally:
        uas = callee.wait(20)
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (calls, 0), result.describe()
    assert uas.successful == calls, uas.describe()
    assert result.received(407) == calls, "every INVITE is challenged first\n" + result.describe()
    assert result.late_180s == 0, "a 180 arrived after its 200\n" + result.describe()

    caller_msgs = parse_trace(result.messages)
    callee_msgs = parse_trace(uas.messages)
    invites_in = [m for m in callee_msgs if m.direction == "received" and m.method == "INVITE"
                  and m.is_request]  # fmt: skip
    oks_in = [m for m in caller_msgs if m.direction == "received" and m.status == 200
              and m.method == "INVITE"]  # fmt: skip
    assert len(invites_in) == calls and len(oks_in) == calls
    caller_ids = {m.header("Call-ID") for m in caller_msgs}
    callee_ids = {m.header("Call-ID") for m in invites_in}
    assert not caller_ids & callee_ids, "B2BUA: the callee's Call-IDs must differ from the caller's"
    assert len(callee_ids) == calls
    caller_tags = {m.header("From") for m in caller_msgs if m.direction == "sent"}
    for inv in invites_in:
        assert inv.header("From") not in caller_tags  # own From tag on the callee's side
        contact = inv.header("Contact") or ""
        assert f"{engine.host}:{engine.sip_port}" in contact, inv.text
        assert_sdp_points_at_engine(engine, inv.body, "INVITE to the callee")
        # caller ID from the caller's user record (CONTRACT.md / issue 3)
        assert f"sip:{CALLER}@" in (inv.header("From") or ""), inv.text
        pai = inv.header("P-Asserted-Identity") or ""
        assert f"sip:{CALLER}@" in pai, inv.text
    for ok in oks_in:
        contact = ok.header("Contact") or ""
        assert f"{engine.host}:{engine.sip_port}" in contact, ok.text
        assert_sdp_points_at_engine(engine, ok.body, "200 to the caller")

    wait_no_active_calls(engine)
    assert calls_total(engine, "answered") == calls
    assert engine.problems() == []


@pytest.mark.parametrize("number_form", ["e164", "digits"])
def test_call_by_direct_number(call_engine: Engine, peer_dir: Path, number_form: str) -> None:
    engine = call_engine
    number = engine.user(CALLEE).numbers[0]
    target = number if number_form == "e164" else number.lstrip("+")
    callee = _callee(engine, peer_dir, "uas_call", calls=2)
    try:
        result = _call(engine, peer_dir, "uac_call", target, calls=2, rate=10, duration_ms=100)
    finally:
        uas = callee.wait(10)
    assert (result.returncode, result.successful) == (0, 2), result.describe()
    assert uas.successful == 2, uas.describe()
    invite = next(m for m in parse_trace(uas.messages) if m.is_request and m.method == "INVITE")
    # routed to the user's registered contact
    expected = f"INVITE sip:{CALLEE}@{LOOPBACK}:{callee.port}"
    assert invite.first_line.startswith(expected), invite.text


def test_cancel_before_answer(call_engine: Engine, peer_dir: Path) -> None:
    engine = call_engine
    callee = _callee(engine, peer_dir, "uas_ring", calls=3)
    try:
        result = _call(engine, peer_dir, "uac_cancel", CALLEE, calls=3, rate=5)
    finally:
        uas = callee.wait(15)
    assert result.returncode == 0, result.describe()
    assert result.received(487) == 3, result.describe()
    # switch CANCELled its own INVITE towards the callee (which answered 487)
    assert uas.successful == 3, uas.describe()
    cancels = [m for m in parse_trace(uas.messages) if m.is_request and m.method == "CANCEL"]
    assert len(cancels) == 3
    wait_no_active_calls(engine)
    assert calls_total(engine, "cancelled") == 3


@pytest.mark.parametrize(("target", "code"), [("4999", 404), ("1003", 480), ("+19995550000", 404)])
def test_unknown_and_unregistered_targets(
    call_engine: Engine, peer_dir: Path, target: str, code: int
) -> None:
    result = _call(call_engine, peer_dir, "uac_reject", target)
    assert result.returncode == 0, result.describe()
    assert result.received(code) == 1, f"expected {code}\n" + result.describe()
    wait_no_active_calls(call_engine)


@pytest.mark.parametrize(("scenario", "code"), [("uas_busy", 486), ("uas_decline", 603)])
def test_callee_refusal_passed_back(
    call_engine: Engine, peer_dir: Path, scenario: str, code: int
) -> None:
    engine = call_engine
    callee = _callee(engine, peer_dir, scenario, calls=2)
    try:
        result = _call(engine, peer_dir, "uac_reject", CALLEE, calls=2, rate=10)
    finally:
        uas = callee.wait(10)
    assert result.returncode == 0, result.describe()
    assert result.received(code) == 2, f"expected {code} passed back\n" + result.describe()
    assert uas.successful == 2, uas.describe()
    wait_no_active_calls(engine)
    if code == 486:
        assert calls_total(engine, "busy") == 2


def test_ring_timeout_408(engine_factory, peer_dir: Path) -> None:  # type: ignore[no-untyped-def]
    engine = engine_factory(extra_config="[calls]\nring_timeout = 2\n").start()
    callee = _callee(engine, peer_dir, "uas_ring", calls=1)
    try:
        result = _call(engine, peer_dir, "uac_reject", CALLEE)
    finally:
        uas = callee.wait(10)
    assert result.returncode == 0, result.describe()
    assert result.received(408) == 1, result.describe()
    assert uas.successful == 1, "the callee gets a CANCEL\n" + uas.describe()
    wait_no_active_calls(engine)
    assert calls_total(engine, "no_answer") == 1


def test_active_call_in_api_and_metrics(call_engine: Engine, peer_dir: Path) -> None:
    engine = call_engine
    callee = _callee(engine, peer_dir, "uas_call", calls=1)
    import threading

    box: dict[str, SippResult] = {}
    th = threading.Thread(target=lambda: box.setdefault(
        "r", _call(engine, peer_dir, "uac_call", CALLEE, duration_ms=4000)))  # fmt: skip
    th.start()
    try:
        listed = wait_until(lambda: [c for c in calls_list(engine) if len(c.get("parties", [])) == 2
                                     and c.get("state") in ("answered", "active", "bridged",
                                                            "connected", "up")],
                            10, "the call in /api/v1/calls", interval=0.1)  # fmt: skip
        call = listed[0]
        assert {"id", "state", "parties", "recording"} <= set(call), call
        parties = {str(p["extension_or_number"]) for p in call["parties"]}
        assert {CALLER, CALLEE} <= parties, call
        for p in call["parties"]:
            assert {"extension_or_number", "leg_id", "state"} <= set(p), p
        assert engine.metric_value("switch_calls_active") == 1
    finally:
        th.join(30)
        callee.wait(10)
    assert box["r"].successful == 1, box["r"].describe()
    wait_no_active_calls(engine)


def test_call_events_on_the_stream(call_engine: Engine, peer_dir: Path) -> None:
    """call.created, call.answered, call.ended for one call, each with call_id and time."""
    import asyncio
    import json

    import aiohttp

    engine = call_engine
    callee = _callee(engine, peer_dir, "uas_call", calls=1)
    received: list[dict[str, object]] = []

    async def collect(ready: asyncio.Event) -> None:
        url = f"ws://{engine.host}:{engine.http_port}/api/v1/events"
        headers = {"Authorization": f"Bearer {engine.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers=headers) as ws,
        ):
            ready.set()
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(message.data)
                if str(event.get("type", "")).startswith("call."):
                    received.append(event)
                if event.get("type") == "call.ended":
                    return

    async def scenario() -> SippResult:
        ready = asyncio.Event()
        task = asyncio.create_task(collect(ready))
        await asyncio.wait_for(ready.wait(), 10)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            None, lambda: _call(engine, peer_dir, "uac_call", CALLEE, duration_ms=300)
        )
        await asyncio.wait_for(task, 20)
        return result

    try:
        result = asyncio.run(scenario())
    finally:
        callee.wait(10)
    assert result.successful == 1, result.describe()
    types = [e["type"] for e in received]
    assert types == ["call.created", "call.answered", "call.ended"], received
    ids = {e.get("call_id") for e in received}
    assert len(ids) == 1 and None not in ids, received
    assert all("time" in e for e in received), received
