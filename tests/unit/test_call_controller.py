"""Call control, sans-I/O: the controller driven with SIP values and fake time.

``World`` stands in for everything around ``CallController``: the SIP driver
(requests and responses are recorded, phones answer by test code), the media
relay (a fake that records configure/bridge/close), the timers (a fake clock
advanced by the test), digest authentication (the real authenticator, with
answers computed here), the registrar (a dict of bindings), the event bus and
the record writer.  Nothing sleeps; nothing touches a socket.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from switch.call.controller import CallController, NotImplementedYet
from switch.call.media import LegConfig, MediaUnavailable
from switch.call.model import CallState, LegState
from switch.config import CallsConfig, Config, MediaConfig, SipConfig, User
from switch.logs import add_call_id, get_logger
from switch.metrics import Metrics
from switch.model import ConflictError, NotFoundError
from switch.sip.auth import DigestAuthenticator, StaticCredentials, UserCredentials
from switch.sip.headers import parse_auth, tag_of
from switch.sip.location import Binding
from switch.sip.location import Source as BindingSource
from switch.sip.message import Headers, Message, Request, Response, make_response
from switch.sip.sdp import parse_sdp
from switch.sip.transaction import Destination, Source
from switch.store.base import CallRecord

REALM = "switch.local"
USERS = (
    User(extension="1001", name="Alice", password="secret1001", numbers=("+14155550101",)),
    User(extension="1002", name="Bob", password="secret1002", numbers=("+14155550102",)),
    User(extension="1003", name="Carol", password="secret1003"),
)
MEDIA_HOST = "198.51.100.1"

OFFER = (b"v=0\r\no=alice 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
         b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n")
ANSWER = (b"v=0\r\no=bob 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
          b"m=audio 5000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
          b"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
G729_ONLY = (b"v=0\r\no=alice 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
             b"m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n")


def _hold(sdp: bytes, direction: bytes, version: bytes) -> bytes:
    out = sdp.replace(b"a=sendrecv", b"a=" + direction)
    return out.replace(b" 1 1 IN", b" 1 " + version + b" IN").replace(
        b" 2 2 IN", b" 2 " + version + b" IN")


# --- fakes ------------------------------------------------------------------------------


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Clock:
    now: float = 1000.0
    heap: list[tuple[float, int, FakeTimer, Callable[[], None]]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        handle = FakeTimer()
        heapq.heappush(self.heap, (when, next(self.seq), handle, callback))
        return handle

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self.heap and self.heap[0][0] <= until:
            when, _, handle, callback = heapq.heappop(self.heap)
            if handle.cancelled:
                continue
            self.now = max(self.now, when)
            callback()
        self.now = until


@dataclass
class Sent:
    txn: int
    request: Request
    destination: Destination


class FakeSip:
    def __init__(self) -> None:
        self.responses: dict[int, list[Response]] = {}
        self.requests: list[Sent] = []
        self.stateless: list[tuple[Message, Destination]] = []
        self._ids = itertools.count(1000)

    def respond(self, transaction_id: int, response: Response) -> None:
        self.responses.setdefault(transaction_id, []).append(response)

    def send_request(self, request: Request, destination: Destination) -> int:
        txn = next(self._ids)
        self.requests.append(Sent(txn, request, destination))
        return txn

    def send_stateless(self, message: Message, destination: Destination) -> None:
        self.stateless.append((message, destination))

    def local_address(self) -> tuple[str, int]:
        return "192.0.2.1", 5060

    def acks(self) -> list[Request]:
        return [m for m, _ in self.stateless if isinstance(m, Request) and m.method == "ACK"]


@dataclass
class FakeMediaLeg:
    id: str
    local_host: str
    local_port: int


class FakeMedia:
    def __init__(self) -> None:
        self.ports = itertools.count(20000, 2)
        self.legs: dict[str, FakeMediaLeg] = {}
        self.configs: dict[str, LegConfig] = {}
        self.bridges: dict[str, str] = {}
        self.closed: list[str] = []
        self.fail = False

    async def open_leg(self, leg_id: str) -> FakeMediaLeg:
        if self.fail:
            raise MediaUnavailable("pool empty")
        leg = FakeMediaLeg(leg_id, MEDIA_HOST, next(self.ports))
        self.legs[leg_id] = leg
        return leg

    def close_leg(self, leg: Any) -> None:
        self.unbridge(leg)
        self.legs.pop(leg.id, None)
        self.closed.append(leg.id)

    def configure(self, leg: Any, config: LegConfig) -> None:
        self.configs[leg.id] = config

    def bridge(self, a: Any, b: Any) -> None:
        self.unbridge(a)
        self.unbridge(b)
        self.bridges[a.id] = b.id
        self.bridges[b.id] = a.id

    def unbridge(self, leg: Any) -> None:
        other = self.bridges.pop(leg.id, None)
        if other is not None:
            self.bridges.pop(other, None)


class FakeBus:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def wants(self, type: str) -> bool:
        return True

    def publish(self, type: str, **fields: object) -> None:
        self.events.append((type, fields))

    def types(self) -> list[str]:
        return [t for t, _ in self.events]


class FakeRecords:
    def __init__(self) -> None:
        self.saved: list[CallRecord] = []

    def save(self, record: CallRecord) -> None:
        self.saved.append(record)

    def save_snapshot(self, call_id: str, snapshot: Callable[[], CallRecord]) -> None:
        self.saved.append(snapshot())      # taken at once: each step is seen

    def last(self, call_id: str) -> CallRecord:
        return [r for r in self.saved if r.call_id == call_id][-1]


def run_now(coro: Coroutine[Any, Any, None]) -> None:
    """Drive a coroutine that never really suspends (the fake media answers at once)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise AssertionError("the coroutine suspended")


