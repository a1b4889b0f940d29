"""HTTP edge: /healthz, /metrics, the /api/v1 control API and its event WebSocket.

- ``/healthz`` and ``/metrics`` are open (probes and Prometheus scrape them).
- Everything under ``/api/v1`` needs ``Authorization: Bearer <token>``
  (compared in constant time).  The WebSocket ``/api/v1/events`` also accepts
  ``?token=`` because browsers cannot set headers on a WebSocket.  Auth is
  checked before routing, so an unknown ``/api/v1`` path without a token is
  401, not 404 (the API's shape is not disclosed to strangers).
- Every error, anywhere, is JSON ``{"error": {"code": ..., "message": ...}}``.

The API reaches the engine only through :mod:`switch.model` protocols.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from aiohttp import WSCloseCode, WSMsgType, web
from structlog.typing import FilteringBoundLogger

from switch import __version__
from switch.events import EventBus, Subscription
from switch.logs import get_logger
from switch.metrics import CONTENT_TYPE, Metrics
from switch.model import (
    CallControl,
    CallView,
    ControlError,
    RegistrationSource,
    TransferView,
    VoicemailView,
)

__all__ = ["API_PREFIX", "HttpServer", "create_app"]

API_PREFIX: Final = "/api/v1"
EVENTS_PATH: Final = API_PREFIX + "/events"
TRANSFER_KINDS: Final = ("blind", "warm", "voicemail")
RECORDING_ACTIONS: Final = ("start", "stop")
# A WebSocket client that does not take a frame for this long is dropped;
# the bus bound covers slow readers, this covers a stalled TCP window.
WS_SEND_TIMEOUT: Final = 10.0

StatusProvider = Callable[[], Mapping[str, object]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True, kw_only=True)
class _State:
    token: str | None
    status: StatusProvider
    clock: Callable[[], float]
    stopping: bool = False


_BUS: Final = web.AppKey[EventBus]("bus")
_METRICS: Final = web.AppKey[Metrics]("metrics")
_REGISTRATIONS: Final = web.AppKey[RegistrationSource]("registrations")
_CALLS: Final = web.AppKey[CallControl]("calls")
_STATE: Final = web.AppKey[_State]("state")
_LOG: Final = web.AppKey[FilteringBoundLogger]("log")


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}},
                             status=status, headers=headers)


_STATUS_CODES: Final = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 501: "not_implemented", 503: "unavailable",
}


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if request.path == EVENTS_PATH:
        return request.query.get("token")
    return None


@web.middleware
async def _edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth for /api/v1, JSON errors everywhere, request metrics."""
    app = request.app
    response: web.StreamResponse
    try:
        if request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/"):
            problem = _check_token(app[_STATE].token, _bearer(request))
            if problem is not None:
                raise _Unauthorized(problem)
        response = await handler(request)
    except _Unauthorized as exc:
        response = error_response(401, "unauthorized", str(exc),
                                  {"WWW-Authenticate": 'Bearer realm="switch"'})
    except ControlError as exc:
        response = error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "error")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = error_response(exc.status, code, exc.reason, headers)
    except Exception:  # noqa: BLE001 - the API's last line of defence, logged below
        # One failing request must not take the API down; the trace goes to
        # the log, the client gets a stable JSON error.
        app[_LOG].exception("http.unhandled_error", path=request.path, method=request.method)
        response = error_response(500, "internal", "internal error")
    app[_METRICS].http_requests.labels(route=_route_name(request),
                                       status=str(response.status)).inc()
    return response


class _Unauthorized(Exception):
    pass


def _check_token(expected: str | None, given: str | None) -> str | None:
    """None when authorised, else the reason (for the 401 message)."""
    if expected is None:
        return "the API is disabled: no [http] token is configured"
    if given is None:
        return "missing bearer token (Authorization: Bearer <token>)"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "invalid bearer token"
    return None


# --------------------------------------------------------------------------- open routes


async def _healthz(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    stopping = state.stopping
    body: dict[str, object] = {"status": "stopping" if stopping else "ok",
                               "version": __version__}
    body.update(state.status())
    # 503 while stopping: load balancers take the engine out before it goes.
    return web.json_response(body, status=503 if stopping else 200)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_METRICS].render(),
                        headers={"Content-Type": CONTENT_TYPE})


