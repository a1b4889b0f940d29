"""RFC 4475 torture messages, one case per file, each with its section's verdict.

The files are the RFC's own encoded archive (tests/vectors/rfc4475/, bytes
exact).  "parse" means an element must accept and process the message (the
interpretation checks below say how); a status means the parser must reject it
and the element answer with that status; "drop" is a malformed *response*,
which no response can be sent for.  Application-level verdicts (416 for an
unknown Request-URI scheme, 420 for an unknown Require, 415, 401) are the UA
core's and are tested with it; here their messages must parse.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.sip.errors import SipError
from switch.sip.headers import contacts, cseq, from_header, to_header, top_via, vias
from switch.sip.message import Request, Response
from switch.sip.parser import parse_message

VECTORS = Path(__file__).parent.parent / "vectors" / "rfc4475"

# file → (RFC 4475 section, expected: "parse" | status code | "drop")
CASES: dict[str, tuple[str, str | int]] = {
    "wsinv.dat": ("3.1.1.1", "parse"),
    "intmeth.dat": ("3.1.1.2", "parse"),
    "esc01.dat": ("3.1.1.3", "parse"),
    "escnull.dat": ("3.1.1.4", "parse"),
    "esc02.dat": ("3.1.1.5", "parse"),
    "lwsdisp.dat": ("3.1.1.6", "parse"),
    "longreq.dat": ("3.1.1.7", "parse"),
    "dblreq.dat": ("3.1.1.8", "parse"),
    "semiuri.dat": ("3.1.1.9", "parse"),
    "transports.dat": ("3.1.1.10", "parse"),
    "mpart01.dat": ("3.1.1.11", "parse"),
    "unreason.dat": ("3.1.1.12", "parse"),
    "noreason.dat": ("3.1.1.13", "parse"),
    "badinv01.dat": ("3.1.2.1", 400),
    "clerr.dat": ("3.1.2.2", 400),
    "ncl.dat": ("3.1.2.3", 400),
    "scalar02.dat": ("3.1.2.4", 400),
    "scalarlg.dat": ("3.1.2.5", "drop"),
    "quotbal.dat": ("3.1.2.6", 400),
    "ltgtruri.dat": ("3.1.2.7", 400),
    "lwsruri.dat": ("3.1.2.8", 400),
    "lwsstart.dat": ("3.1.2.9", 400),
    "trws.dat": ("3.1.2.10", 400),
    # §3.1.2.11: "an element could choose to be liberal ... and ignore the escaped headers".
    "escruri.dat": ("3.1.2.11", "parse"),
    "baddate.dat": ("3.1.2.12", "parse"),
    "regbadct.dat": ("3.1.2.13", "parse"),
    "badaspec.dat": ("3.1.2.14", "parse"),
    "baddn.dat": ("3.1.2.15", "parse"),
    "badvers.dat": ("3.1.2.16", 505),
    "mismatch01.dat": ("3.1.2.17", 400),
    # §3.1.2.18: 501 is preferred, "a 400 (Bad Request) is also acceptable".
    "mismatch02.dat": ("3.1.2.18", 400),
    "bigcode.dat": ("3.1.2.19", "drop"),
    "badbranch.dat": ("3.2.1", "parse"),
    "insuf.dat": ("3.3.1", 400),
    "unkscm.dat": ("3.3.2", "parse"),
    "novelsc.dat": ("3.3.3", "parse"),
    "unksm2.dat": ("3.3.4", "parse"),
    "bext01.dat": ("3.3.5", "parse"),
    "invut.dat": ("3.3.6", "parse"),
    "regaut01.dat": ("3.3.7", "parse"),
    "multi01.dat": ("3.3.8", 400),
    "mcl01.dat": ("3.3.9", 400),
    "bcast.dat": ("3.3.10", "parse"),
    "zeromf.dat": ("3.3.11", "parse"),
    "cparam01.dat": ("3.3.12", "parse"),
    "cparam02.dat": ("3.3.13", "parse"),
    "regescrt.dat": ("3.3.14", "parse"),
    "sdp01.dat": ("3.3.15", "parse"),
    "inv2543.dat": ("3.4.1", "parse"),
}


def test_every_vector_has_a_verdict() -> None:
    assert sorted(p.name for p in VECTORS.glob("*.dat")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rfc4475_verdict(name: str) -> None:
    section, expected = CASES[name]
    data = (VECTORS / name).read_bytes()
    if expected == "parse":
        message = parse_message(data)
        # Parsing is idempotent through our own encoding.
        again = parse_message(message.encode())
        assert type(again) is type(message)
        assert again.body == message.body
        def fields(m: Request | Response) -> list[tuple[str, str]]:
            return [(n, v) for n, v in m.headers if n != "Content-Length"]
        assert fields(again) == fields(message)
    elif expected == "drop":
        with pytest.raises(SipError):
            parse_message(data)
        # It is a response: nothing can be answered to it.
        assert data.startswith(b"SIP/")
    else:
        with pytest.raises(SipError) as info:
            parse_message(data)
        assert info.value.status == expected, f"RFC 4475 §{section}"
        assert not data.startswith(b"SIP/")


def _load(name: str) -> Request | Response:
    return parse_message((VECTORS / name).read_bytes())


def test_wsinv_interpretation() -> None:
    """§3.1.1.1: LWS, folding, compact forms and odd case all resolve."""
    msg = _load("wsinv.dat")
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert to_header(msg).tag == "1918181833n"
    assert from_header(msg).display == 'J Rosenberg \\"'
    assert from_header(msg).tag == "98asjd8"
    assert cseq(msg).seq == 9 and cseq(msg).method == "INVITE"
    assert msg.headers.get("max-forwards") == "0068"
    assert [v.transport for v in vias(msg)] == ["UDP", "TCP", "UDP"]
    assert [v.host for v in vias(msg)] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert [v.branch for v in vias(msg)] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert msg.headers.get("call-id") == "wsinv.ndaksdj@192.0.2.1"
    (contact,) = contacts(msg)
    assert contact.display == 'Quoted string ""'
    assert contact.param("newparam") == "newvalue" and contact.param("q") == "0.33"
    assert msg.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert len(msg.body) == int(msg.headers.get("content-length") or 0)


def test_dblreq_ignores_trailing_octets() -> None:
    """§3.1.1.8: only the first message of the datagram counts."""
    msg = _load("dblreq.dat")
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.body == b""


def test_mpart_body_kept_intact() -> None:
    """§3.1.1.11: the multipart body is passed on byte for byte."""
    data = (VECTORS / "mpart01.dat").read_bytes()
    msg = parse_message(data)
    length = int(msg.headers.get("content-length") or 0)
    assert len(msg.body) == length
    assert data.endswith(msg.body) or msg.body in data
    assert msg.headers.get("content-type", "").startswith("multipart/mixed")


def test_unusual_reason_phrases() -> None:
    unreason = _load("unreason.dat")
    assert isinstance(unreason, Response) and unreason.status == 200
    assert "простое" in unreason.reason
    noreason = _load("noreason.dat")
    assert isinstance(noreason, Response) and noreason.status == 100 and noreason.reason == ""


def test_badbranch_is_rfc2543_style() -> None:
    """§3.2.1: no magic cookie; the transaction layer falls back to RFC 2543 matching."""
    msg = _load("badbranch.dat")
    # The magic cookie alone: no transaction identifier after it.
    assert top_via(msg).branch == "z9hG4bK"


def test_escnull_keeps_escapes() -> None:
    msg = _load("escnull.dat")
    assert "%00" in msg.headers.get("to", "")


def test_register_contact_params() -> None:
    for name in ("cparam01.dat", "cparam02.dat"):
        msg = _load(name)
        assert contacts(msg), name


def test_semiuri_user_part() -> None:
    msg = _load("semiuri.dat")
    assert isinstance(msg, Request)
    assert msg.uri == "sip:user;par=u%40example.net@example.com"