def digest(chal: dict[str, str], *, username: str, password: str, method: str, uri: str) -> str:
    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = h(f"{username}:{chal['realm']}:{password}")
    ha2 = h(f"{method}:{uri}")
    response = h(f"{ha1}:{chal['nonce']}:00000001:c0ffee:auth:{ha2}")
    value = (f'Digest username="{username}", realm="{chal["realm"]}", nonce="{chal["nonce"]}", '
             f'uri="{uri}", response="{response}", algorithm=MD5, cnonce="c0ffee", '
             f'nc=00000001, qop=auth')
    if "opaque" in chal:
        value += f', opaque="{chal["opaque"]}"'
    return value


def binding(aor: str, contact: str, host: str, port: int) -> Binding:
    return Binding(aor=aor, key=f"uri:{contact}", contact=contact, expires=3600,
                   expires_at=10_000.0, expires_at_wall=2e9, updated_at_wall=1e9,
                   call_id="reg", cseq=1, source=BindingSource(transport="udp", host=host,
                                                              port=port))


# --- the world -----------------------------------------------------------------------------


class World:
    def __init__(self, *, ring_timeout: int = 30, max_calls: int = 100,
                 session_timer: bool = False, max_duration: int = 0) -> None:
        self.config = Config(
            sip=SipConfig(realm=REALM), media=MediaConfig(host=MEDIA_HOST),
            calls=CallsConfig(ring_timeout=ring_timeout, max_calls=max_calls,
                              session_timer=session_timer, max_duration=max_duration),
            users=USERS)
        self.clock = Clock()
        self.sip = FakeSip()
        self.media = FakeMedia()
        self.bus = FakeBus()
        self.records = FakeRecords()
        self.metrics = Metrics(process_metrics=False)
        self.bindings: dict[str, list[Binding]] = {
            "1002": [binding("1002", "sip:1002@10.0.0.2:5062", "203.0.113.5", 40000)],
        }
        creds = StaticCredentials(UserCredentials(username=u.extension, extension=u.extension,
                                                  password=u.password) for u in USERS)
        self.auth = DigestAuthenticator(REALM, secret=b"s" * 32, credentials=creds)
        self.controller = CallController(
            self.config, sip=self.sip, media=self.media, timers=self.clock,
            clock=lambda: self.clock.now, authenticator=self.auth,
            contacts=lambda ext, now: list(self.bindings.get(ext, [])), bus=self.bus,
            metrics=self.metrics, log=get_logger("test.calls"), records=self.records,
            spawn=run_now, wall=lambda: self.clock.now + 1.7e9)
        self._txns = itertools.count(1)
        self._branch = itertools.count(1)

    # --- the caller's phone ---------------------------------------------------------

    def invite(self, dialed: str = "1002", *, caller: str = "1001", body: bytes = OFFER,
               authenticate: bool = True, display: str = "Mallory",
               call_id: str | None = None) -> Caller:
        uri = f"sip:{dialed}@{REALM}"
        phone = Caller(world=self, uri=uri, caller=caller, body=body, display=display,
                       call_id=call_id or f"a-{next(self._branch)}@10.0.0.1")
        request = phone.request(cseq=1)
        txn = next(self._txns)
        self.controller.receive_invite(txn, request, phone.source)
        if authenticate:
            (challenge,) = self.sip.responses[txn]
            assert challenge.status == 407
            chal = parse_auth(challenge.headers.get_all("Proxy-Authenticate")[0]).params
            user = next(u for u in USERS if u.extension == caller)
            request = phone.request(cseq=2, authorization=digest(
                chal, username=caller, password=user.password, method="INVITE", uri=uri))
            txn = next(self._txns)
            self.controller.receive_invite(txn, request, phone.source)
        phone.txn, phone.invite = txn, request
        return phone

    def responses(self, txn: int) -> list[int]:
        return [r.status for r in self.sip.responses.get(txn, [])]

    # --- the callee's phones ----------------------------------------------------------

    def forks(self) -> list[Sent]:
        return [s for s in self.sip.requests if s.request.method == "INVITE"
                and tag_of(s.request.headers.get("to") or "") is None]

    def sent(self, method: str) -> list[Sent]:
        return [s for s in self.sip.requests if s.request.method == method]

    def reply(self, sent: Sent, status: int, *, body: bytes | None = None,
              to_tag: str = "btag") -> Response:
        response = make_response(sent.request, status, to_tag=to_tag if status > 100 else None)
        if 100 < status < 300:
            response.headers.add("Contact", "<sip:1002@10.0.0.2:5062>")
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        self.controller.receive_response(sent.txn, response)
        return response

    def answer(self, sent: Sent, body: bytes = ANSWER, to_tag: str = "btag") -> Response:
        return self.reply(sent, 200, body=body, to_tag=to_tag)

    def callee_request(self, fork: Sent, response: Response, method: str, cseq: int,
                       body: bytes = b"") -> tuple[int, Request]:
        """A request from the callee inside its dialog with us."""
        headers = Headers([
            ("Via", f"SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK-b{next(self._branch)}"),
            ("From", response.headers.get("to") or ""),
            ("To", fork.request.headers.get("from") or ""),
            ("Call-ID", fork.request.headers.get("call-id") or ""),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", "<sip:1002@10.0.0.2:5062>"),
        ])
        if body:
            headers.add("Content-Type", "application/sdp")
        request = Request(method, "sip:switch@192.0.2.1:5060", headers, body)
        txn = next(self._txns)
        assert self.controller.receive_in_dialog(txn, request, Source(
            transport="udp", host="203.0.113.5", port=40000))
        return txn, request

    def established(self, dialed: str = "1002") -> tuple[Caller, Sent, Response]:
        phone = self.invite(dialed)
        (fork,) = self.forks()
        self.reply(fork, 180)
        ok = self.answer(fork)
        phone.ack()
        return phone, fork, ok

    def call_id(self) -> str:
        return self.bus.events[0][1]["call_id"]  # type: ignore[return-value]