# --------------------------------------------------------------------------- /api/v1


async def _registrations(request: web.Request) -> web.Response:
    now = request.app[_STATE].clock()
    views = sorted(request.app[_REGISTRATIONS].list_registrations(),
                   key=lambda v: (v.extension, v.contact))
    return web.json_response([
        {"extension": v.extension, "contact": v.contact,
         "expires": max(0, int(v.expires_at - now)), "user_agent": v.user_agent,
         "source": v.source}
        for v in views
    ])


def _calls(request: web.Request) -> CallControl:
    calls = request.app.get(_CALLS)
    if calls is None:
        raise web.HTTPNotImplemented(reason="call control is not available in this build")
    return calls


def _call_json(call: CallView) -> dict[str, object]:
    return {
        "id": call.id, "state": call.state, "recording": call.recording,
        "parties": [{"extension_or_number": p.extension_or_number, "leg_id": p.leg_id,
                     "state": p.state} for p in call.parties],
    }


def _transfer_json(t: TransferView) -> dict[str, object]:
    return {"transfer_id": t.id, "call_id": t.call_id, "kind": t.kind, "state": t.state,
            "by": t.by, "target": t.target}


async def _json_body(request: web.Request, fields: Sequence[str]) -> dict[str, str]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(reason="body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="body must be a JSON object")
    result: dict[str, str] = {}
    for name in fields:
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise web.HTTPBadRequest(reason=f'"{name}" must be a non-empty string')
        result[name] = value
    return result


async def _list_calls(request: web.Request) -> web.Response:
    return web.json_response([_call_json(c) for c in _calls(request).list_calls()])


async def _hang_up(request: web.Request) -> web.Response:
    call_id = request.match_info["id"]
    await _calls(request).hang_up(call_id)
    return web.json_response({"call_id": call_id}, status=202)


async def _transfer(request: web.Request) -> web.Response:
    calls = _calls(request)
    body = await _json_body(request, ("by", "kind", "target"))
    if body["kind"] not in TRANSFER_KINDS:
        raise web.HTTPBadRequest(reason='"kind" must be "blind", "warm" or "voicemail"')
    view = await calls.transfer(request.match_info["id"], by=body["by"], kind=body["kind"],
                                target=body["target"])
    return web.json_response(_transfer_json(view), status=202)


async def _get_transfer(request: web.Request) -> web.Response:
    return web.json_response(_transfer_json(_calls(request).get_transfer(request.match_info["id"])))


async def _complete_transfer(request: web.Request) -> web.Response:
    view = await _calls(request).complete_transfer(request.match_info["id"])
    return web.json_response(_transfer_json(view))


async def _cancel_transfer(request: web.Request) -> web.Response:
    view = await _calls(request).cancel_transfer(request.match_info["id"])
    return web.json_response(_transfer_json(view))


async def _recording(request: web.Request) -> web.Response:
    calls = _calls(request)
    body = await _json_body(request, ("by", "action"))
    if body["action"] not in RECORDING_ACTIONS:
        raise web.HTTPBadRequest(reason='"action" must be "start" or "stop"')
    view = await calls.set_recording(request.match_info["id"], by=body["by"],
                                     action=body["action"])
    return web.json_response({"call_id": view.call_id, "recording": view.recording,
                              "path": str(view.path) if view.path is not None else None})


def _voicemail_json(extension: str, m: VoicemailView) -> dict[str, object]:
    return {
        "id": m.id, "caller": m.caller, "duration": round(m.duration, 3),
        "created_at": datetime.fromtimestamp(m.created_at, UTC).isoformat().replace(
            "+00:00", "Z"),
        "url": f"{API_PREFIX}/voicemail/{extension}/{m.id}.wav",
    }


async def _list_voicemail(request: web.Request) -> web.Response:
    extension = request.match_info["extension"]
    messages = _calls(request).list_voicemail(extension)
    return web.json_response([_voicemail_json(extension, m) for m in messages])


async def _download_voicemail(request: web.Request) -> web.StreamResponse:
    extension, message_id = request.match_info["extension"], request.match_info["id"]
    for message in _calls(request).list_voicemail(extension):
        if message.id == message_id:
            return web.FileResponse(message.path, headers={"Content-Type": "audio/wav"})
    raise web.HTTPNotFound(reason=f"no voicemail message {message_id!r} for {extension}")


async def _events(request: web.Request) -> web.WebSocketResponse:
    """One JSON event per text frame; ``?types=a,b`` filters by type."""
    types_param = request.query.get("types")
    types = [t for t in types_param.split(",") if t] if types_param else None
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    bus = request.app[_BUS]
    log = request.app[_LOG]
    subscription = bus.subscribe(types=types, name=f"ws:{request.remote}")
    log.info("events.client_connected", remote=request.remote)
    writer = asyncio.create_task(_pump(ws, subscription))
    try:
        # Reading keeps ping/pong and the close handshake going.
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        subscription.close()
        writer.cancel()
        # gather(return_exceptions) collects the writer's CancelledError but
        # still propagates a cancellation of this handler itself.
        await asyncio.gather(writer, return_exceptions=True)
        log.info("events.client_disconnected", remote=request.remote,
                 dropped=subscription.dropped)
    return ws


async def _pump(ws: web.WebSocketResponse, subscription: Subscription) -> None:
    async for event in subscription:
        try:
            await asyncio.wait_for(ws.send_str(event.to_json()), WS_SEND_TIMEOUT)
        except (TimeoutError, ConnectionError):
            subscription.close()
            break
    if subscription.dropped:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"event consumer too slow")
    else:
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"event stream ended")


