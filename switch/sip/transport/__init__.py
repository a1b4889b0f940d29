"""asyncio transports (UDP, TCP) and the driver of the sans-I/O SIP endpoint."""

from __future__ import annotations

from switch.sip.transport.driver import DEFAULT_TRANSPORT, SipDriver, TransportConfig

__all__ = ["DEFAULT_TRANSPORT", "SipDriver", "TransportConfig"]