@dataclass
class Caller:
    world: World
    uri: str
    caller: str
    body: bytes
    display: str
    call_id: str
    txn: int = 0
    invite: Request | None = None
    cseq: int = 2
    source: Source = field(default_factory=lambda: Source(transport="udp", host="10.0.0.1",
                                                          port=5060))

    def request(self, *, cseq: int, authorization: str | None = None) -> Request:
        headers = Headers([
            ("Via", f"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-a{self.call_id}{cseq};rport"),
            ("From", f'"{self.display}" <sip:{self.caller}@{REALM}>;tag=atag'),
            ("To", f"<{self.uri}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", "<sip:1001@10.0.0.1:5060>"),
            ("Max-Forwards", "70"),
        ])
        if authorization:
            headers.add("Proxy-Authorization", authorization)
        if self.body:
            headers.add("Content-Type", "application/sdp")
        return Request("INVITE", self.uri, headers, self.body)

    @property
    def final(self) -> Response:
        responses = self.world.sip.responses[self.txn]
        finals = [r for r in responses if r.status >= 200]
        assert finals, [r.status for r in responses]
        return finals[-1]

    @property
    def statuses(self) -> list[int]:
        return self.world.responses(self.txn)

    def in_dialog(self, method: str, body: bytes = b"", *, cseq: int | None = None
                  ) -> tuple[int, Request]:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        final = self.final
        headers = Headers([
            ("Via", f"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-a{self.call_id}-{method}{cseq}"),
            ("From", f'"{self.display}" <sip:{self.caller}@{REALM}>;tag=atag'),
            ("To", final.headers.get("to") or ""),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", "<sip:1001@10.0.0.1:5060>"),
        ])
        if body:
            headers.add("Content-Type", "application/sdp")
        request = Request(method, "sip:switch@192.0.2.1:5060", headers, body)
        if method == "ACK":
            self.world.controller.receive_ack(request)
            return 0, request
        txn = next(self.world._txns)
        assert self.world.controller.receive_in_dialog(txn, request, self.source)
        return txn, request

    def ack(self, body: bytes = b"") -> None:
        assert self.invite is not None
        from switch.sip.headers import cseq as cseq_of
        self.in_dialog("ACK", body, cseq=cseq_of(self.invite).seq)

    def cancel(self) -> None:
        assert self.invite is not None
        headers = self.invite.headers.copy()
        headers.set("CSeq", headers.get("cseq", "").replace("INVITE", "CANCEL"))
        cancel = Request("CANCEL", self.uri, headers)
        self.world.controller.receive_cancel(self.txn, cancel)


