"""Calls end to end: SwitchSipService on 127.0.0.1 (real transports, real media relay)
and two tiny in-test phones over UDP that register with digest, call each other,
send RTP through the engine's ports, hang up; and a graceful shutdown that BYEs.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from switch.config import Config, MediaConfig, SipConfig, User
from switch.events import EventBus
from switch.logs import get_logger
from switch.metrics import Metrics
from switch.service import SwitchSipService
from switch.sip.headers import parse_auth
from switch.sip.message import Headers, Message, Request, Response, make_response
from switch.sip.parser import parse_message
from switch.sip.sdp import parse_sdp
from switch.store.sqlite import SqliteStore

REALM = "switch.local"
USERS = (
    User(extension="1001", name="Alice", password="secret1001", numbers=("+14155550101",)),
    User(extension="1002", name="Bob", password="secret1002", numbers=("+14155550102",)),
    User(extension="1003", name="Carol", password="secret1003"),
)
TIMEOUT = 5.0


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class Phone(asyncio.DatagramProtocol):
    """Just enough of a SIP phone: REGISTER/INVITE with digest, answer, ACK, BYE."""

    def __init__(self, user: User, server: tuple[str, int]) -> None:
        self.user = user
        self.server = server
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.held: list[Message] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.rtp: asyncio.DatagramTransport | None = None
        self.rtp_port = 0
        self.rtp_in: asyncio.Queue[bytes] = asyncio.Queue()
        self.cseq = itertools.count(1)
        self.tag = secrets.token_hex(4)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        queue = self.rtp_in

        class Rtp(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                queue.put_nowait(data)

        self.rtp, _ = await loop.create_datagram_endpoint(Rtp, local_addr=("127.0.0.1", 0))
        self.rtp_port = self.rtp.get_extra_info("sockname")[1]

    def close(self) -> None:
        for transport in (self.transport, self.rtp):
            if transport is not None:
                transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait(parse_message(data))

    def send(self, message: Message) -> None:
        assert self.transport is not None
        self.transport.sendto(message.encode(), self.server)

    async def expect(self, match: Callable[[Message], bool], timeout: float = TIMEOUT
                     ) -> Message:
        for i, held in enumerate(self.held):
            if match(held):
                return self.held.pop(i)
        async with asyncio.timeout(timeout):
            while True:
                message = await self.inbox.get()
                if match(message):
                    return message
                self.held.append(message)

    async def response(self, cseq_method: str, status: int | None = None) -> Response:
        def match(m: Message) -> bool:
            return isinstance(m, Response) and m.status >= (101 if status is None else 100) \
                and (m.headers.get("cseq") or "").endswith(cseq_method) \
                and (status is None or m.status == status)

        message = await self.expect(match)
        assert isinstance(message, Response)
        return message

    async def request(self, method: str) -> Request:
        message = await self.expect(lambda m: isinstance(m, Request) and m.method == method)
        assert isinstance(message, Request)
        return message

    # --- building ------------------------------------------------------------------

    def sdp(self) -> bytes:
        return (f"v=0\r\no={self.user.extension} 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
                f"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {self.rtp_port} RTP/AVP 0 101\r\n"
                f"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                f"a=sendrecv\r\n").encode()

    def new_request(self, method: str, uri: str, *, to: str, call_id: str, cseq: int,
                    body: bytes = b"", extra: tuple[tuple[str, str], ...] = ()) -> Request:
        headers = Headers([
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)}"
                    f";rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.user.extension}@{REALM}>;tag={self.tag}"),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:{self.user.extension}@127.0.0.1:{self.port}>"),
            *extra,
        ])
        if body:
            headers.add("Content-Type", "application/sdp")
        return Request(method, uri, headers, body)

    def digest(self, challenge: Response, method: str, uri: str) -> str:
        name = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        chal = parse_auth(challenge.headers.get(name) or "").params
        ha1 = _md5(f"{self.user.extension}:{chal['realm']}:{self.user.password}")
        ha2 = _md5(f"{method}:{uri}")
        response = _md5(f"{ha1}:{chal['nonce']}:00000001:abcdef:auth:{ha2}")
        value = (f'Digest username="{self.user.extension}", realm="{chal["realm"]}", '
                 f'nonce="{chal["nonce"]}", uri="{uri}", response="{response}", '
                 f'algorithm=MD5, cnonce="abcdef", nc=00000001, qop=auth')
        if "opaque" in chal:
            value += f', opaque="{chal["opaque"]}"'
        return value

    # --- flows ---------------------------------------------------------------------------

    async def register(self) -> None:
        uri = f"sip:{REALM}"
        call_id = secrets.token_hex(8)
        to = f"<sip:{self.user.extension}@{REALM}>"
        first = self.new_request("REGISTER", uri, to=to, call_id=call_id, cseq=1,
                                 extra=(("Expires", "300"),))
        self.send(first)
        challenge = await self.response("REGISTER", 401)
        self.send(self.new_request("REGISTER", uri, to=to, call_id=call_id, cseq=2, extra=(
            ("Expires", "300"),
            ("Authorization", self.digest(challenge, "REGISTER", uri)))))
        await self.response("REGISTER", 200)

    async def call(self, dialed: str) -> Dialog:
        uri = f"sip:{dialed}@{REALM}"
        call_id = secrets.token_hex(8)
        to = f"<{uri}>"
        first = self.new_request("INVITE", uri, to=to, call_id=call_id, cseq=1, body=self.sdp())
        self.send(first)
        challenge = await self.response("INVITE", 407)
        ack = self.new_request("ACK", uri, to=challenge.headers.get("to") or to,
                               call_id=call_id, cseq=1)
        ack.headers.set("Via", first.headers.get("via") or "")
        self.send(ack)
        invite = self.new_request("INVITE", uri, to=to, call_id=call_id, cseq=2,
                                  body=self.sdp(), extra=(
                                      ("Proxy-Authorization",
                                       self.digest(challenge, "INVITE", uri)),))
        self.send(invite)
        return Dialog(self, call_id=call_id, cseq=2, to=to, uri=uri)

    async def answer(self) -> Dialog:
        invite = await self.request("INVITE")
        to_tag = secrets.token_hex(4)
        ringing = make_response(invite, 180, to_tag=to_tag)
        self.send(ringing)
        ok = make_response(invite, 200, to_tag=to_tag, extra=(
            ("Contact", f"<sip:{self.user.extension}@127.0.0.1:{self.port}>"),
            ("Content-Type", "application/sdp")))
        ok.body = self.sdp()
        self.send(ok)
        await self.request("ACK")
        dialog = Dialog(self, call_id=invite.headers.get("call-id") or "", cseq=0,
                        to=invite.headers.get("from") or "",
                        uri=_contact_uri(invite), local=ok.headers.get("to") or "")
        dialog.offer = invite.body
        return dialog

    async def answer_bye(self) -> Request:
        bye = await self.request("BYE")
        self.send(make_response(bye, 200))
        return bye


def _contact_uri(message: Message) -> str:
    value = message.headers.get("contact") or ""
    return value[value.find("<") + 1:value.find(">")]


class Dialog:
    def __init__(self, phone: Phone, *, call_id: str, cseq: int, to: str, uri: str,
                 local: str | None = None) -> None:
        self.phone = phone
        self.call_id = call_id
        self.cseq = cseq
        self.to = to
        self.uri = uri
        self.local = local
        self.offer: bytes = b""
        self.answer: bytes = b""

    async def established(self) -> Response:
        ok = await self.phone.response("INVITE", 200)
        self.to = ok.headers.get("to") or self.to
        self.uri = _contact_uri(ok)
        self.answer = ok.body
        ack = self.phone.new_request("ACK", self.uri, to=self.to, call_id=self.call_id,
                                     cseq=self.cseq)
        self.phone.send(ack)
        return ok

    def request(self, method: str) -> Request:
        self.cseq += 1
        request = self.phone.new_request(method, self.uri, to=self.to, call_id=self.call_id,
                                         cseq=self.cseq)
        if self.local is not None:
            # We are the callee of this dialog: our From is the To we answered with.
            request.headers.set("From", self.local)
        return request


def rtp(seq: int, payload: bytes = b"\xff" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + payload


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[SwitchSipService, Config, Path]]:
    config = Config(data_dir=tmp_path, sip=SipConfig(host="127.0.0.1", port=0, realm=REALM),
                    media=MediaConfig(host="127.0.0.1", rtp_port_min=42000,
                                      rtp_port_max=42999),
                    users=USERS)
    store_path = tmp_path / "switch.db"
    store = SqliteStore(store_path)
    store.open()
    metrics = Metrics(process_metrics=False)
    bus = EventBus(metrics=metrics)
    svc = SwitchSipService(config, store, bus, metrics, get_logger("test.e2e"))
    await svc.start()
    try:
        yield svc, config, store_path
    finally:
        await svc.stop()
        store.close()


async def phones(svc: SwitchSipService) -> tuple[Phone, Phone]:
    bound = svc.driver.bound
    assert bound is not None
    alice, bob = Phone(USERS[0], bound), Phone(USERS[1], bound)
    for phone in (alice, bob):
        await phone.start()
        await phone.register()
    return alice, bob


@pytest.mark.parametrize("dialed", ["1002", "+14155550102"])
async def test_call_through_the_engine_with_rtp(
        service: tuple[SwitchSipService, Config, Path], dialed: str) -> None:
    svc, config, store_path = service
    alice, bob = await phones(svc)
    try:
        outgoing = await alice.call(dialed)
        incoming = await bob.answer()
        ok = await outgoing.established()
        assert ok.headers.get("call-id") != incoming.call_id             # two dialogs
        offer_b, answer_a = parse_sdp(incoming.offer), parse_sdp(ok.body)
        for sdp in (offer_b, answer_a):
            assert sdp.connection is not None and sdp.connection.address == "127.0.0.1"
            assert 42000 <= sdp.media[0].port <= 42999
        assert offer_b.media[0].port != answer_a.media[0].port
        (view,) = svc.calls.list_calls()
        assert view.state == "answered"

        # RTP from Alice to her port on the engine comes out at Bob, and back.
        assert alice.rtp is not None and bob.rtp is not None
        for seq in range(3):
            alice.rtp.sendto(rtp(seq), ("127.0.0.1", answer_a.media[0].port))
            bob.rtp.sendto(rtp(seq), ("127.0.0.1", offer_b.media[0].port))
        async with asyncio.timeout(TIMEOUT):
            got_b = await bob.rtp_in.get()
            got_a = await alice.rtp_in.get()
        assert got_b[12:] == b"\xff" * 160 and got_a[12:] == b"\xff" * 160

        bye = outgoing.request("BYE")
        alice.send(bye)
        await bob.answer_bye()
        assert (await alice.response("BYE")).status == 200
        async with asyncio.timeout(TIMEOUT):
            while svc.calls.list_calls():
                await asyncio.sleep(0.01)
    finally:
        alice.close()
        bob.close()
    await svc.stop()
    store = SqliteStore(store_path)
    store.open()
    (record,) = store.load_call_records()
    assert (record.caller, record.callee, record.result, record.cause) == (
        "1001", "1002", "answered", "caller_bye")
    assert record.answered_at is not None and record.ended_at is not None
    store.close()


async def test_unknown_and_unregistered_targets(
        service: tuple[SwitchSipService, Config, Path]) -> None:
    svc, _, _ = service
    alice, bob = await phones(svc)
    try:
        for dialed, status in (("7777", 404), ("1003", 480)):
            await alice.call(dialed)
            final = await alice.response("INVITE")
            assert final.status == status
    finally:
        alice.close()
        bob.close()


async def test_graceful_shutdown_byes_both_sides(
        service: tuple[SwitchSipService, Config, Path]) -> None:
    svc, _, _ = service
    alice, bob = await phones(svc)
    try:
        outgoing = await alice.call("1002")
        await bob.answer()
        await outgoing.established()
        stopping = asyncio.create_task(svc.stop())
        await asyncio.gather(alice.answer_bye(), bob.answer_bye())
        await asyncio.wait_for(stopping, TIMEOUT)
        assert not svc.calls.list_calls()
    finally:
        alice.close()
        bob.close()
