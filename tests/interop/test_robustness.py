"""Nothing a peer sends crashes the engine (CONTRACT.md, SIP behaviour).

A burst of RFC 4475 torture messages, random garbage, truncated and huge
messages and binary junk over UDP and TCP (TCP also: byte-by-byte writes,
several messages in one write, garbage then a valid request on the same
connection, abrupt closes).  Afterwards the engine must still answer
OPTIONS on both transports, exit 0 on SIGTERM, and its output must have no
traceback, no ``"level": "critical"`` and no "unhandled" line.

Torture messages (tests/vectors/rfc4475, else shared/testdata/rfc4475) are
sent with the addresses in their header section rewritten to 127.0.0.1 (Via
sent-by, ``received=``, ``maddr=``): the engine answers to Via, and this
test must never make it send to the example addresses the RFC uses (some are
public or broadcast). Bodies are left untouched so that Content-Length stays
what the RFC wrote.
"""

from __future__ import annotations

import random
import re
import socket
import time
from pathlib import Path

import pytest

from .harness import Engine
from .sipmsg import SipClient, build_request

pytestmark = pytest.mark.interop

TORTURE_DIR = Path(__file__).resolve().parents[1] / "vectors" / "rfc4475"
SHARED_TORTURE_DIR = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "rfc4475"
SEED = 4475


def torture_files() -> list[Path]:
    candidates = [TORTURE_DIR, SHARED_TORTURE_DIR]
    for directory in candidates:
        files = sorted(directory.glob("*.dat"))
        if files:
            return files
    return []


_IPV4 = re.compile(rb"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")
_HOSTNAME = re.compile(rb"\b[\w.-]+\.exam(?:p)?le\.(?:com|net|org)\b", re.I)


def localise(message: bytes) -> bytes:
    """Point every address in the header section at 127.0.0.1."""
    sep = message.find(b"\r\n\r\n")
    if sep < 0:
        sep = message.find(b"\n\n")
    head, body = (message, b"") if sep < 0 else (message[:sep], message[sep:])
    head = _IPV4.sub(b"127.0.0.1", head)
    head = _HOSTNAME.sub(b"127.0.0.1", head)
    return head + body


def options(local: tuple[str, int], server: tuple[str, int], transport: str) -> bytes:
    return build_request(
        "OPTIONS",
        ruri=f"sip:{server[0]}:{server[1]}",
        local=local,
        transport=transport,
        from_uri=f"sip:robust@{local[0]}",
        to_uri=f"sip:{server[0]}:{server[1]}",
    )