# --- tests: routing ------------------------------------------------------------------------


def test_invite_without_credentials_gets_407_with_proxy_authenticate() -> None:
    w = World()
    w.invite(authenticate=False)
    (response,) = w.sip.responses[1]
    assert response.status == 407
    assert "Digest" in (response.headers.get("Proxy-Authenticate") or "")
    assert not w.controller.calls and not w.forks()


def test_basic_call_by_extension() -> None:
    w = World()
    phone = w.invite("1002")
    (fork,) = w.forks()
    # NAT: the INVITE goes to where the REGISTER came from, not to the Contact.
    assert fork.destination == Destination(transport="udp", host="203.0.113.5", port=40000)
    assert fork.request.uri == "sip:1002@10.0.0.2:5062"
    # B2BUA: its own Call-ID, tags and Contact; SDP anchored on the engine.
    assert fork.request.headers.get("call-id") != phone.call_id
    assert fork.request.headers.get("contact") == "<sip:switch@192.0.2.1:5060>"
    offer_b = parse_sdp(fork.request.body)
    assert offer_b.connection is not None and offer_b.connection.address == MEDIA_HOST
    assert offer_b.media[0].port == w.media.legs[w.controller.calls[0].forks[0].id].local_port
    assert offer_b.media[0].formats == ("0", "8", "101")

    w.reply(fork, 180)
    assert phone.statuses[-1] == 180
    w.answer(fork)
    assert phone.final.status == 200
    answer_a = parse_sdp(phone.final.body)
    assert answer_a.connection is not None and answer_a.connection.address == MEDIA_HOST
    assert answer_a.media[0].formats == ("0", "101")
    assert phone.final.headers.get("contact") == "<sip:switch@192.0.2.1:5060>"
    # The callee's 2xx is ACKed straight away (§13.2.2.4), to its source address.
    (ack,) = w.sip.acks()
    assert ack.headers.get("via", "").startswith("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK")
    phone.ack()

    (call,) = w.controller.calls
    assert call.state is CallState.ANSWERED
    caller, callee = call.caller, call.forks[0]
    assert caller is not None and caller.state is callee.state is LegState.CONNECTED
    assert w.media.bridges[caller.id] == callee.id
    assert w.media.configs[caller.id].remote == ("10.0.0.1", 4000)
    assert w.media.configs[callee.id].remote == ("10.0.0.2", 5000)
    assert w.media.configs[callee.id].telephone_event_pt == 101
    assert w.media.configs[callee.id].direction == "sendrecv"
    (view,) = w.controller.list_calls()
    assert view.state == "answered"
    assert [(p.extension_or_number, p.state) for p in view.parties] == [
        ("1001", "connected"), ("1002", "connected")]


def test_basic_call_by_number_with_and_without_plus() -> None:
    for dialed in ("+14155550102", "14155550102"):
        w = World()
        phone = w.invite(dialed)
        (fork,) = w.forks()
        assert fork.request.uri == "sip:1002@10.0.0.2:5062"
        w.answer(fork)
        assert phone.final.status == 200


def test_caller_id_comes_from_the_user_record() -> None:
    w = World()
    w.invite("1002", display="The Boss")
    (fork,) = w.forks()
    headers = fork.request.headers
    assert headers.get("from", "").startswith('"Alice" <sip:1001@switch.local>;tag=')
    assert headers.get("p-asserted-identity") == '"Alice" <sip:1001@switch.local>'
    assert "Boss" not in str(headers.get("from"))


def test_unknown_target_404() -> None:
    w = World()
    phone = w.invite("9999")
    assert phone.final.status == 404
    assert not w.forks() and not w.controller.calls
    record = w.records.last(w.call_id())
    assert (record.result, record.cause) == ("failed", "not_found")


def test_unregistered_target_480() -> None:
    w = World()
    phone = w.invite("1003")
    assert phone.final.status == 480
    assert w.records.last(w.call_id()).cause == "not_registered"


@pytest.mark.parametrize(("status", "result"), [(486, "busy"), (603, "busy"),
                                                (500, "failed")])
