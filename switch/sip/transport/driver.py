"""The asyncio driver of one SIP ``Endpoint``: sockets in, sockets out, one timer.

Theory of operation
-------------------
``SipDriver`` owns a UDP socket and a TCP listener on the same host:port, the
TCP connections, and the sans-I/O ``Endpoint``.  Every datagram or TCP frame
goes to ``endpoint.receive(data, source, now=loop.time())``; then the driver
*pumps*: it hands each event to the TU callback ``on_event`` (an exception
there is caught and logged, and a request is answered 500, so one call never
breaks another), sends what ``datagrams_to_send()`` returns, and re-arms its
single ``loop.call_at`` handle to ``endpoint.get_timer()`` (DESIGN.md rule 2)
when ``endpoint.earliest_scheduled`` says a deadline before the armed one was
scheduled (a timer cancelled meanwhile can only make the handle fire early, and
after every firing the driver looks at ``get_timer()`` again).
The TU's own calls (``respond``, ``send_request``, ``send_stateless``) pump too.

Sending over TCP follows §18.2.2: a response goes back on the connection its
request came on; if that connection has gone (or for a request), a connection
to the destination is reused or opened.  A connection that cannot be opened
is reported to the endpoint as a transport error of the transactions waiting
for it.  Idle connections are closed after ``tcp_idle_timeout`` by a sweep
(transport housekeeping, not a protocol timer); their number and their write
buffers are capped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from math import inf
from typing import Any

from switch.sip.endpoint import (
    Endpoint,
    Event,
    RequestReceived,
)
from switch.sip.errors import ParseError, SipError
from switch.sip.message import Message, Request, Response, make_response
from switch.sip.parser import DEFAULT_LIMITS, Limits
from switch.sip.timers import DEFAULT_TIMERS, TimerConfig
from switch.sip.transaction import Destination, Outgoing, Source, new_tag
from switch.sip.transport.sockets import bind_pair, primary_address
from switch.sip.transport.tcp import TcpConnection
from switch.sip.transport.udp import UdpProtocol

log = logging.getLogger(__name__)
_SOURCE_CACHE = 4096      # UDP peers remembered by _datagram_received

EventHandler = Callable[[Event], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    socket_buffer: int = 4 * 1024 * 1024     # SO_RCVBUF / SO_SNDBUF asked for the UDP socket
    tcp_idle_timeout: float = 300.0          # close a connection silent this long
    tcp_max_connections: int = 1024
    tcp_max_write_buffer: int = 1024 * 1024  # a peer that does not read is dropped
    tcp_connect_timeout: float = 5.0
    bind_attempts: int = 20                  # port 0: tries to find a port free for both
    tcp_backlog: int = 512


DEFAULT_TRANSPORT = TransportConfig()


class SipDriver:
    """UDP + TCP transports around one sans-I/O ``Endpoint``."""

    def __init__(self, on_event: EventHandler, *, limits: Limits = DEFAULT_LIMITS,
                 timers: TimerConfig = DEFAULT_TIMERS,
                 config: TransportConfig = DEFAULT_TRANSPORT,
                 advertised_host: str | None = None) -> None:
        self.endpoint = Endpoint(limits=limits, timers=timers)
        self.on_event = on_event
        self._limits = limits
        self._config = config
        self._advertised_host = advertised_host
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._bound: tuple[str, int] | None = None
        self._local: tuple[str, int] = ("", 0)
        # One Source per UDP peer address, reused (a frozen 6-field dataclass built
        # for every datagram otherwise); bounded: cleared when it fills up.
        self._sources: dict[tuple[Any, ...], Source] = {}
        self._connections: dict[int, TcpConnection] = {}
        self._by_remote: dict[tuple[str, int], TcpConnection] = {}
        self._connecting: dict[tuple[str, int], list[Outgoing]] = {}
        self._connect_tasks: set[asyncio.Task[None]] = set()
        self._next_connection = 1
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = inf        # the armed deadline; inf: none
        self._sweeper: asyncio.TimerHandle | None = None
        self._pumping = False

    # --- life cycle --------------------------------------------------------------------

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind UDP and TCP on host:port (0: one port free for both); returns it."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        config = self._config
        udp_sock, tcp_sock = bind_pair(host, port, buffer_size=config.socket_buffer,
                                       attempts=config.bind_attempts,
                                       backlog=config.tcp_backlog)
        try:
            bound_host, bound_port = udp_sock.getsockname()[:2]
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: UdpProtocol(self._datagram_received), sock=udp_sock)
            self._server = await loop.create_server(self._inbound_connection, sock=tcp_sock)
        except BaseException:
            udp_sock.close()
            tcp_sock.close()
            if self._udp is not None:
                self._udp.close()
            raise
        self._bound = (str(bound_host), int(bound_port))
        self._local = self._bound
        self._sources.clear()
        via_host = self._advertised_host or str(bound_host)
        if via_host in ("0.0.0.0", "::", ""):
            via_host = primary_address()
        self.endpoint.set_via_address(via_host, int(bound_port))
        self._schedule_sweep()
        log.info("sip.listening host=%s port=%d via=%s", bound_host, bound_port, via_host)
        return self._bound

    async def stop(self) -> None:
        for handle in (self._timer, self._sweeper):
            if handle is not None:
                handle.cancel()
        self._timer = self._sweeper = None
        self._timer_at = inf
        for task in list(self._connect_tasks):
            task.cancel()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for connection in list(self._connections.values()):
            connection.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._bound = None

    @property
    def bound(self) -> tuple[str, int] | None:
        return self._bound

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # --- the TU's calls ----------------------------------------------------------------

    def respond(self, transaction_id: int, response: Response) -> None:
        self.endpoint.respond(transaction_id, response, self._now())
        self._pump()

    def send_request(self, request: Request, destination: Destination) -> int:
        transaction_id = self.endpoint.send_request(request, destination, self._now())
        self._pump()
        return transaction_id

    def send_stateless(self, message: Message, destination: Destination) -> None:
        self.endpoint.send_stateless(message, destination)
        self._pump()

    # --- incoming ------------------------------------------------------------------------

    def _datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        # addr: (host, port), or (host, port, flowinfo, scope_id) for IPv6.
        source = self._sources.get(addr)
        if source is None:
            if len(self._sources) >= _SOURCE_CACHE:
                self._sources.clear()
            source = self._sources[addr] = Source(
                transport="udp", host=addr[0], port=addr[1],
                local_host=self._local[0], local_port=self._local[1])
        loop = self._loop       # set once started: a datagram implies it
        try:
            self.endpoint.receive(data, source, loop.time() if loop is not None else self._now())
        except Exception:   # a bug must not stop the transport (DESIGN.md rule 5)
            log.exception("sip.receive_failed transport=udp peer=%s:%d", addr[0], addr[1])
        self._pump()

    def _inbound_connection(self) -> TcpConnection:
        return self._new_connection()

    def _new_connection(self) -> TcpConnection:
        assert self._loop is not None
        connection_id = self._next_connection
        self._next_connection += 1
        return TcpConnection(self, connection_id, self._limits,
                             self._config.tcp_max_write_buffer, self._loop)

    def tcp_opened(self, connection: TcpConnection) -> bool:
        if len(self._connections) >= self._config.tcp_max_connections:
            log.warning("sip.tcp_refused peer=%s:%d reason=too_many_connections",
                        *connection.remote)
            return False
        self._connections[connection.id] = connection
        self._by_remote.setdefault(connection.remote, connection)
        return True

    def tcp_frame(self, connection: TcpConnection, frame: bytes) -> None:
        assert connection.source is not None
        try:
            self.endpoint.receive(frame, connection.source, self._now())
        except Exception:
            log.exception("sip.receive_failed transport=tcp peer=%s:%d", *connection.remote)
        self._pump()

    def tcp_unframeable(self, connection: TcpConnection, error: ParseError) -> None:
        assert connection.source is not None
        log.info("sip.tcp_unframeable peer=%s:%d error=%s", *connection.remote, error)
        self.endpoint.receive_unframeable(connection.pending_bytes(), error, connection.source)
        self._pump()      # the 400 is written before the connection is closed

    def tcp_closed(self, connection: TcpConnection) -> None:
        self._connections.pop(connection.id, None)
        if self._by_remote.get(connection.remote) is connection:
            del self._by_remote[connection.remote]

    # --- the pump ------------------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def _pump(self) -> None:
        if self._pumping:
            return      # a TU call made while dispatching: the outer pump finishes
        self._pumping = True
        endpoint = self.endpoint
        # next_event() and datagrams_to_send(), inlined: a call each per pump.
        events = endpoint._events
        try:
            while events:
                event = events.popleft()
                try:
                    self.on_event(event)
                except Exception:
                    self._tu_failed(event)
            out = endpoint._out
            if out:
                endpoint._out = []
                self._send(out)
        finally:
            self._pumping = False
        # Deadlines only move later unless a new one was scheduled before the armed
        # timer (a cancelled one at most wakes us early, handle_timer skips it).
        if endpoint.earliest_scheduled < self._timer_at:
            self._rearm()

    def _tu_failed(self, event: Event) -> None:
        log.exception("sip.tu_failed event=%s", type(event).__name__)
        if isinstance(event, RequestReceived):
            try:
                self.endpoint.respond(event.transaction_id,
                                      make_response(event.request, 500, to_tag=new_tag()),
                                      self._now())
            except SipError:
                pass    # it had already answered; the transaction keeps its answer

    def _rearm(self) -> None:
        deadline = self.endpoint.get_timer()
        at = inf if deadline is None else deadline
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        if deadline is None or self._loop is None:
            self._timer = None
        else:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        deadline = self._timer_at
        self._timer = None
        self._timer_at = inf
        now = self._now()
        if now < deadline != inf:
            now = deadline      # call_at may run up to one clock tick early
        try:
            self.endpoint.handle_timer(now)
        except Exception:
            log.exception("sip.timer_failed")
        self._pump()
        self._rearm()           # the heap's top has moved: always look again

    # --- outgoing ------------------------------------------------------------------------

    def _send(self, out: list[Outgoing]) -> None:
        udp = self._udp
        for item in out:
            destination = item.destination
            if destination.transport == "udp":
                if udp is not None:
                    udp.sendto(item.data, (destination.host, destination.port))
            else:
                self._send_tcp(item)

    def _send_tcp(self, item: Outgoing) -> None:
        destination = item.destination
        connection = None
        if destination.connection_id is not None:
            connection = self._connections.get(destination.connection_id)
        if connection is None or connection.closed:
            connection = self._by_remote.get((destination.host, destination.port))
        if connection is not None and connection.send(item.data):
            return
        # §18.2.2: the connection is gone (or there never was one): open one.
        key = (destination.host, destination.port)
        waiting = self._connecting.get(key)
        if waiting is None:
            waiting = self._connecting[key] = []
            assert self._loop is not None
            task = self._loop.create_task(self._connect(key))
            self._connect_tasks.add(task)
            task.add_done_callback(self._connect_tasks.discard)
        waiting.append(item)

    async def _connect(self, key: tuple[str, int]) -> None:
        assert self._loop is not None
        connection: TcpConnection | None = None
        try:
            _, protocol = await asyncio.wait_for(
                self._loop.create_connection(self._new_connection, key[0], key[1]),
                self._config.tcp_connect_timeout)
            connection = protocol
        except (TimeoutError, OSError) as exc:
            log.info("sip.tcp_connect_failed peer=%s:%d error=%s", key[0], key[1], exc)
        waiting = self._connecting.pop(key, [])
        now = self._now()
        for item in waiting:
            if connection is not None and not connection.closed and connection.send(item.data):
                continue
            if item.transaction_id is not None:
                self.endpoint.handle_transport_error(item.transaction_id, now)
        self._pump()

    # --- housekeeping ----------------------------------------------------------------------

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        period = max(0.05, min(30.0, self._config.tcp_idle_timeout / 4))
        self._sweeper = self._loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        limit = self._now() - self._config.tcp_idle_timeout
        for connection in list(self._connections.values()):
            if connection.last_activity < limit:
                log.debug("sip.tcp_idle_close peer=%s:%d", *connection.remote)
                connection.close()
        self._schedule_sweep()