def junk_messages(rng: random.Random, server: tuple[str, int]) -> list[bytes]:
    valid = options(("127.0.0.1", 5999), server, "UDP")
    register = build_request(
        "REGISTER", ruri=f"sip:{server[0]}:{server[1]}", local=("127.0.0.1", 5999),
        from_uri="sip:1001@127.0.0.1", to_uri="sip:1001@127.0.0.1",
        extra_headers=["Contact: <sip:1001@127.0.0.1:5999>", "Expires: 60",
                       'Authorization: Digest username="1001", realm="x", nonce="', ],
    )  # fmt: skip
    out: list[bytes] = []
    # truncated at every interesting point
    for cut in sorted({1, 7, 8, 20, 40, len(valid) // 2, len(valid) - 4, len(valid) - 1}):
        out.append(valid[:cut])
    out.append(register)  # unterminated quoted string in a header
    # random bytes, printable noise, NULs, lone CRLFs (keep-alives)
    for n in (1, 16, 512, 4096):
        out.append(bytes(rng.getrandbits(8) for _ in range(n)))
    out.append(b"\x00" * 1024)
    out.append(b"\r\n\r\n")
    out.append(b"\r\n")
    out.append("OPTIONS sip:\u2603@127.0.0.1 SIP/2.0\r\n\r\n".encode())
    out.append(b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1\r\n" * 5)
    out.append(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKnope\r\n\r\n")
    out.append(valid.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
    out.append(valid.replace(b"Content-Length: 0", b"Content-Length: -5"))
    out.append(valid.replace(b"Content-Length: 0", b"Content-Length: 99999999999999999999"))
    out.append(valid.replace(b"CSeq: 1 OPTIONS", b"CSeq: 4294967296 OPTIONS"))
    out.append(valid.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"))
    out.append(valid.replace(b"OPTIONS", b"FOOBAR"))  # unknown method: 501
    # huge header (just under the UDP datagram limit) and many headers
    out.append(valid.replace(b"\r\n\r\n", b"\r\nX-Huge: " + b"a" * 60000 + b"\r\n\r\n"))
    out.append(valid.replace(b"\r\n\r\n", b"\r\n" + b"X-Many: 1\r\n" * 3000 + b"\r\n"))
    # deep nesting / pathological parameters
    out.append(valid.replace(b"Max-Forwards: 70", b"Max-Forwards: 70" + b";a" * 5000))
    out.append(valid.replace(b"From: <", b'From: "' + b"\\" * 4000 + b'" <'))
    return out


def assert_alive(engine: Engine) -> None:
    assert engine.running, "engine exited\n" + engine.diagnostics()
    for transport in ("UDP", "TCP"):
        with SipClient(engine.sip_addr, transport) as client:
            resp = client.options(timeout=10)
            assert resp.status == 200, resp.raw
    assert engine.http("GET", "/healthz", token=None).status == 200


def assert_clean_logs(engine: Engine) -> None:
    problems = engine.problems()
    assert not problems, (
        "engine logged a crash / critical / unhandled error:\n"
        + "\n".join(problems[:20])
        + "\n"
        + engine.diagnostics(60)
    )


def _udp_burst(engine: Engine, messages: list[bytes]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.01)
    try:
        for i, msg in enumerate(messages):
            try:
                sock.sendto(msg[:65507], engine.sip_addr)
            except OSError:
                pass
            if i % 10 == 9:
                time.sleep(0.01)  # bounded pacing; the point is content, not load
            try:
                while True:
                    sock.recvfrom(65535)
            except OSError:
                pass
    finally:
        sock.close()


def _tcp_send(engine: Engine, data: bytes, read_for: float = 0.2) -> bytes:
    got = b""
    try:
        with socket.create_connection(engine.sip_addr, timeout=5) as conn:
            conn.sendall(data)
            conn.settimeout(read_for)
            deadline = time.monotonic() + read_for
            while time.monotonic() < deadline:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                got += chunk
    except OSError:
        pass
    return got


def test_torture_messages_udp(engine: Engine) -> None:
    files = torture_files()
    assert files, f"RFC 4475 vectors not found under {TORTURE_DIR}"
    messages = [localise(f.read_bytes()) for f in files]
    _udp_burst(engine, messages * 3)
    assert_alive(engine)
    assert_clean_logs(engine)


def test_torture_messages_tcp(engine: Engine) -> None:
    files = torture_files()
    assert files
    for f in files:
        _tcp_send(engine, localise(f.read_bytes()), read_for=0.1)
    # all of them back to back on one connection, too
    _tcp_send(engine, b"".join(localise(f.read_bytes()) for f in files), read_for=0.5)
    assert_alive(engine)
    assert_clean_logs(engine)


def test_garbage_udp(engine: Engine) -> None:
    rng = random.Random(SEED)
    messages = junk_messages(rng, engine.sip_addr)
    messages += [
        bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 1500))) for _ in range(200)
    ]
    _udp_burst(engine, messages)
    assert_alive(engine)
    assert_clean_logs(engine)


def test_garbage_tcp(engine: Engine) -> None:
    rng = random.Random(SEED + 1)
    for msg in junk_messages(rng, engine.sip_addr):
        _tcp_send(engine, msg, read_for=0.05)
    # a message far beyond any sane size limit, in one stream
    _tcp_send(engine, b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nX-Huge: " + b"b" * (2 * 1024 * 1024),
              read_for=0.5)  # fmt: skip
    # a Content-Length promising a huge body that never comes
    _tcp_send(engine, b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nContent-Length: 2000000000\r\n\r\nxx")
    # connections opened and dropped without a byte, or mid-message
    for _ in range(20):
        try:
            s = socket.create_connection(engine.sip_addr, timeout=5)
            if rng.random() < 0.5:
                s.sendall(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # RST
        except OSError:
            pass
    assert_alive(engine)
    assert_clean_logs(engine)


def test_tcp_framing(engine: Engine) -> None:
    """Partial writes and pipelining are normal TCP life, not errors."""
    with SipClient(engine.sip_addr, "TCP") as client:
        # one request written a byte at a time
        msg = options(client.local, engine.sip_addr, "TCP")
        for i in range(len(msg)):
            client.sock.sendall(msg[i : i + 1])
            if i % 50 == 0:
                time.sleep(0.001)
        assert client._recv_one(time.monotonic() + 10) is not None

        # three requests in one write -> three responses, in order
        batch = [options(client.local, engine.sip_addr, "TCP") for _ in range(3)]
        client.sock.sendall(b"".join(batch))
        got = [client._recv_one(time.monotonic() + 10) for _ in range(3)]
        assert all(r is not None and r.status == 200 for r in got), got
        want_ids = [re.search(rb"Call-ID: (\S+)", m).group(1).decode() for m in batch]  # type: ignore[union-attr]
        assert [r.header("call-id") for r in got if r] == want_ids

        # CRLF keep-alives between messages are allowed (RFC 5626 §3.5.1)
        client.sock.sendall(b"\r\n\r\n" + options(client.local, engine.sip_addr, "TCP"))
        resp = client._recv_one(time.monotonic() + 10)
        assert resp is not None and resp.status == 200
    assert_clean_logs(engine)


def test_tcp_garbage_then_valid_request(engine: Engine) -> None:
    """After garbage the engine may answer 400 or drop the connection, but
    never hang the engine: a valid OPTIONS on the same connection gets 200
    or finds the connection closed, and a new connection always gets 200."""
    with socket.create_connection(engine.sip_addr, timeout=5) as conn:
        local = conn.getsockname()[:2]
        conn.sendall(b"\x16\x03\x01\x02\x00garbage that is not SIP at all\r\n\r\n")
        time.sleep(0.2)
        try:
            conn.sendall(options(local, engine.sip_addr, "TCP"))
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            data = b""
        if data:
            first = data.split(b"\r\n", 1)[0]
            assert re.match(rb"SIP/2\.0 (200|400|4\d\d) ", first), data[:200]
    assert_alive(engine)
    assert_clean_logs(engine)


def test_survives_everything_then_stops_cleanly(engine: Engine) -> None:
    rng = random.Random(SEED + 2)
    files = torture_files()
    _udp_burst(
        engine, [localise(f.read_bytes()) for f in files] + junk_messages(rng, engine.sip_addr)
    )
    for f in files[:10]:
        _tcp_send(engine, localise(f.read_bytes()), read_for=0.05)
    assert_alive(engine)
    engine.stop()  # asserts exit code 0 within the contract's 10 s
    assert_clean_logs(engine)
