"""Transports with real asyncio sockets on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import TypeVar

import pytest

from switch.sip.endpoint import Event, RequestReceived, ResponseReceived, TransportErrorOccurred
from switch.sip.message import Headers, Request, Response, make_response
from switch.sip.parser import StreamFramer, parse_message
from switch.sip.transaction import Destination
from switch.sip.transport import SipDriver, TransportConfig

WAIT = 5.0
E = TypeVar("E")


def options(n: int = 1, *, transport: str = "UDP", port: int = 5999) -> bytes:
    return (
        f"OPTIONS sip:switch@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK-t{n};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:tester@127.0.0.1>;tag=f{n}\r\n"
        f"To: <sip:switch@127.0.0.1>\r\n"
        f"Call-ID: call-{n}\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class Tu:
    """Answers every request 200 (or raises, when told to); keeps the events."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.driver: SipDriver | None = None
        self.explode = False
        self.arrived: asyncio.Queue[Event] = asyncio.Queue()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.arrived.put_nowait(event)
        if isinstance(event, RequestReceived):
            if self.explode:
                raise RuntimeError("TU bug")
            assert self.driver is not None
            self.driver.respond(event.transaction_id,
                                make_response(event.request, 200, to_tag="tu"))


@pytest.fixture
async def running() -> AsyncIterator[tuple[SipDriver, Tu]]:
    tu = Tu()
    driver = SipDriver(tu, config=TransportConfig(tcp_idle_timeout=0.3,
                                                  tcp_max_connections=4))
    tu.driver = driver
    # An exception in a transport callback is only logged by asyncio: make it fail.
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    await driver.start("127.0.0.1", 0)
    try:
        yield driver, tu
    finally:
        await driver.stop()
        loop.set_exception_handler(None)
    assert errors == []


class UdpPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))


async def udp_peer() -> tuple[asyncio.DatagramTransport, UdpPeer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        UdpPeer, local_addr=("127.0.0.1", 0))
    return transport, protocol


async def read_messages(reader: asyncio.StreamReader, count: int) -> list[Response | Request]:
    framer = StreamFramer()
    frames: list[bytes] = []
    while len(frames) < count:
        chunk = await asyncio.wait_for(reader.read(65536), WAIT)
        if not chunk:
            break
        frames.extend(framer.feed(chunk))
    return [parse_message(f, stream=True) for f in frames]


async def test_udp_round_trip(running: tuple[SipDriver, Tu]) -> None:
    driver, tu = running
    assert driver.bound is not None
    host, port = driver.bound
    transport, peer = await udp_peer()
    try:
        transport.sendto(options(), (host, port))
        data, addr = await asyncio.wait_for(peer.received.get(), WAIT)
        assert addr == (host, port)
        response = parse_message(data)
        assert isinstance(response, Response) and response.status == 200
        assert "rport=" in (response.headers.get("via") or "")
        transport.sendto(options(), (host, port))            # retransmission → same answer
        again, _ = await asyncio.wait_for(peer.received.get(), WAIT)
        assert again == data
        assert sum(isinstance(e, RequestReceived) for e in tu.events) == 1
    finally:
        transport.close()


async def test_port_zero_binds_udp_and_tcp_on_the_same_port(
        running: tuple[SipDriver, Tu]) -> None:
    driver, _ = running
    assert driver.bound is not None
    host, port = driver.bound
    reader, writer = await asyncio.open_connection(host, port)
    writer.close()
    await writer.wait_closed()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(OSError):
        probe.bind((host, port))
    probe.close()


async def test_tcp_several_messages_in_one_write_and_byte_by_byte(
        running: tuple[SipDriver, Tu]) -> None:
    driver, _ = running
    assert driver.bound is not None
    reader, writer = await asyncio.open_connection(*driver.bound)
    try:
        writer.write(options(1, transport="TCP") + options(2, transport="TCP"))
        await writer.drain()
        got = await read_messages(reader, 2)
        assert [(r.status, r.headers.get("call-id")) for r in got  # type: ignore[union-attr]
                ] == [(200, "call-1"), (200, "call-2")]
        for byte in options(3, transport="TCP"):
            writer.write(bytes([byte]))
            await writer.drain()
        [third] = await read_messages(reader, 1)
        assert isinstance(third, Response) and third.headers.get("call-id") == "call-3"
    finally:
        writer.close()


async def test_tcp_garbage_gets_400_and_close_without_hurting_others(
        running: tuple[SipDriver, Tu]) -> None:
    driver, _ = running
    assert driver.bound is not None
    good_reader, good_writer = await asyncio.open_connection(*driver.bound)
    bad_reader, bad_writer = await asyncio.open_connection(*driver.bound)
    try:
        # no Content-Length on a stream: unframeable, but a 400 can be formed
        bad_writer.write(options(9, transport="TCP").replace(b"Content-Length: 0\r\n", b""))
        await bad_writer.drain()
        [rejected] = await read_messages(bad_reader, 1)
        assert isinstance(rejected, Response) and rejected.status == 400
        assert await asyncio.wait_for(bad_reader.read(), WAIT) == b""     # closed
        # pure garbage: closed without an answer
        junk_reader, junk_writer = await asyncio.open_connection(*driver.bound)
        junk_writer.write(b"\x16\x03\x01 not sip at all\r\ncontent-length: x\r\n\r\n")
        assert await asyncio.wait_for(junk_reader.read(), WAIT) == b""
        junk_writer.close()
        good_writer.write(options(10, transport="TCP"))
        [ok] = await read_messages(good_reader, 1)
        assert isinstance(ok, Response) and ok.status == 200
    finally:
        good_writer.close()
        bad_writer.close()


