"""The UAS core's RFC 3261 §8.2 checks, including RFC 4475's application-level verdicts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from switch.sip.core import CoreConfig, UasCore
from switch.sip.headers import tag_of
from switch.sip.message import Request, Response, make_response
from switch.sip.parser import parse_message

VECTORS = Path(__file__).parent.parent / "vectors" / "rfc4475"
_counter = itertools.count()


def _core() -> UasCore:
    return UasCore(CoreConfig(server_name="switch-test"), lambda: f"t{next(_counter)}")


def _request(name: str) -> Request:
    msg = parse_message((VECTORS / name).read_bytes())
    assert isinstance(msg, Request)
    return msg


def _answer(core: UasCore, request: Request) -> Response:
    response = core.handle(request, None, 0.0, 0.0)
    assert response is not None
    return response


@pytest.mark.parametrize(("name", "status", "section"), [
    ("unkscm.dat", 416, "3.3.2"),
    ("novelsc.dat", 416, "3.3.3"),
    ("bext01.dat", 420, "3.3.5"),
    ("invut.dat", 415, "3.3.6"),
    ("intmeth.dat", 501, "3.1.1.2"),
    ("zeromf.dat", 200, "3.3.11"),
    ("esc02.dat", 501, "3.1.1.5"),    # RE%47IST%45R is not REGISTER: methods are not unescaped
])
def test_rfc4475_application_verdicts(name: str, status: int, section: str) -> None:
    response = _answer(_core(), _request(name))
    assert response.status == status, f"RFC 4475 §{section}"
    if status == 420:
        assert "nothingSupportsThis" in (response.headers.get("unsupported") or "")
        assert "nothingSupportsThisEither" in (response.headers.get("unsupported") or "")
    if status == 415:
        assert response.headers.get("accept") == "application/sdp"
    if status == 501:
        assert response.headers.get("allow")


def test_options_answer() -> None:
    request = _request("zeromf.dat")
    response = _answer(_core(), request)
    assert response.status == 200
    for name in ("Allow", "Accept", "Supported", "Server"):
        assert name in response.headers
    assert tag_of(response.headers.get("to") or "")
    assert response.headers.get("call-id") == request.headers.get("call-id")


def test_registered_usage_and_allow() -> None:
    core = _core()

    def register(request: Request, source: object, now: float, wall: float) -> Response:
        return make_response(request, 401)

    core.register_usage("REGISTER", register)
    assert _answer(core, _request("regaut01.dat")).status == 401
    assert "REGISTER" in core.allow


def test_ack_never_answered_and_bye_outside_dialog() -> None:
    core = _core()
    base = _request("zeromf.dat")
    ack = Request("ACK", base.uri, base.headers.copy())
    ack.headers.set("CSeq", "1 ACK")
    assert core.handle(ack, None, 0.0, 0.0) is None
    bye = Request("BYE", base.uri, base.headers.copy())
    bye.headers.set("CSeq", "2 BYE")
    assert _answer(core, bye).status == 481


def test_usage_error_becomes_response() -> None:
    from switch.sip.errors import ParseError

    core = _core()

    def broken(request: Request, source: object, now: float, wall: float) -> Response:
        raise ParseError("bad Contact")

    core.register_usage("REGISTER", broken)
    response = _answer(core, _request("regaut01.dat"))
    assert response.status == 400
    assert "bad Contact" in (response.headers.get("warning") or "")


@pytest.mark.parametrize(("supported", "require", "status", "unsupported"), [
    (("path",), "timer", 420, "timer"),
    (("path", "timer"), "timer", None, None),           # session timers on (RFC 4028 §7.1)
    (("path", "timer"), "Timer, 100rel", 420, "100rel"),
    (("path", "timer"), "path", None, None),
])
def test_required_option_tags_follow_the_config(supported: tuple[str, ...], require: str,
                                                status: int | None,
                                                unsupported: str | None) -> None:
    core = UasCore(CoreConfig(server_name="t", supported=supported), lambda: "tag")
    invite = parse_message(
        b"INVITE sip:1002@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-1\r\n"
        b"From: <sip:1001@example.com>;tag=a\r\nTo: <sip:1002@example.com>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        b"Require: " + require.encode() + b"\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(invite, Request)
    refusal = core.check(invite)
    assert (refusal.status if refusal else None) == status
    if refusal is not None:
        assert refusal.headers.get("unsupported") == unsupported
    options = parse_message(bytes(invite.encode()).replace(b"INVITE", b"OPTIONS")
                            .replace(b"Require: " + require.encode() + b"\r\n", b""))
    assert isinstance(options, Request)
    answer = core.handle(options, None, 0.0, 0.0)
    assert answer is not None and answer.headers.get("supported") == ", ".join(sorted(supported))