def test_callee_refusal_is_passed_back(status: int, result: str) -> None:
    w = World()
    phone = w.invite()
    (fork,) = w.forks()
    w.reply(fork, status)
    assert phone.final.status == status
    assert w.records.last(w.call_id()).result == result
    assert w.media.legs == {}                        # every port returned
    sample = w.metrics.registry.get_sample_value("switch_calls_total", {"result": result})
    assert sample == 1.0


def test_no_common_codec_488() -> None:
    w = World()
    phone = w.invite(body=G729_ONLY)
    assert phone.final.status == 488
    assert not w.forks()


def test_callee_answering_without_usable_format_488() -> None:
    w = World()
    phone = w.invite()
    (fork,) = w.forks()
    w.reply(fork, 488)
    assert phone.final.status == 488


def test_ring_timeout_408_and_cancel() -> None:
    w = World(ring_timeout=20)
    phone = w.invite()
    (fork,) = w.forks()
    w.reply(fork, 180)
    w.clock.advance(19.9)
    assert phone.statuses == [180]
    w.clock.advance(0.2)
    assert phone.final.status == 408
    (cancel,) = w.sent("CANCEL")
    assert cancel.destination == fork.destination
    assert cancel.request.headers.get("via") == fork.request.headers.get("via")
    w.reply(fork, 487)
    assert w.records.last(w.call_id()).cause == "ring_timeout"
    assert w.records.last(w.call_id()).result == "no_answer"


def test_caller_cancel_cancels_the_forks_and_gets_487() -> None:
    w = World()
    w.bindings["1002"].append(binding("1002", "sip:1002@10.0.0.3:5062", "10.0.0.3", 5062))
    phone = w.invite()
    forks = w.forks()
    assert len(forks) == 2
    for fork in forks:
        w.reply(fork, 180)
    phone.cancel()
    assert phone.final.status == 487
    assert len(w.sent("CANCEL")) == 2
    assert w.records.last(w.call_id()).result == "cancelled"
    assert w.bus.types()[-1] == "call.ended"


def test_parallel_fork_first_answer_wins_other_cancelled() -> None:
    w = World()
    w.bindings["1002"].append(binding("1002", "sip:1002@10.0.0.3:5062", "10.0.0.3", 5062))
    phone = w.invite()
    first, second = w.forks()
    assert first.request.headers.get("call-id") != second.request.headers.get("call-id")
    w.reply(first, 180)
    w.reply(second, 180, to_tag="ctag")
    w.answer(second, to_tag="ctag")
    assert phone.final.status == 200
    (cancel,) = w.sent("CANCEL")
    assert cancel.request.headers.get("call-id") == first.request.headers.get("call-id")
    # The first fork answers anyway (crossed the CANCEL): ACK and BYE it (§9.1).
    w.answer(first)
    (bye,) = w.sent("BYE")
    assert bye.request.headers.get("call-id") == first.request.headers.get("call-id")
    assert w.controller.calls[0].state is CallState.ANSWERED


def test_all_forks_fail_best_response_wins() -> None:
    w = World()
    w.bindings["1002"].append(binding("1002", "sip:1002@10.0.0.3:5062", "10.0.0.3", 5062))
    phone = w.invite()
    first, second = w.forks()
    w.reply(first, 486)
    assert not [r for r in phone.statuses if r >= 200]
    w.reply(second, 603, to_tag="ctag")
    assert phone.final.status == 603


def test_fork_timeout_counts_as_408() -> None:
    w = World()
    phone = w.invite()
    (fork,) = w.forks()
    w.controller.transaction_timed_out(fork.txn, "INVITE", "B")
    assert phone.final.status == 408


# --- tests: ending ------------------------------------------------------------------------------


def test_bye_from_caller_byes_callee() -> None:
    w = World()
    phone, fork, ok = w.established()
    txn, _ = phone.in_dialog("BYE")
    assert w.responses(txn) == [200]
    (bye,) = w.sent("BYE")
    assert bye.request.headers.get("call-id") == fork.request.headers.get("call-id")
    assert bye.destination == fork.destination
    assert not w.controller.calls
    record = w.records.last(w.call_id())
    assert (record.result, record.cause) == ("answered", "caller_bye")
    assert record.answered_at is not None and record.ended_at is not None
    assert w.media.legs == {}


def test_bye_from_callee_byes_caller() -> None:
    w = World()
    phone, fork, ok = w.established()
    txn, _ = w.callee_request(fork, ok, "BYE", 1)
    assert w.responses(txn) == [200]
    (bye,) = w.sent("BYE")
    assert bye.request.headers.get("call-id") == phone.call_id
    assert bye.destination == Destination(transport="udp", host="10.0.0.1", port=5060)
    assert w.records.last(w.call_id()).cause == "callee_bye"
    # The BYE's 200 ends the caller's session; the leg goes after the linger time.
    w.controller.receive_response(bye.txn, make_response(bye.request, 200))
    w.clock.advance(60)
    assert w.controller.leg_count == 0


