"""A tiny stateless UDP proxy that Record-Routes, for route-set tests (RFC 3261 §16).

It stands between phones and switch, with two sockets on 127.0.0.1:

* ``listen`` (``port``): what phones send to, the address in its Via and in its
  ``Record-Route: <sip:127.0.0.1:port;lr>``;
* ``out``: what it forwards phones' requests to switch from.

So switch sees the dialog's requests coming from ``out`` while the route set
names ``listen``: an in-dialog request switch sends must follow the route set
(§12.2.1.1, §8.1.2) and arrive on ``listen``; one sent back to the source
address arrives on ``out``.  Every datagram received is logged with the socket
it came in on.  Forwarding: a request with a Route naming the proxy has it
removed; from switch it goes to its Request-URI, from a phone to switch; the
proxy's Via goes on top (branch derived from the one below, §16.11); responses
lose the top Via and go to the next Via's sent-by.  No transaction state,
no retransmission of its own (the ends retransmit).
"""

from __future__ import annotations

import hashlib
import re
import selectors
import socket
import threading
from dataclasses import dataclass

from .harness import LOOPBACK


@dataclass(frozen=True)
class Seen:
    socket: str           # "listen" | "out"
    source: tuple[str, int]
    first_line: str
    call_id: str

    @property
    def method(self) -> str:
        return "" if self.first_line.startswith("SIP/2.0") else self.first_line.split(" ", 1)[0]


_HOSTPORT = re.compile(r"^(?:sips?:)?(?:[^@;>]*@)?([^:;>]+)(?::(\d+))?")


def _host_port(uri: str) -> tuple[str, int]:
    match = _HOSTPORT.match(uri.strip().lstrip("<"))
    assert match, uri
    return match.group(1), int(match.group(2) or 5060)


class RecordRouteProxy:
    def __init__(self, switch: tuple[str, int]) -> None:
        self.switch = switch
        self.listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listen.bind((LOOPBACK, 0))
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.out.bind((LOOPBACK, 0))
        self.port = self.listen.getsockname()[1]
        self.out_port = self.out.getsockname()[1]
        self.record_route = f"<sip:{LOOPBACK}:{self.port};lr>"
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rrproxy", daemon=True)

    def __enter__(self) -> RecordRouteProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listen.close()
        self.out.close()

    def received(self, method: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method]

    # --- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.listen, selectors.EVENT_READ, "listen")
        selector.register(self.out, selectors.EVENT_READ, "out")
        while not self._stop.is_set():
            for key, _ in selector.select(0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data, source = sock.recvfrom(65535)
                except OSError:
                    continue
                if data.strip():
                    self._handle(str(key.data), data, source)
        selector.close()

    def _handle(self, name: str, data: bytes, source: tuple[str, int]) -> None:
        head, sep, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        first, headers = lines[0], lines[1:]
        call_id = next((h.split(":", 1)[1].strip() for h in headers
                        if h.lower().startswith(("call-id:", "i:"))), "")
        with self._lock:
            self.seen.append(Seen(name, source, first, call_id))
        if first.startswith("SIP/2.0"):
            self._response(first, headers, sep + body)
        else:
            self._request(first, headers, sep + body, source)

    def _response(self, first: str, headers: list[str], rest: bytes) -> None:
        vias = [i for i, h in enumerate(headers) if h.lower().startswith(("via:", "v:"))]
        if len(vias) < 2:
            return
        del headers[vias[0]]
        sent_by = headers[vias[1] - 1].split(":", 1)[1].strip().split(" ", 1)[1]
        host, port = _host_port(sent_by.split(";", 1)[0])
        self._send(self.listen, first, headers, rest, (host, port))

    def _request(self, first: str, headers: list[str], rest: bytes,
                 source: tuple[str, int]) -> None:
        method, uri, _ = first.split(" ", 2)
        routes = [i for i, h in enumerate(headers) if h.lower().startswith("route:")]
        if routes and f":{self.port}" in headers[routes[0]]:
            del headers[routes[0]]              # §16.4: our own Route is consumed
        from_switch = source == self.switch or (
            source[0] == self.switch[0] and source[1] == self.switch[1])
        top_via = next((h for h in headers if h.lower().startswith(("via:", "v:"))), "")
        branch = hashlib.sha1(top_via.encode()).hexdigest()[:16]
        headers.insert(0, f"Via: SIP/2.0/UDP {LOOPBACK}:{self.port};branch=z9hG4bK-rr{branch}")
        to = next((h for h in headers if h.lower().startswith(("to:", "t:"))), "")
        if not from_switch and method == "INVITE" and ";tag=" not in to:
            headers.insert(1, f"Record-Route: {self.record_route}")
        if from_switch:
            self._send(self.listen, first, headers, rest, _host_port(uri))
        else:
            self._send(self.out, first, headers, rest, self.switch)

    @staticmethod
    def _send(sock: socket.socket, first: str, headers: list[str], rest: bytes,
              to: tuple[str, int]) -> None:
        data = "\r\n".join([first, *headers]).encode() + rest
        try:
            sock.sendto(data, to)
        except OSError:
            pass
