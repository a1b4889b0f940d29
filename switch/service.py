"""The SIP service: transports, endpoint, UAS core, registrar, call control, media.

This is the I/O glue between the sans-I/O pieces (``switch.sip.*``) and the
engine's edges.  Each request the endpoint passes up goes through the UAS
core's RFC 3261 §8.2 checks and on to its usage; REGISTER to the registrar,
whose binding changes go to the write-behind store writer, the event bus
(``registration.added`` / ``registration.removed``) and the
``switch_registrations`` gauge.  Binding expiry runs on one timer handle at
the registrar's next expiry.

INVITEs outside a dialog, requests inside one (a To tag), ACKs, CANCELs and
everything about client transactions go to call control
(``switch.call.CallController``), which owns the calls; its records go to a
second write-behind writer.  The media relay (``switch.media.MediaEngine``,
docs/MEDIA-API.md) is created and started here; without the media package
the engine runs signalling-only (ports allocated, nothing relayed).

Shutdown order (``stop``): new INVITEs get 503, every call is ended with BYE
(or CANCEL / a final response), the 200s are awaited up to
``[calls] shutdown_grace``, then the transports, the media relay and the
writers stop, the writers after draining.

Clocks: the sans-I/O core gets ``loop.time()`` (monotonic) as ``now``;
wall-clock time (``time.time()``) is read here only for what users see
(Date headers, stored expiry instants).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

from switch.call.controller import CallController
from switch.call.dtmf import DtmfWiring
from switch.call.media import EngineMediaPort, MediaPort, SignallingOnlyMedia
from switch.config import Config
from switch.events import EventBus
from switch.metrics import Metrics
from switch.model import RegistrationView
from switch.sip.auth import AuthOutcome, DigestAuthenticator, StaticCredentials, UserCredentials
from switch.sip.core import KNOWN_METHODS, CoreConfig, UasCore
from switch.sip.endpoint import (
    AckReceived,
    CancelReceived,
    Event,
    MessageRejected,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    TransportErrorOccurred,
)
from switch.sip.headers import tag_of
from switch.sip.location import Binding, LocationService
from switch.sip.location import Source as BindingSource
from switch.sip.message import Message, Request, Response, make_response
from switch.sip.parser import Limits
from switch.sip.registrar import (
    BindingAdded,
    BindingEvent,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
    Registrar,
)
from switch.sip.timers import TimerConfig
from switch.sip.transaction import Destination, Source, new_tag
from switch.sip.transport.driver import SipDriver
from switch.store.calls import CallRecordWriter
from switch.store.sqlite import SqliteStore
from switch.store.writer import BindingWriter

# Methods advertised in Allow (RFC 3261 §20.5).
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "UPDATE", "INFO", "OPTIONS", "REGISTER")
SECRET_FILE = "nonce.secret"


def load_secret(data_dir: Path) -> bytes:
    """The digest nonce HMAC key, kept in the data directory so that nonces
    handed out before a restart stay valid after it (phones re-register on
    their own schedule and should not all be re-challenged as forged)."""
    path = data_dir / SECRET_FILE
    try:
        secret = path.read_bytes()
        if len(secret) >= 32:
            return secret
    except FileNotFoundError:
        pass
    secret = os.urandom(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return secret


class _DriverPort:
    """The driver as call control's ``SipPort``: the driver's own bound methods (no
    wrapper call per message), plus its address."""

    def __init__(self, driver: SipDriver) -> None:
        self._driver = driver
        self.respond: Callable[[int, Response], None] = driver.respond
        self.send_request: Callable[[Request, Destination], int] = driver.send_request
        self.send_stateless: Callable[[Message, Destination], None] = driver.send_stateless

    def local_address(self) -> tuple[str, int]:
        endpoint = self._driver.endpoint
        return endpoint.via_host, endpoint.via_port


def _call_at_running_loop(when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_at(when, callback)


class _LoopTimers:
    """Call control's ``Timers``: the loop's own ``call_at`` once the service has
    started (``use``), the running loop's before (no wrapper call per timer)."""

    def __init__(self) -> None:
        self.call_at: Callable[[float, Callable[[], None]], asyncio.TimerHandle] = \
            _call_at_running_loop

    def use(self, loop: asyncio.AbstractEventLoop) -> None:
        self.call_at = loop.call_at