def test_unknown_dialog_is_not_ours() -> None:
    w = World()
    phone, fork, ok = w.established()
    headers = Headers([("Via", "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-x"),
                       ("From", "<sip:x@y>;tag=1"), ("To", "<sip:y@z>;tag=nope"),
                       ("Call-ID", "nope"), ("CSeq", "1 BYE")])
    assert not w.controller.receive_in_dialog(99, Request("BYE", "sip:y@z", headers),
                                              phone.source)


# --- tests: hold / resume ------------------------------------------------------------------------


def test_hold_and_resume_from_caller_propagate() -> None:
    w = World()
    phone, fork, ok = w.established()
    (call,) = w.controller.calls
    callee = call.forks[0]
    txn, _ = phone.in_dialog("INVITE", _hold(OFFER, b"sendonly", b"2"))
    (reinvite,) = [s for s in w.sent("INVITE") if s is not fork]
    # The holding phone stops receiving at once, before the other side answers.
    assert w.media.configs[call.caller.id].direction == "recvonly"  # type: ignore[union-attr]
    offer_b = parse_sdp(reinvite.request.body)
    assert offer_b.media_direction(0).value == "sendonly"
    assert offer_b.origin.sess_version > parse_sdp(fork.request.body).origin.sess_version
    w.reply(reinvite, 200, body=_hold(ANSWER, b"recvonly", b"3"))
    assert w.responses(txn)[-1] == 200
    answer_a = parse_sdp(w.sip.responses[txn][-1].body)
    assert answer_a.media_direction(0).value == "recvonly"
    assert w.media.configs[callee.id].direction == "sendonly"
    assert w.media.configs[call.caller.id].direction == "recvonly"  # type: ignore[union-attr]
    # Held: no media timeout hangup for the silent caller.
    w.controller.media_timed_out(call.caller.id)  # type: ignore[union-attr]
    assert w.controller.calls
    phone.in_dialog("ACK", cseq=phone.cseq)       # the re-INVITE's ACK (its CSeq)
    # Resume.
    txn, _ = phone.in_dialog("INVITE", _hold(OFFER, b"sendrecv", b"3"))
    second = [s for s in w.sent("INVITE") if s is not fork][-1]
    assert parse_sdp(second.request.body).media_direction(0).value == "sendrecv"
    w.reply(second, 200, body=_hold(ANSWER, b"sendrecv", b"4"))
    assert w.responses(txn)[-1] == 200
    assert w.media.configs[callee.id].direction == "sendrecv"


def test_hold_from_callee_with_legacy_zero_address() -> None:
    w = World()
    phone, fork, ok = w.established()
    held = _hold(ANSWER, b"sendrecv", b"3").replace(b"c=IN IP4 10.0.0.2", b"c=IN IP4 0.0.0.0")
    txn, _ = w.callee_request(fork, ok, "INVITE", 1, held)
    reinvite = [s for s in w.sent("INVITE") if s is not fork][-1]
    assert reinvite.request.headers.get("call-id") == phone.call_id
    # RFC 3264 §8.4: c=0.0.0.0 is hold; it reaches the caller as a=sendonly.
    assert parse_sdp(reinvite.request.body).media_direction(0).value == "sendonly"
    w.reply(reinvite, 200, body=_hold(OFFER, b"recvonly", b"2"))
    assert w.responses(txn)[-1] == 200


def test_reinvite_while_peer_busy_gets_491() -> None:
    w = World()
    phone, fork, ok = w.established()
    phone.in_dialog("INVITE", _hold(OFFER, b"sendonly", b"2"))
    # The callee re-INVITEs too before answering ours: glare on our side of B.
    txn, _ = w.callee_request(fork, ok, "INVITE", 1, _hold(ANSWER, b"sendonly", b"3"))
    assert w.responses(txn) == [491]


def test_media_timeout_hangs_up() -> None:
    w = World()
    phone, fork, ok = w.established()
    (call,) = w.controller.calls
    w.controller.media_timed_out(call.forks[0].id)
    assert not w.controller.calls
    assert w.records.last(call.id).cause == "media_timeout"
    assert len(w.sent("BYE")) == 2


# --- tests: edges --------------------------------------------------------------------------


