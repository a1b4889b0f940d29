"""SIP over UDP (RFC 3261 §18): a thin asyncio datagram protocol."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

log = logging.getLogger(__name__)


class UdpProtocol(asyncio.DatagramProtocol):
    """Hands every datagram to ``on_datagram(data, (host, port))``."""

    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: selector and uvloop transports do not all
        # inherit from asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # IPv6 addresses come as (host, port, flowinfo, scope_id): keep host and port.
        self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: UDP cannot tell which message failed.
        log.debug("sip.udp_error %s", exc)