async def test_tu_exception_is_answered_500(running: tuple[SipDriver, Tu]) -> None:
    driver, tu = running
    tu.explode = True
    assert driver.bound is not None
    transport, peer = await udp_peer()
    try:
        transport.sendto(options(20), driver.bound)
        data, _ = await asyncio.wait_for(peer.received.get(), WAIT)
        response = parse_message(data)
        assert isinstance(response, Response) and response.status == 500
        tu.explode = False
        transport.sendto(options(21), driver.bound)                    # the driver lives on
        data, _ = await asyncio.wait_for(peer.received.get(), WAIT)
        assert parse_message(data).status == 200  # type: ignore[union-attr]
    finally:
        transport.close()


def outbound_options(port: int) -> Request:
    return Request("OPTIONS", f"sip:peer@127.0.0.1:{port}", Headers([
        ("From", "<sip:switch@127.0.0.1>;tag=s1"),
        ("To", f"<sip:peer@127.0.0.1:{port}>"),
        ("Call-ID", "outbound-1"),
        ("CSeq", "1 OPTIONS"),
    ]))


async def test_outbound_udp_request_and_response(running: tuple[SipDriver, Tu]) -> None:
    driver, tu = running
    transport, peer = await udp_peer()
    try:
        port = transport.get_extra_info("sockname")[1]
        tid = driver.send_request(outbound_options(port),
                                  Destination(transport="udp", host="127.0.0.1", port=port))
        data, addr = await asyncio.wait_for(peer.received.get(), WAIT)
        request = parse_message(data)
        assert isinstance(request, Request)
        assert driver.bound is not None and addr[1] == driver.bound[1]
        transport.sendto(make_response(request, 200, to_tag="p").encode(), addr)
        event = await asyncio.wait_for(_next(tu, ResponseReceived), WAIT)
        assert event.transaction_id == tid and event.response.status == 200
    finally:
        transport.close()


async def test_outbound_tcp_opens_a_connection(running: tuple[SipDriver, Tu]) -> None:
    driver, tu = running
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        [request] = await read_messages(reader, 1)
        assert isinstance(request, Request)
        got.put_nowait(request.encode())
        writer.write(make_response(request, 200, to_tag="p").encode())
        await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        tid = driver.send_request(outbound_options(port),
                                  Destination(transport="tcp", host="127.0.0.1", port=port))
        data = await asyncio.wait_for(got.get(), WAIT)
        assert b"SIP/2.0/TCP" in data
        event = await asyncio.wait_for(_next(tu, ResponseReceived), WAIT)
        assert event.transaction_id == tid
    finally:
        server.close()


async def test_outbound_tcp_connect_failure_is_a_transport_error(
        running: tuple[SipDriver, Tu]) -> None:
    driver, tu = running
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()                           # nobody listens there now
    tid = driver.send_request(outbound_options(port),
                              Destination(transport="tcp", host="127.0.0.1", port=port))
    event = await asyncio.wait_for(_next(tu, TransportErrorOccurred), WAIT)
    assert event.transaction_id == tid


async def test_idle_tcp_connections_are_closed(running: tuple[SipDriver, Tu]) -> None:
    driver, _ = running
    assert driver.bound is not None
    reader, writer = await asyncio.open_connection(*driver.bound)
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()


async def test_connection_cap(running: tuple[SipDriver, Tu]) -> None:
    driver, _ = running
    assert driver.bound is not None
    streams = [await asyncio.open_connection(*driver.bound) for _ in range(5)]
    closed = 0
    for reader, _ in streams:
        try:
            if await asyncio.wait_for(reader.read(), 0.2) == b"":
                closed += 1
        except TimeoutError:
            pass
    assert closed >= 1 and driver.connection_count <= 4
    for _, writer in streams:
        writer.close()


async def test_timer_handle_follows_the_endpoint(running: tuple[SipDriver, Tu]) -> None:
    driver, tu = running
    transport, peer = await udp_peer()
    try:
        assert driver.bound is not None
        transport.sendto(options(30), driver.bound)
        await asyncio.wait_for(peer.received.get(), WAIT)
        assert driver._timer_at == driver.endpoint.get_timer() is not None
    finally:
        transport.close()


async def _next(tu: Tu, kind: type[E]) -> E:
    while True:
        event = await tu.arrived.get()
        if isinstance(event, kind):
            return event


async def test_armed_timer_is_never_later_than_the_earliest_deadline(
        running: tuple[SipDriver, Tu]) -> None:
    # The pump re-arms only for an earlier new deadline; an armed timer at a
    # cancelled deadline may be early (handle_timer skips it), never late.
    driver, tu = running
    transport, peer = await udp_peer()
    try:
        assert driver.bound is not None
        for n in range(40, 45):
            transport.sendto(options(n), driver.bound)
            await asyncio.wait_for(peer.received.get(), WAIT)
            earliest = driver.endpoint.get_timer()
            assert earliest is not None and driver._timer_at <= earliest
    finally:
        transport.close()