def test_events_metrics_and_records() -> None:
    w = World()
    phone, fork, ok = w.established()
    (call,) = w.controller.calls
    assert w.bus.types() == ["call.created", "call.answered"]
    created = w.bus.events[0][1]
    assert created["call_id"] == call.id and created["caller"] == "1001"
    assert w.metrics.registry.get_sample_value("switch_calls_active") == 1.0
    assert w.metrics.registry.get_sample_value("switch_call_setup_seconds_count") == 1.0
    phone.in_dialog("BYE")
    assert w.bus.types()[-1] == "call.ended"
    ended = w.bus.events[-1][1]
    assert ended["result"] == "answered" and ended["cause"] == "caller_bye"
    assert {p["extension_or_number"] for p in ended["parties"]} == {"1001", "1002"}  # type: ignore[attr-defined]
    assert w.metrics.registry.get_sample_value("switch_calls_active") == 0.0
    assert w.metrics.registry.get_sample_value("switch_calls_total",
                                               {"result": "answered"}) == 1.0
    record = w.records.last(call.id)
    assert record.caller == "1001" and record.callee == "1002" and record.dialed == "1002"
    assert [p.role for p in record.parties] == ["caller", "callee"]


async def test_api_hang_up_and_refusals() -> None:
    w = World()
    phone, fork, ok = w.established()
    (call,) = w.controller.calls
    with pytest.raises(NotImplementedYet):
        await w.controller.transfer(call.id, by="1001", kind="blind", target="1003")
    with pytest.raises(NotFoundError):
        await w.controller.hang_up("nope")
    await w.controller.hang_up(call.id)
    assert {b.request.headers.get("call-id") for b in w.sent("BYE")} == {
        phone.call_id, fork.request.headers.get("call-id")}
    with pytest.raises(NotFoundError):
        await w.controller.transfer(call.id, by="1001", kind="blind", target="1003")
    assert w.records.last(call.id).cause == "api_hangup"


async def test_transfer_of_a_ringing_call_is_a_conflict() -> None:
    w = World()
    w.invite()
    (call,) = w.controller.calls
    with pytest.raises(ConflictError):
        await w.controller.transfer(call.id, by="1001", kind="blind", target="1003")


def test_max_calls_503() -> None:
    w = World(max_calls=1)
    w.invite()
    phone = w.invite()
    assert phone.final.status == 503


def test_media_unavailable_503() -> None:
    w = World()
    w.media.fail = True
    phone = w.invite()
    assert phone.final.status == 503


def test_crash_in_one_call_leaves_the_others_alone() -> None:
    w = World()
    first, fork1, ok1 = w.established()
    w.bindings["1003"] = [binding("1003", "sip:1003@10.0.0.3:5062", "10.0.0.3", 5062)]
    second = w.invite("1003", call_id="second@10.0.0.1")
    fork2 = w.forks()[-1]
    broken = w.controller.calls[0]
    assert broken.caller is not None

    def explode(*args: object, **kwargs: object) -> object:
        raise RuntimeError("injected")

    broken.caller.session.receive_request = explode  # type: ignore[method-assign]
    with capture_logs(processors=[merge_contextvars, add_call_id]) as logs:
        txn, _ = first.in_dialog("BYE")
    assert any(e["event"] == "call.internal_error" and e.get("call_id") == broken.id
               for e in logs)
    assert w.metrics.registry.get_sample_value("switch_call_errors_total") == 1.0
    assert w.records.last(broken.id).cause == "internal_error"
    assert w.responses(txn) == [500]           # the request that hit the bug
    assert len(w.sent("BYE")) == 2             # both legs of the broken call were hung up
    # The other call goes on.
    w.answer(fork2, to_tag="ctag")
    assert second.final.status == 200
    assert [c.id for c in w.controller.calls] != [broken.id]
    assert w.controller.calls[0].state is CallState.ANSWERED


async def test_shutdown_byes_every_call_and_refuses_new_ones() -> None:
    w = World()
    phone, fork, ok = w.established()
    ringing = w.invite("1002", call_id="ringing@10.0.0.1")
    await w.controller.shutdown(0.01)
    byes = w.sent("BYE")
    assert {b.request.headers.get("call-id") for b in byes} == {
        phone.call_id, fork.request.headers.get("call-id")}
    assert ringing.final.status == 503
    late = w.invite("1002", authenticate=False, call_id="late@10.0.0.1")
    assert late.statuses == [503]


