"""A deliberately small, independent SIP client for black-box tests.

It does not share code with ``switch.sip``: the point is to check the
engine from outside with a second implementation.  Requests are built as
text; responses are parsed just enough to read status, headers and body.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
import uuid
from dataclasses import dataclass, field

CRLF = "\r\n"


def new_branch() -> str:
    return "z9hG4bK-" + uuid.uuid4().hex[:16]


def new_tag() -> str:
    return uuid.uuid4().hex[:10]


@dataclass
class SipResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == _expand(name.lower()):
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == _expand(name.lower())]

    def header_names(self) -> list[str]:
        return [k.lower() for k, _ in self.headers]


_COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via",
}  # fmt: skip


def _expand(name: str) -> str:
    return _COMPACT.get(name, name)


def parse_response(data: bytes) -> SipResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    m = re.match(r"SIP/2\.0 (\d{3}) ?(.*)", lines[0])
    if not m:
        raise ValueError(f"not a SIP response: {lines[0]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            k, v = headers[-1]
            headers[-1] = (k, v + " " + line.strip())
            continue
        name, _, value = line.partition(":")
        headers.append((_expand(name.strip().lower()), value.strip()))
    return SipResponse(int(m.group(1)), m.group(2), headers, body, data)


def parse_challenge(value: str) -> dict[str, str]:
    """Parameters of a ``Digest ...`` challenge."""
    _, _, params = value.partition(" ")
    out: dict[str, str] = {}
    for m in re.finditer(r'(\w+)\s*=\s*("([^"]*)"|[^,\s]+)', params):
        out[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    return out


def digest_authorization(
    challenge: dict[str, str],
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    header: str = "Authorization",
    nc: int = 1,
) -> str:
    algorithm = challenge.get("algorithm", "MD5")
    hfn = hashlib.sha256 if algorithm.upper().startswith("SHA-256") else hashlib.md5

    def h(text: str) -> str:
        return hfn(text.encode()).hexdigest()

    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    parts = [
        f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
        f"algorithm={algorithm}",
    ]  # fmt: skip
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce = uuid.uuid4().hex[:16]
        ncs = f"{nc:08x}"
        response = h(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={ncs}", f'cnonce="{cnonce}"']
    else:
        response = h(f"{ha1}:{nonce}:{ha2}")
    parts.append(f'response="{response}"')
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return f"{header}: Digest " + ", ".join(parts)


def build_request(
    method: str,
    *,
    ruri: str,
    local: tuple[str, int],
    transport: str = "UDP",
    from_uri: str,
    to_uri: str,
    call_id: str | None = None,
    cseq: int = 1,
    extra_headers: list[str] | None = None,
    body: bytes = b"",
    branch: str | None = None,
    tag: str | None = None,
) -> bytes:
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {local[0]}:{local[1]};branch={branch or new_branch()};rport",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={tag or new_tag()}",
        f"To: <{to_uri}>",
        f"Call-ID: {call_id or uuid.uuid4().hex}@{local[0]}",
        f"CSeq: {cseq} {method}",
        "User-Agent: switch-interop-raw/1",
    ]
    lines += extra_headers or []
    lines.append(f"Content-Length: {len(body)}")
    return (CRLF.join(lines) + CRLF + CRLF).encode() + body


class SipClient:
    """Sends requests over UDP or TCP and waits for a final response."""

    def __init__(self, server: tuple[str, int], transport: str = "UDP") -> None:
        self.server = server
        self.transport = transport.upper()
        if self.transport == "UDP":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((server[0], 0))
        else:
            self.sock = socket.create_connection(server, timeout=10)
        self.local: tuple[str, int] = self.sock.getsockname()[:2]
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        if self.transport == "UDP":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def _recv_one(self, deadline: float) -> SipResponse | None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            if self.transport == "UDP":
                try:
                    data, _ = self.sock.recvfrom(65535)
                except TimeoutError:
                    return None
                if data.startswith(b"SIP/2.0 "):
                    return parse_response(data)
                continue
            msg = self._frame()
            if msg is not None:
                return msg
            try:
                chunk = self.sock.recv(65535)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("server closed the TCP connection")
            self._buf += chunk

    def _frame(self) -> SipResponse | None:
        self._buf = self._buf.lstrip(b"\r\n")
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self._buf[:end].decode("utf-8", "replace")
        m = re.search(r"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
        length = int(m.group(1)) if m else 0
        total = end + 4 + length
        if len(self._buf) < total:
            return None
        data, self._buf = self._buf[:total], self._buf[total:]
        if not data.startswith(b"SIP/2.0 "):
            return self._frame()
        return parse_response(data)

    def request(self, data: bytes, timeout: float = 5.0, retransmit: bool = True) -> SipResponse:
        """Send and return the first final response (provisionals skipped)."""
        deadline = time.monotonic() + timeout
        self.send_raw(data)
        interval = 0.5
        next_tx = time.monotonic() + interval
        while True:
            wait_until = (
                min(deadline, next_tx) if self.transport == "UDP" and retransmit else deadline
            )
            resp = self._recv_one(wait_until)
            if resp is not None:
                if resp.status >= 200:
                    return resp
                continue
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"no final response within {timeout}s")
            if self.transport == "UDP" and retransmit and now >= next_tx:
                self.send_raw(data)
                interval = min(interval * 2, 4.0)
                next_tx = now + interval

    def options(self, timeout: float = 5.0) -> SipResponse:
        host, port = self.server
        return self.request(
            build_request(
                "OPTIONS",
                ruri=f"sip:{host}:{port}",
                local=self.local,
                transport=self.transport,
                from_uri=f"sip:probe@{self.local[0]}",
                to_uri=f"sip:{host}:{port}",
                extra_headers=["Accept: application/sdp"],
            ),
            timeout,
        )

    def register(
        self,
        user: str,
        password: str | None,
        *,
        expires: int = 3600,
        domain: str | None = None,
        contact: str | None = None,
        timeout: float = 5.0,
    ) -> tuple[SipResponse, SipResponse | None]:
        """REGISTER; answer one challenge if *password* is given. (first, second) responses."""
        host, port = self.server
        domain = domain or f"{host}:{port}"
        ruri = f"sip:{domain}"
        aor = f"sip:{user}@{domain}"
        call_id = uuid.uuid4().hex
        tag = new_tag()
        proto = "" if self.transport == "UDP" else f";transport={self.transport.lower()}"
        contact = contact or f"<sip:{user}@{self.local[0]}:{self.local[1]}{proto}>"

        def req(cseq: int, extra: list[str]) -> bytes:
            return build_request(
                "REGISTER", ruri=ruri, local=self.local, transport=self.transport,
                from_uri=aor, to_uri=aor, call_id=call_id, cseq=cseq, tag=tag,
                extra_headers=[f"Contact: {contact}", f"Expires: {expires}", *extra],
            )  # fmt: skip

        first = self.request(req(1, []), timeout)
        if first.status not in (401, 407) or password is None:
            return first, None
        hname = "www-authenticate" if first.status == 401 else "proxy-authenticate"
        aname = "Authorization" if first.status == 401 else "Proxy-Authorization"
        chal_value = first.header(hname)
        assert chal_value is not None, f"{first.status} without {hname}"
        chal = parse_challenge(chal_value)
        auth = digest_authorization(
            chal, method="REGISTER", uri=ruri, username=user, password=password, header=aname
        )
        second = self.request(req(2, [auth]), timeout)
        return first, second
