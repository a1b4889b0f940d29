"""Binding UDP and TCP on one host:port, with deliberately sized socket buffers."""

from __future__ import annotations

import errno
import logging
import socket

log = logging.getLogger(__name__)


def bind_pair(host: str, port: int, *, buffer_size: int, attempts: int = 20,
              backlog: int = 512) -> tuple[socket.socket, socket.socket]:
    """A non-blocking UDP socket and a listening TCP socket on the same port.

    With ``port`` 0 the kernel picks the UDP port, which may be taken for TCP:
    try again (``attempts`` times) so that both share it (RFC 3261 §18: one
    sent-by for both transports).  Raises ``OSError`` when binding fails.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tries = attempts if port == 0 else 1
    for attempt in range(tries):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            udp.bind((host, port))
            bound_port = int(udp.getsockname()[1])
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((host, bound_port))
                tcp.listen(backlog)
            except OSError as exc:
                tcp.close()
                if exc.errno == errno.EADDRINUSE and attempt + 1 < tries:
                    udp.close()
                    continue
                raise
        except BaseException:
            udp.close()
            raise
        udp.setblocking(False)
        tcp.setblocking(False)
        size_buffers(udp, buffer_size)
        return udp, tcp
    raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {host}")


def size_buffers(sock: socket.socket, size: int) -> tuple[int, int]:
    """Ask for ``size`` bytes of receive and send buffer; log and return what the
    kernel granted (Linux doubles the request and caps it at rmem_max/wmem_max)."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError as exc:
            log.warning("socket buffer %s of %d bytes refused: %s", option, size, exc)
    granted = (sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
               sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    log.info("sip.socket_buffers requested=%d rcvbuf=%d sndbuf=%d", size, *granted)
    return granted


def primary_address(family: int = socket.AF_INET) -> str:
    """The address of the interface that routes outwards (no packet is sent);
    what a wildcard-bound endpoint writes in its Via."""
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9) if family == socket.AF_INET else ("2001:db8::1", 9))
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1" if family == socket.AF_INET else "::1"
    finally:
        probe.close()