def test_late_offer_is_relayed_through_the_ack() -> None:
    w = World()
    phone = w.invite(body=b"")
    (fork,) = w.forks()
    assert not fork.request.body
    w.answer(fork, body=ANSWER)                    # the callee's 2xx carries the offer
    assert phone.final.status == 200
    offer_a = parse_sdp(phone.final.body)
    assert offer_a.connection is not None and offer_a.connection.address == MEDIA_HOST
    assert not w.sip.acks()                         # waits for the caller's answer
    phone.ack(OFFER.replace(b"m=audio 4000 RTP/AVP 0 8 101", b"m=audio 4000 RTP/AVP 0 101"))
    (ack,) = w.sip.acks()
    answer_b = parse_sdp(ack.body)
    assert answer_b.media[0].formats == ("0", "101")


# --- tests: leg operations (the API transfers build on) ----------------------------------


def test_hold_resume_and_rebridge_a_leg() -> None:
    w = World()
    phone, fork, ok = w.established()
    (call,) = w.controller.calls
    callee, caller = call.forks[0], call.caller
    assert caller is not None
    w.controller.hold(callee)
    assert call.peer(callee) is None and callee.id not in w.media.bridges
    reinvite = [s for s in w.sent("INVITE") if s is not fork][-1]
    assert parse_sdp(reinvite.request.body).media_direction(0).value == "sendonly"
    w.reply(reinvite, 200, body=_hold(ANSWER, b"recvonly", b"3"))
    assert w.media.configs[callee.id].direction == "sendonly"
    # A phone that re-INVITEs while held by us stays held (we answer sendonly at most).
    txn, _ = w.callee_request(fork, ok, "INVITE", 1, _hold(ANSWER, b"sendrecv", b"4"))
    assert parse_sdp(w.sip.responses[txn][-1].body).media_direction(0).value == "sendonly"
    w.callee_request(fork, ok, "ACK", 1)
    w.controller.resume(callee)
    second = [s for s in w.sent("INVITE") if s is not fork][-1]
    assert parse_sdp(second.request.body).media_direction(0).value == "sendrecv"
    w.reply(second, 200, body=_hold(ANSWER, b"sendrecv", b"5"))
    w.controller.bridge(caller, callee)
    assert w.media.bridges[caller.id] == callee.id
    assert w.media.configs[callee.id].direction == "sendrecv"
    w.controller.hang_up_leg(callee)
    with pytest.raises(ConflictError):
        w.controller.bridge(caller, callee)          # an ended leg cannot be bridged


def test_hold_while_an_exchange_is_pending_is_a_conflict() -> None:
    w = World()
    phone, fork, ok = w.established()
    (call,) = w.controller.calls
    phone.in_dialog("INVITE", _hold(OFFER, b"sendonly", b"2"))   # relayed, unanswered
    with pytest.raises(ConflictError):
        w.controller.hold(call.forks[0])


def test_remote_address_of_the_other_family_is_left_to_latching() -> None:
    w = World()
    phone = w.invite(body=OFFER.replace(b"c=IN IP4 10.0.0.1", b"c=IN IP6 fd00::2"))
    (fork,) = w.forks()
    w.answer(fork)
    (call,) = w.controller.calls
    assert call.caller is not None
    assert w.media.configs[call.caller.id].remote is None
    assert w.media.configs[call.forks[0].id].remote == ("10.0.0.2", 5000)
    assert phone.final.status == 200


def test_2xx_to_caller_is_retransmitted_until_acked_then_bye() -> None:
    w = World()
    phone = w.invite()
    (fork,) = w.forks()
    w.answer(fork)
    assert phone.statuses.count(200) == 1
    w.clock.advance(0.6)                      # T1: the first retransmission (§13.3.1.4)
    assert phone.statuses.count(200) == 2
    w.clock.advance(1.1)                      # 2*T1 later: the second
    assert phone.statuses.count(200) == 3
    w.clock.advance(40)                       # 64*T1 without an ACK: the call ends
    assert not w.controller.calls
    byes = {b.request.headers.get("call-id") for b in w.sent("BYE")}
    assert byes == {phone.call_id, fork.request.headers.get("call-id")}
    assert w.records.last(w.call_id()).cause == "caller_ack_timeout"


def test_legs_of_one_phone_share_their_destination_and_the_cache_is_bounded() -> None:
    w = World()
    w.invite("1002")
    w.invite("1002")
    first, second = w.controller.calls
    assert first.caller is not None and second.caller is not None
    # Equal to what a fresh one would be (the same phone), and the same object.
    assert first.caller.destination == second.caller.destination
    assert first.caller.destination is second.caller.destination
    assert first.forks[0].destination is second.forks[0].destination
    assert first.forks[0].destination == Destination(transport="udp", host="203.0.113.5",
                                                     port=40000)
    for port in range(5000):
        assert w.controller._destination("udp", "198.51.100.1", port).port == port
    assert len(w.controller._destinations) <= 4096
