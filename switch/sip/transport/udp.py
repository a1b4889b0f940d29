"""SIP over UDP (RFC 3261 §18): a thin asyncio datagram protocol."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

log = logging.getLogger(__name__)


class UdpProtocol(asyncio.DatagramProtocol):
    """Hands every datagram to ``on_datagram(data, addr)``: ``addr`` is (host,
    port), or (host, port, flowinfo, scope_id) for IPv6."""

    def __init__(self, on_datagram: Callable[[bytes, tuple[Any, ...]], None]) -> None:
        # The callback is this protocol's datagram_received itself (asyncio looks
        # it up on the instance): no call of ours in between, once per datagram.
        self.datagram_received = on_datagram   # type: ignore[method-assign,assignment]
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: selector and uvloop transports do not all
        # inherit from asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: UDP cannot tell which message failed.
        log.debug("sip.udp_error %s", exc)