# --------------------------------------------------------------------------- app


def create_app(
    *,
    token: str | None,
    bus: EventBus,
    metrics: Metrics,
    registrations: RegistrationSource,
    calls: CallControl | None = None,
    status: StatusProvider = dict,
    clock: Callable[[], float] = time.time,
    log: FilteringBoundLogger | None = None,
) -> web.Application:
    """The aiohttp application.  ``status()`` adds fields to /healthz (e.g. bound addresses)."""
    app = web.Application(middlewares=[_edge_middleware], client_max_size=64 * 1024)
    app[_BUS] = bus
    app[_METRICS] = metrics
    app[_REGISTRATIONS] = registrations
    if calls is not None:
        app[_CALLS] = calls
    app[_STATE] = _State(token=token, status=status, clock=clock)
    app[_LOG] = log if log is not None else get_logger("switch.http")
    r = app.router
    r.add_get("/healthz", _healthz)
    r.add_get("/metrics", _metrics)
    r.add_get(API_PREFIX + "/registrations", _registrations)
    r.add_get(API_PREFIX + "/calls", _list_calls)
    r.add_delete(API_PREFIX + "/calls/{id}", _hang_up)
    r.add_post(API_PREFIX + "/calls/{id}/transfer", _transfer)
    r.add_post(API_PREFIX + "/calls/{id}/recording", _recording)
    r.add_get(API_PREFIX + "/transfers/{id}", _get_transfer)
    r.add_post(API_PREFIX + "/transfers/{id}/complete", _complete_transfer)
    r.add_post(API_PREFIX + "/transfers/{id}/cancel", _cancel_transfer)
    r.add_get(API_PREFIX + "/voicemail/{extension}", _list_voicemail)
    r.add_get(API_PREFIX + "/voicemail/{extension}/{id}.wav", _download_voicemail)
    r.add_get(EVENTS_PATH, _events)
    return app


def mark_stopping(app: web.Application) -> None:
    """/healthz answers 503 from now on."""
    app[_STATE].stopping = True


class HttpServer:
    """Runs the app on host:port; port 0 picks a free port (see ``address``)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and serve; raises OSError (e.g. EADDRINUSE) if it cannot bind."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0,
                               handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        sockname = runner.addresses[0]
        self.address = (str(sockname[0]), int(sockname[1]))
        return self.address

    async def stop(self) -> None:
        mark_stopping(self.app)
        bus = self.app[_BUS]
        bus.close()  # ends WebSocket streams so their handlers return
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