class SwitchSipService:
    """Implements ``switch.app.SipService``.

    ``media`` replaces the media relay (tests pass a fake); by default the
    relay of ``switch.media`` is built from ``[media]`` and ``[calls]``.
    """

    def __init__(self, config: Config, store: SqliteStore, bus: EventBus, metrics: Metrics,
                 log: FilteringBoundLogger, *, media: MediaPort | None = None) -> None:
        sip = config.sip
        self._config = config
        self._bus = bus
        self._metrics = metrics
        self._log = log
        # The INVITE server transaction waits for the ring timeout, and the client
        # one rings as long: the guards must outlast it (Timer C, §16.6 item 11).
        ringing = float(config.calls.ring_timeout + 30)
        self._driver = SipDriver(
            self._on_event,
            limits=Limits(max_message_size=sip.max_message_size, max_headers=sip.max_headers),
            timers=TimerConfig(t1=sip.t1_seconds, t2=sip.t2_seconds, t4=sip.t4_seconds,
                               timer_c=max(180.0, ringing),
                               tu_timeout=max(64 * sip.t1_seconds, ringing)),
            advertised_host=None if sip.host in ("0.0.0.0", "::") else sip.host,
        )
        credentials = StaticCredentials(
            UserCredentials(username=user.extension, extension=user.extension,
                            password=user.password)
            for user in config.users)
        self._auth = DigestAuthenticator(
            sip.realm, secret=load_secret(config.data_dir), credentials=credentials,
            algorithms=sip.auth_algorithms, nonce_lifetime=sip.nonce_lifetime,
            failure_limit=sip.auth_failure_limit, failure_window=sip.auth_failure_window,
            block_seconds=sip.auth_block_seconds)
        self._location = LocationService()
        self._registrar = Registrar(
            self._auth, credentials, self._location, min_expires=sip.min_expires,
            max_expires=sip.max_expires, default_expires=sip.default_expires)
        supported = ("path", "timer") if config.calls.session_timer else ("path",)
        self._core = UasCore(CoreConfig(server_name=sip.user_agent, allowed=ALLOWED_METHODS,
                                        supported=supported), new_tag)
        self._core.register_usage("REGISTER", self._register)
        self._writer = BindingWriter(store)
        self._records = CallRecordWriter(store)
        self._engine: Any = None
        if media is None:
            media = self._build_media(config, metrics)
        self._media = media
        self._timers = _LoopTimers()
        self._calls = CallController(
            config, sip=_DriverPort(self._driver), media=media, timers=self._timers,
            clock=self._now, authenticator=self._auth, contacts=self._registrar.lookup,
            bus=bus, metrics=metrics, log=log, records=self._records)
        # DTMF on every anchored leg (switch/call/dtmf.py): taps the relay, takes INFO.
        self._dtmf = DtmfWiring(config.features, engine=self._engine, bus=bus, metrics=metrics,
                                log=log, clock=self._now)
        self._dtmf.attach(self._calls)
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The endpoint counts messages in plain ints on the hot path; Prometheus
        # reads them when scraped.
        metrics.use_sip_message_source(self._driver.endpoint.stats.samples)
        endpoint = self._driver.endpoint
        metrics.sip_transactions_active.set_function(lambda: endpoint.transaction_count)

    # --- life cycle ----------------------------------------------------------------

    def _build_media(self, config: Config, metrics: Metrics) -> MediaPort:
        media = config.media
        try:
            module = importlib.import_module("switch.media")
        except ImportError:
            self._log.warning("media.unavailable", hint="signalling only: RTP is not relayed")
            return SignallingOnlyMedia(media.host, media.rtp_port_min, media.rtp_port_max)
        self._engine = module.MediaEngine(
            host=media.host, port_min=media.rtp_port_min, port_max=media.rtp_port_max,
            inactivity_timeout=float(config.calls.media_timeout), on_event=self._on_media_event,
            metrics=metrics)
        return EngineMediaPort(self._engine)

    @property
    def calls(self) -> CallController:
        """Call control (what ``/api/v1/calls`` drives)."""
        return self._calls

    async def start(self) -> tuple[str, int]:
        self._loop = asyncio.get_running_loop()
        self._timers.use(self._loop)
        self._calls.use_clock(self._loop.time)
        await self._writer.start()
        await self._records.start()
        if self._engine is not None:
            await self._engine.start()
        restored = self._registrar.restore(
            await self._writer.load_bindings(time.time()), self._loop.time(), time.time())
        self._metrics.registrations.set(self._registrar.binding_count)
        bound = await self._driver.start(self._config.sip.host, self._config.sip.port)
        self._log.info("registrations.restored", count=restored)
        self._schedule_expiry()
        return bound

    async def stop(self) -> None:
        if self._loop is not None and self._driver.bound is not None:
            # Stop taking calls (503), BYE every call, wait briefly for the 200s.
            try:
                await self._calls.shutdown(float(self._config.calls.shutdown_grace))
            except Exception:   # noqa: BLE001 - shutdown goes on
                self._log.exception("switch.stop_failed", component="calls")
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        await self._driver.stop()
        if self._engine is not None:
            try:
                await self._engine.stop()
            except Exception:   # noqa: BLE001 - shutdown goes on
                self._log.exception("switch.stop_failed", component="media")
        # Drain every pending write: shutdown loses nothing.
        await self._writer.close()
        await self._records.close(timeout=2.0)

    @property
    def driver(self) -> SipDriver:
        return self._driver

    def list_registrations(self) -> Sequence[RegistrationView]:
        now = self._now()
        return [
            RegistrationView(extension=b.aor, contact=b.contact, expires_at=b.expires_at_wall,
                             user_agent=b.user_agent or "", source=str(b.source))
            for b in self._registrar.all_bindings(now)
        ]

    def lookup(self, extension: str) -> list[Binding]:
        """The live contacts of an extension (for call routing)."""
        return self._registrar.lookup(extension, self._now())

    # --- events from the endpoint ------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _on_event(self, event: Event) -> None:
        # Dispatched on the exact type (the endpoint's events are final classes), by
        # frequency: ~7 events a call, an isinstance chain cost 12 calls.
        if type(event) is ResponseReceived:
            self._calls.receive_response(event.transaction_id, event.response)
        elif type(event) is RequestReceived:
            self._on_request(event)
        elif type(event) is AckReceived:
            self._calls.receive_ack(event.request)
        elif type(event) is CancelReceived:
            self._calls.receive_cancel(event.transaction_id, event.request)
        elif type(event) is TransactionTimedOut:
            self._calls.transaction_timed_out(event.transaction_id, event.method, event.timer)
        elif type(event) is TransportErrorOccurred:
            self._calls.transport_error(event.transaction_id, event.method)
        elif type(event) is MessageRejected:
            self._metrics.parse_error(event.source.transport)
            self._log.debug("sip.rejected", reason=event.reason, status=event.status,
                            source=f"{event.source.host}:{event.source.port}")

    def _on_request(self, event: RequestReceived) -> None:
        request, txn = event.request, event.transaction_id
        method = request.method
        if method != "REGISTER" and method in KNOWN_METHODS \
                and tag_of(request.headers.get("to") or ""):
            # §12.2.2: a request inside a dialog (a To tag) belongs to a call leg.
            if self._calls.receive_in_dialog(txn, request, event.source):
                return
            if method != "OPTIONS":
                self._driver.respond(txn, make_response(request, 481))
                return
        if method == "INVITE":
            refusal = self._core.check(request)
            if refusal is not None:
                self._driver.respond(txn, refusal)
            else:
                self._calls.receive_invite(txn, request, event.source)
            return
        answer = self._core.handle(request, event.source, self._now(), time.time())
        if answer is not None:
            self._driver.respond(txn, answer)

    def _on_media_event(self, event: object) -> None:
        # MediaTimedOut(leg_id) (docs/MEDIA-API.md); other media events are informational.
        if type(event).__name__ == "MediaTimedOut":
            leg_id = getattr(event, "leg_id", None)
            if isinstance(leg_id, str):
                self._calls.media_timed_out(leg_id)

    def _register(self, request: Request, source: object, now: float, wall: float) -> Response:
        assert isinstance(source, Source)
        result = self._registrar.handle(
            request, BindingSource(transport=source.transport, host=source.host,
                                   port=source.port), now, wall)
        auth = result.auth
        if auth is not None and auth.outcome in (AuthOutcome.FAILED, AuthOutcome.BLOCKED):
            self._metrics.auth_failure(auth.outcome.name.lower())
            # Which of "unknown user" / "wrong password" stays at debug (no oracle in logs).
            self._log.info("auth.failed", outcome=auth.outcome.name.lower(),
                           source=f"{source.host}:{source.port}")
            self._log.debug("auth.failed.detail", username=auth.username, detail=auth.detail)
        if result.events:
            self._apply(result.events)
        return result.response

    def _apply(self, events: Sequence[BindingEvent]) -> None:
        self._writer.apply(events)
        for event in events:
            binding = event.binding
            if isinstance(event, BindingAdded):
                self._bus.publish("registration.added", extension=binding.aor,
                                  contact=binding.contact, expires=binding.expires,
                                  user_agent=binding.user_agent or "",
                                  source=str(binding.source))
                self._log.info("registration.added", extension=binding.aor,
                               contact=binding.contact, expires=binding.expires)
            elif isinstance(event, (BindingRemoved, BindingExpired)):
                reason = event.reason if isinstance(event, BindingRemoved) else "expired"
                self._bus.publish("registration.removed", extension=binding.aor,
                                  contact=binding.contact, reason=reason)
                self._log.info("registration.removed", extension=binding.aor,
                               contact=binding.contact, reason=reason)
            elif isinstance(event, BindingRefreshed):
                pass
        self._metrics.registrations.set(self._registrar.binding_count)
        self._schedule_expiry()

    # --- binding expiry: one timer handle at the next expiry ---------------------------

    def _schedule_expiry(self) -> None:
        loop = self._loop
        if loop is None:
            return
        at = self._registrar.next_expiry()
        if at == self._expiry_at and self._expiry is not None:
            return
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._expiry_at = at
        if at is not None:
            self._expiry = loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self._expiry_at = None
        expired = self._registrar.expire(self._now())
        if expired:
            self._apply(expired)
        else:
            self._schedule_expiry()
