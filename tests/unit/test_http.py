"""HTTP edge (switch.http.api): auth, JSON errors, registrations, events WebSocket, calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import ClientResponse, WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from switch.events import CALL_CREATED, DTMF_DIGIT, EventBus
from switch.http.api import create_app, mark_stopping
from switch.metrics import Metrics
from switch.model import (
    CallView,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PartyView,
    RecordingView,
    RegistrationView,
    TransferView,
    VoicemailView,
)

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = 1_800_000_000.0


@dataclass
class FakeRegistrations:
    views: list[RegistrationView] = field(default_factory=list)

    def list_registrations(self) -> Sequence[RegistrationView]:
        return self.views


@dataclass
class FakeCalls:
    voicemail_file: Path
    hung_up: list[str] = field(default_factory=list)

    def list_calls(self) -> Sequence[CallView]:
        return [CallView(id="c1", state="answered", recording=False, parties=(
            PartyView(extension_or_number="1001", leg_id="l1", state="connected"),
            PartyView(extension_or_number="+14155550102", leg_id="l2", state="connected")))]

    async def hang_up(self, call_id: str) -> None:
        if call_id != "c1":
            raise NotFoundError(f"no call {call_id}")
        self.hung_up.append(call_id)

    async def transfer(self, call_id: str, *, by: str, kind: str, target: str) -> TransferView:
        if target.startswith("+"):
            raise ForbiddenError("transfers to external numbers are not allowed")
        if call_id == "ringing":
            raise ConflictError("call is not answered")
        return TransferView(id="t1", call_id=call_id, kind=kind, state="started", by=by,
                            target=target)

    def get_transfer(self, transfer_id: str) -> TransferView:
        return TransferView(id=transfer_id, call_id="c1", kind="warm", state="consulting",
                            by="1001", target="1003")

    async def complete_transfer(self, transfer_id: str) -> TransferView:
        return TransferView(id=transfer_id, call_id="c1", kind="warm", state="completed",
                            by="1001", target="1003")

    async def cancel_transfer(self, transfer_id: str) -> TransferView:
        return TransferView(id=transfer_id, call_id="c1", kind="warm", state="cancelled",
                            by="1001", target="1003")

    async def set_recording(self, call_id: str, *, by: str, action: str) -> RecordingView:
        return RecordingView(call_id=call_id, recording=action == "start",
                             path=Path("/r/c1.wav"))

    def list_voicemail(self, extension: str) -> Sequence[VoicemailView]:
        return [VoicemailView(id="m1", extension=extension, caller="1002", duration=4.25,
                              created_at=NOW, path=self.voicemail_file)]


@dataclass
class Setup:
    client: TestClient[web.Request, web.Application]
    bus: EventBus
    metrics: Metrics
    registrations: FakeRegistrations
    app: web.Application


Make = Callable[..., Awaitable[Setup]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def build(*, token: str | None = TOKEN, calls: FakeCalls | None = None,
                    queue_size: int = 100) -> Setup:
        metrics = Metrics(process_metrics=False)
        bus = EventBus(queue_size=queue_size, metrics=metrics)
        regs = FakeRegistrations()
        app = create_app(token=token, bus=bus, metrics=metrics, registrations=regs, calls=calls,
                         status=lambda: {"sip": {"udp": {"host": "127.0.0.1", "port": 5}}},
                         clock=lambda: NOW)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return Setup(client=client, bus=bus, metrics=metrics, registrations=regs, app=app)

    yield build
    for client in clients:
        await client.close()


async def error_of(resp: ClientResponse) -> dict[str, str]:
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


# ------------------------------------------------------------------ open endpoints


async def test_healthz(make: Make) -> None:
    s: Setup = await make()
    resp = await s.client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok"
    assert body["version"]
    assert body["sip"] == {"udp": {"host": "127.0.0.1", "port": 5}}
    mark_stopping(s.app)
    resp = await s.client.get("/healthz")
    assert resp.status == 503
    assert (await resp.json())["status"] == "stopping"


async def test_metrics_open_and_promtool_clean(
        make: Make, promtool_check: Callable[[bytes], None]) -> None:
    s: Setup = await make()
    await s.client.get("/api/v1/registrations")  # a 401, counted
    resp = await s.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    body = await resp.read()
    assert b"switch_sip_messages_total" in body or b"switch_sip_messages" in body
    assert b'switch_http_requests_total{route="/api/v1/registrations",status="401"} 1.0' in body
    promtool_check(body)


# ------------------------------------------------------------------ auth and errors


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer"},
])
async def test_api_requires_bearer_token(make: Make,
                                         headers: dict[str, str]) -> None:
    s: Setup = await make()
    resp = await s.client.get("/api/v1/registrations", headers=headers)
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_query_token_only_for_the_websocket(make: Make) -> None:
    s: Setup = await make()
    resp = await s.client.get(f"/api/v1/registrations?token={TOKEN}")
    assert resp.status == 401


async def test_unknown_api_route_is_401_then_404_json(make: Make) -> None:
    s: Setup = await make()
    assert (await s.client.get("/api/v1/nope")).status == 401
    resp = await s.client.get("/api/v1/nope", headers=AUTH)
    assert resp.status == 404
    assert (await error_of(resp))["code"] == "not_found"
    resp = await s.client.get("/nowhere")
    assert resp.status == 404
    assert (await error_of(resp))["code"] == "not_found"


async def test_wrong_method_is_405_json(make: Make) -> None:
    s: Setup = await make()
    resp = await s.client.post("/api/v1/registrations", headers=AUTH)
    assert resp.status == 405
    assert (await error_of(resp))["code"] == "method_not_allowed"


async def test_no_configured_token_disables_api(make: Make) -> None:
    s: Setup = await make(token=None)
    resp = await s.client.get("/api/v1/registrations", headers=AUTH)
    assert resp.status == 401
    assert "no [http] token" in (await error_of(resp))["message"]
    assert (await s.client.get("/healthz")).status == 200


# ------------------------------------------------------------------ registrations


async def test_registrations(make: Make) -> None:
    s: Setup = await make()
    resp = await s.client.get("/api/v1/registrations", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == []
    s.registrations.views = [
        RegistrationView(extension="1002", contact="sip:1002@192.0.2.2:5060",
                         expires_at=NOW + 120.7, user_agent="baresip", source="udp:192.0.2.2:5060"),
        RegistrationView(extension="1001", contact="sip:1001@192.0.2.1:5060",
                         expires_at=NOW - 5, user_agent="SIPp", source="tcp:192.0.2.1:40000"),
    ]
    resp = await s.client.get("/api/v1/registrations", headers=AUTH)
    assert await resp.json() == [
        {"extension": "1001", "contact": "sip:1001@192.0.2.1:5060", "expires": 0,
         "user_agent": "SIPp", "source": "tcp:192.0.2.1:40000"},
        {"extension": "1002", "contact": "sip:1002@192.0.2.2:5060", "expires": 120,
         "user_agent": "baresip", "source": "udp:192.0.2.2:5060"},
    ]


# ------------------------------------------------------------------ events WebSocket


async def test_events_websocket_with_bearer_header(make: Make) -> None:
    s: Setup = await make()
    async with s.client.ws_connect("/api/v1/events", headers=AUTH) as ws:
        while s.bus.subscriber_count == 0:  # the handler subscribes after the upgrade
            await _yield()
        s.bus.publish(CALL_CREATED, call_id="c1")
        msg = await ws.receive()
        assert msg.type == WSMsgType.TEXT
        data = msg.json()
        assert data["type"] == "call.created"
        assert data["call_id"] == "c1"
        assert data["time"].endswith("Z")
    while s.bus.subscriber_count:
        await _yield()


async def test_events_websocket_with_query_token_and_type_filter(
        make: Make) -> None:
    s: Setup = await make()
    async with s.client.ws_connect(f"/api/v1/events?token={TOKEN}&types=dtmf.digit") as ws:
        while s.bus.subscriber_count == 0:
            await _yield()
        s.bus.publish(CALL_CREATED, call_id="c1")
        s.bus.publish(DTMF_DIGIT, call_id="c1", digit="#", method="info", leg_id="l1",
                      extension="1001")
        data = (await ws.receive()).json()
        assert (data["type"], data["digit"]) == ("dtmf.digit", "#")


async def test_events_websocket_refuses_bad_token(make: Make) -> None:
    s: Setup = await make()
    resp = await s.client.get("/api/v1/events?token=nope-nope")
    assert resp.status == 401
    assert s.bus.subscriber_count == 0


async def test_events_websocket_closed_when_bus_closes(make: Make) -> None:
    s: Setup = await make()
    async with s.client.ws_connect("/api/v1/events", headers=AUTH) as ws:
        while s.bus.subscriber_count == 0:
            await _yield()
        s.bus.close()
        msg = await ws.receive()
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


async def _yield() -> None:
    await asyncio.sleep(0.01)


# ------------------------------------------------------------------ calls API


async def test_call_routes_501_without_call_control(make: Make) -> None:
    s: Setup = await make()
    resp = await s.client.get("/api/v1/calls", headers=AUTH)
    assert resp.status == 501
    assert (await error_of(resp))["code"] == "not_implemented"


async def test_call_routes(make: Make, tmp_path: Path) -> None:
    wav = tmp_path / "m1.wav"
    wav.write_bytes(b"RIFF....WAVE")
    calls = FakeCalls(voicemail_file=wav)
    s: Setup = await make(calls=calls)
    c = s.client

    resp = await c.get("/api/v1/calls", headers=AUTH)
    assert await resp.json() == [{"id": "c1", "state": "answered", "recording": False, "parties": [
        {"extension_or_number": "1001", "leg_id": "l1", "state": "connected"},
        {"extension_or_number": "+14155550102", "leg_id": "l2", "state": "connected"}]}]

    assert (await c.delete("/api/v1/calls/c1", headers=AUTH)).status == 202
    assert calls.hung_up == ["c1"]
    resp = await c.delete("/api/v1/calls/zz", headers=AUTH)
    assert resp.status == 404
    assert (await error_of(resp))["code"] == "not_found"

    body = {"by": "1001", "kind": "blind", "target": "1003"}
    resp = await c.post("/api/v1/calls/c1/transfer", headers=AUTH, json=body)
    assert resp.status == 202
    assert (await resp.json())["transfer_id"] == "t1"
    resp = await c.post("/api/v1/calls/c1/transfer", headers=AUTH,
                        json={**body, "target": "+15550000"})
    assert resp.status == 403
    assert (await error_of(resp))["code"] == "forbidden"
    resp = await c.post("/api/v1/calls/ringing/transfer", headers=AUTH, json=body)
    assert resp.status == 409
    for bad in ({**body, "kind": "teleport"}, {"by": "1001"}, [1, 2]):
        resp = await c.post("/api/v1/calls/c1/transfer", headers=AUTH, json=bad)
        assert resp.status == 400
        assert (await error_of(resp))["code"] == "invalid_request"
    resp = await c.post("/api/v1/calls/c1/transfer", headers=AUTH, data=b"{not json")
    assert resp.status == 400

    assert (await (await c.get("/api/v1/transfers/t9", headers=AUTH)).json())["state"] == \
        "consulting"
    resp = await c.post("/api/v1/transfers/t9/complete", headers=AUTH)
    assert (await resp.json())["state"] == "completed"
    resp = await c.post("/api/v1/transfers/t9/cancel", headers=AUTH)
    assert (await resp.json())["state"] == "cancelled"

    resp = await c.post("/api/v1/calls/c1/recording", headers=AUTH,
                        json={"by": "1001", "action": "start"})
    assert await resp.json() == {"call_id": "c1", "recording": True, "path": "/r/c1.wav"}
    resp = await c.post("/api/v1/calls/c1/recording", headers=AUTH,
                        json={"by": "1001", "action": "pause"})
    assert resp.status == 400

    resp = await c.get("/api/v1/voicemail/1001", headers=AUTH)
    (message,) = await resp.json()
    assert message["duration"] == 4.25
    assert message["url"] == "/api/v1/voicemail/1001/m1.wav"
    resp = await c.get(message["url"], headers=AUTH)
    assert resp.status == 200
    assert await resp.read() == b"RIFF....WAVE"
    assert (await c.get(message["url"])).status == 401
    assert (await c.get("/api/v1/voicemail/1001/m2.wav", headers=AUTH)).status == 404
