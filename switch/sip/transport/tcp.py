"""SIP over TCP (RFC 3261 §18.3): one asyncio protocol per connection, framed by
``StreamFramer``; bounded buffers, idle tracking, CRLF keep-alive (RFC 5626 §3.5.1)."""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from switch.sip.errors import ParseError
from switch.sip.parser import Limits, StreamFramer
from switch.sip.transaction import Source


class ConnectionOwner(Protocol):
    """The driver, as a TCP connection sees it."""

    def tcp_opened(self, connection: TcpConnection) -> bool:
        """Register; False refuses the connection (over the cap)."""

    def tcp_frame(self, connection: TcpConnection, frame: bytes) -> None: ...

    def tcp_unframeable(self, connection: TcpConnection, error: ParseError) -> None: ...

    def tcp_closed(self, connection: TcpConnection) -> None: ...


class TcpConnection(asyncio.Protocol):
    """One TCP connection, inbound or outbound."""

    def __init__(self, owner: ConnectionOwner, connection_id: int, limits: Limits,
                 max_write_buffer: int, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.id = connection_id
        self.framer = StreamFramer(limits)
        self.max_write_buffer = max_write_buffer
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.source: Source | None = None
        self.remote: tuple[str, int] = ("", 0)
        self.last_activity = loop.time()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop: not a subclass
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.remote = (str(peer[0]), int(peer[1]))
        self.source = Source(transport="tcp", host=self.remote[0], port=self.remote[1],
                             connection_id=self.id, local_host=str(local[0]),
                             local_port=int(local[1]))
        if not self.owner.tcp_opened(self):
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = self.loop.time()
        framer = self.framer
        pings = framer.keepalive_pings
        try:
            frames = framer.feed(data)
        except ParseError as exc:
            self.owner.tcp_unframeable(self, exc)
            self.close()
            return
        if framer.keepalive_pings != pings and self.transport is not None:
            # RFC 5626 §3.5.1: a double-CRLF ping is answered with a single CRLF pong.
            self.transport.write(b"\r\n" * (framer.keepalive_pings - pings))
        for frame in frames:
            if self.closed:
                return
            self.owner.tcp_frame(self, frame)

    def pending_bytes(self) -> bytes:
        """What the framer holds (for a 400 built from an unframeable stream)."""
        return self.framer.pending()

    def send(self, data: bytes) -> bool:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return False
        transport.write(data)
        self.last_activity = self.loop.time()
        if transport.get_write_buffer_size() > self.max_write_buffer:
            # The peer does not read: drop it rather than buffer without bound.
            self.close()
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner.tcp_closed(self)
