"""The SIP service: transports, endpoint, UAS core, registrar and their persistence.

This is the I/O glue between the sans-I/O pieces (``switch.sip.*``) and the
engine's edges.  Each request the endpoint passes up goes through the UAS
core's RFC 3261 §8.2 checks and on to its usage; REGISTER to the registrar,
whose binding changes go to the write-behind store writer, the event bus
(``registration.added`` / ``registration.removed``) and the
``switch_registrations`` gauge.  Binding expiry runs on one timer handle at
the registrar's next expiry.

Clocks: the sans-I/O core gets ``loop.time()`` (monotonic) as ``now``;
wall-clock time (``time.time()``) is read here only for what users see
(Date headers, stored expiry instants).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from switch.config import Config
from switch.events import EventBus
from switch.metrics import Metrics
from switch.model import RegistrationView
from switch.sip.auth import AuthOutcome, DigestAuthenticator, StaticCredentials, UserCredentials
from switch.sip.core import CoreConfig, UasCore
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
from switch.sip.location import Binding, LocationService
from switch.sip.location import Source as BindingSource
from switch.sip.message import Request, Response
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
from switch.sip.transaction import Source, new_tag
from switch.sip.transport.driver import SipDriver
from switch.store.sqlite import SqliteStore
from switch.store.writer import BindingWriter

# Methods advertised in Allow today; INVITE and the in-dialog methods join
# when call control lands (issue 3).
ALLOWED_METHODS = ("OPTIONS", "REGISTER")
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


class SwitchSipService:
    """Implements ``switch.app.SipService``."""

    def __init__(self, config: Config, store: SqliteStore, bus: EventBus, metrics: Metrics,
                 log: FilteringBoundLogger) -> None:
        sip = config.sip
        self._config = config
        self._bus = bus
        self._metrics = metrics
        self._log = log
        self._driver = SipDriver(
            self._on_event,
            limits=Limits(max_message_size=sip.max_message_size, max_headers=sip.max_headers),
            timers=TimerConfig(t1=sip.t1_seconds, t2=sip.t2_seconds, t4=sip.t4_seconds),
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
        self._core = UasCore(CoreConfig(server_name=sip.user_agent, allowed=ALLOWED_METHODS),
                             new_tag)
        self._core.register_usage("REGISTER", self._register)
        self._writer = BindingWriter(store)
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The endpoint counts messages in plain ints on the hot path; Prometheus
        # reads them when scraped.
        metrics.use_sip_message_source(self._driver.endpoint.stats.samples)

    # --- life cycle ----------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        self._loop = asyncio.get_running_loop()
        await self._writer.start()
        restored = self._registrar.restore(
            await self._writer.load_bindings(time.time()), self._loop.time(), time.time())
        self._metrics.registrations.set(self._registrar.binding_count)
        bound = await self._driver.start(self._config.sip.host, self._config.sip.port)
        self._log.info("registrations.restored", count=restored)
        self._schedule_expiry()
        return bound

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        await self._driver.stop()
        self.sync_metrics()
        # Drain every pending binding write: shutdown loses nothing.
        await self._writer.close()

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

    def sync_metrics(self) -> None:
        """Refresh gauges that are read rather than counted (called on scrape)."""
        self._metrics.sip_transactions_active.set(self._driver.endpoint.transaction_count)

    # --- events from the endpoint ------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            response = self._core.handle(event.request, event.source, self._now(), time.time())
            if response is not None:
                self._driver.respond(event.transaction_id, response)
        elif isinstance(event, MessageRejected):
            self._metrics.parse_error(event.source.transport)
            self._log.debug("sip.rejected", reason=event.reason, status=event.status,
                            source=f"{event.source.host}:{event.source.port}")
        elif isinstance(event, (AckReceived, CancelReceived, ResponseReceived,
                                TransactionTimedOut, TransportErrorOccurred)):
            # No dialogs or client transactions yet (call control is issue 3).
            self._log.debug("sip.unhandled_event", kind=type(event).__name__)

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
