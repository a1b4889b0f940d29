"""The sans-I/O endpoint: bytes in, bytes and events out, time passed as ``now``."""

from __future__ import annotations

import pytest

from switch.sip.endpoint import (
    AckReceived,
    CancelReceived,
    Destination,
    Endpoint,
    Event,
    MessageRejected,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    Source,
    TransactionTimedOut,
    TransportErrorOccurred,
)
from switch.sip.errors import TransactionDoesNotExist
from switch.sip.headers import cseq, parse_via, to_header, top_via
from switch.sip.message import Headers, Request, Response, make_response
from switch.sip.parser import parse_message
from switch.sip.transaction import State, TransactionStateError, make_ack, make_cancel

UDP_SRC = Source(transport="udp", host="192.0.2.1", port=5062)
TCP_SRC = Source(transport="tcp", host="192.0.2.1", port=40000, connection_id=3)
PEER = Destination(transport="udp", host="192.0.2.1", port=5062)


def raw(method: str = "OPTIONS", *, branch: str = "z9hG4bK-1", via_host: str = "192.0.2.1",
        via_port: int = 5062, via_params: str = "", to_tag: str = "", cseq_method: str = "",
        call_id: str = "c1", cseq_num: int = 1, transport: str = "UDP",
        extra: str = "") -> bytes:
    branch_param = f";branch={branch}" if branch else ""
    to = f"<sip:bob@example.com>{';tag=' + to_tag if to_tag else ''}"
    return (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via_host}:{via_port}{branch_param}{via_params}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag=a1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq_num} {cseq_method or method}\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def events(endpoint: Endpoint) -> list[Event]:
    out: list[Event] = []
    while (event := endpoint.next_event()) is not None:
        out.append(event)
    return out


def sent(endpoint: Endpoint) -> list[tuple[Destination, Request | Response]]:
    return [(o.destination, parse_message(o.data)) for o in endpoint.datagrams_to_send()]


def run_timers(endpoint: Endpoint, until: float) -> list[tuple[float, Outgoing]]:
    fired: list[tuple[float, Outgoing]] = []
    while (deadline := endpoint.get_timer()) is not None and deadline <= until:
        endpoint.handle_timer(deadline)
        fired.extend((deadline, o) for o in endpoint.datagrams_to_send())
    return fired


def answer(endpoint: Endpoint, status: int, now: float) -> RequestReceived:
    [event] = events(endpoint)
    assert isinstance(event, RequestReceived)
    endpoint.respond(event.transaction_id, make_response(event.request, status, to_tag="t9"),
                     now)
    return event


# --- server side -----------------------------------------------------------------------------


def test_options_round_trip_and_retransmission_absorbed() -> None:
    ep = Endpoint()
    ep.receive(raw(), UDP_SRC, 0.0)
    event = answer(ep, 200, 0.0)
    assert event.source == UDP_SRC
    [(dest, resp)] = sent(ep)
    assert dest == Destination(transport="udp", host="192.0.2.1", port=5062)
    assert isinstance(resp, Response) and resp.status == 200
    ep.receive(raw(), UDP_SRC, 1.0)               # retransmission: same bytes again, no event
    assert events(ep) == []
    [(_, again)] = sent(ep)
    assert again.encode() == resp.encode()
    assert ep.stats.messages[("in", "OPTIONS", 0)] == 2
    assert ep.stats.messages[("out", "OPTIONS", 200)] == 2
    assert ep.get_timer() == 32.0                 # Timer J
    run_timers(ep, 40.0)
    assert ep.transaction_count == 0
    ep.receive(raw(), UDP_SRC, 41.0)              # after J: a new transaction
    assert isinstance(events(ep)[0], RequestReceived)


def test_tcp_reply_on_the_same_connection_and_j_is_zero() -> None:
    ep = Endpoint()
    ep.receive(raw(transport="TCP"), TCP_SRC, 0.0)
    answer(ep, 200, 0.0)
    [(dest, _)] = sent(ep)
    assert dest.connection_id == 3 and dest.transport == "tcp"
    # RFC 3581 §4 applies over TCP as well: 40000 is not 5062, but no rport asked
    assert dest.port == 5062
    assert ep.transaction_count == 0 and ep.get_timer() is None


def test_received_added_when_sent_by_differs_and_reply_to_via_port() -> None:
    ep = Endpoint()
    ep.receive(raw(via_host="pc33.example.com", via_port=5070), UDP_SRC, 0.0)
    event = answer(ep, 200, 0.0)
    via = top_via(event.request)
    assert via.received == "192.0.2.1" and via.rport is None
    [(dest, resp)] = sent(ep)
    assert dest == Destination(transport="udp", host="192.0.2.1", port=5070)   # §18.2.2
    assert top_via(resp).received == "192.0.2.1"


def test_rport_filled_and_reply_to_source_port() -> None:
    ep = Endpoint()
    ep.receive(raw(via_host="10.0.0.7", via_port=5060, via_params=";rport",
                   extra="Via: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKlower\r\n"),
               UDP_SRC, 0.0)
    answer(ep, 200, 0.0)
    [(dest, resp)] = sent(ep)
    assert dest == Destination(transport="udp", host="192.0.2.1", port=5062)   # RFC 3581 §4
    via = top_via(resp)
    assert via.received == "192.0.2.1" and via.rport == "5062"
    assert len(resp.headers.get_list("via")) == 2


def test_rport_alone_still_adds_received() -> None:
    # RFC 3581 §4: received is added even when it equals the sent-by host.
    ep = Endpoint()
    ep.receive(raw(via_params=";rport"), UDP_SRC, 0.0)
    event = answer(ep, 200, 0.0)
    assert top_via(event.request).received == "192.0.2.1"
    assert top_via(event.request).rport == "5062"


def test_malformed_request_with_enough_headers_gets_400_with_warning() -> None:
    ep = Endpoint()
    ep.receive(raw(cseq_method="INVITE"), UDP_SRC, 0.0)    # CSeq method ≠ request method
    [(dest, resp)] = sent(ep)
    assert isinstance(resp, Response) and resp.status == 400
    assert dest == PEER
    warning = resp.headers.get("warning")
    assert warning is not None and "CSeq method" in warning and warning.startswith("399 ")
    assert to_header(resp).tag                     # §8.2.6.2
    [event] = events(ep)
    assert isinstance(event, MessageRejected) and event.status == 400
    assert ep.transaction_count == 0


@pytest.mark.parametrize("data", [
    b"hello world\r\n\r\n",
    b"OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n",
    raw("ACK", cseq_method="INVITE"),              # an ACK is never answered
    b"\x00\xff" * 40,
])
def test_unanswerable_garbage_is_dropped(data: bytes) -> None:
    ep = Endpoint()
    ep.receive(data, UDP_SRC, 0.0)
    assert ep.datagrams_to_send() == []
    [event] = events(ep)
    assert isinstance(event, MessageRejected) and event.status is None


def test_version_not_supported_is_505() -> None:
    ep = Endpoint()
    ep.receive(raw().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), UDP_SRC, 0.0)
    [(_, resp)] = sent(ep)
    assert isinstance(resp, Response) and resp.status == 505


def test_invite_server_trying_final_ack_confirmed() -> None:
    ep = Endpoint()
    ep.receive(raw("INVITE"), UDP_SRC, 0.0)
    [(_, trying)] = sent(ep)
    assert isinstance(trying, Response) and trying.status == 100    # §17.2.1
    event = answer(ep, 486, 0.1)
    [(_, busy)] = sent(ep)
    assert isinstance(busy, Response) and busy.status == 486
    resends = run_timers(ep, 2.0)                                    # Timer G
    assert [t for t, _ in resends] == [0.6, 1.6]
    ack = make_ack(event.request, busy)
    ep.receive(ack.encode(), UDP_SRC, 2.0)
    assert events(ep) == []                                          # absorbed
    assert ep.transaction_state(event.transaction_id) is State.CONFIRMED
    assert run_timers(ep, 100.0) == []                               # G stopped
    assert ep.transaction_count == 0


def test_invite_server_2xx_then_acks() -> None:
    ep = Endpoint()
    ep.receive(raw("INVITE"), UDP_SRC, 0.0)
    event = answer(ep, 200, 0.0)
    ep.datagrams_to_send()
    assert ep.transaction_state(event.transaction_id) is State.ACCEPTED
    ep.receive(raw("INVITE"), UDP_SRC, 0.5)                          # retransmission absorbed
    assert events(ep) == [] and ep.datagrams_to_send() == []
    # ACK with the INVITE's branch: matched in Accepted (RFC 6026 §7.1)
    ep.receive(raw("ACK", to_tag="t9"), UDP_SRC, 0.6)
    [ack1] = events(ep)
    assert isinstance(ack1, AckReceived) and ack1.transaction_id == event.transaction_id
    # ACK with its own branch (§13.2.2.4): no transaction
    ep.receive(raw("ACK", branch="z9hG4bK-ack", to_tag="t9"), UDP_SRC, 0.7)
    [ack2] = events(ep)
    assert isinstance(ack2, AckReceived) and ack2.transaction_id is None


def test_cancel_matches_its_invite_and_gets_200() -> None:
    ep = Endpoint()
    ep.receive(raw("INVITE"), UDP_SRC, 0.0)
    [invite] = events(ep)
    assert isinstance(invite, RequestReceived)
    ep.datagrams_to_send()
    ep.receive(raw("CANCEL"), UDP_SRC, 1.0)
    [cancel] = events(ep)
    assert isinstance(cancel, CancelReceived) and cancel.transaction_id == invite.transaction_id
    [(_, ok)] = sent(ep)
    assert isinstance(ok, Response) and ok.status == 200 and cseq(ok).method == "CANCEL"
    # the TU answers the INVITE 487 (§9.2)
    ep.respond(invite.transaction_id, make_response(invite.request, 487, to_tag="t9"), 1.0)
    [(_, terminated)] = sent(ep)
    assert isinstance(terminated, Response) and terminated.status == 487
    # a retransmitted CANCEL is absorbed by its own transaction
    ep.receive(raw("CANCEL"), UDP_SRC, 1.5)
    assert events(ep) == []
    [(_, ok_again)] = sent(ep)
    assert isinstance(ok_again, Response) and ok_again.status == 200


def test_cancel_without_invite_gets_481() -> None:
    ep = Endpoint()
    ep.receive(raw("CANCEL", branch="z9hG4bK-nothing"), UDP_SRC, 0.0)
    assert events(ep) == []
    [(_, resp)] = sent(ep)
    assert isinstance(resp, Response) and resp.status == 481


def test_rfc2543_matching_without_magic_cookie() -> None:
    ep = Endpoint()
    old = raw("INVITE", branch="")          # RFC 2543 peer: no branch at all
    ep.receive(old, UDP_SRC, 0.0)
    event = answer(ep, 486, 0.0)
    ep.datagrams_to_send()
    ep.receive(old, UDP_SRC, 0.3)            # retransmission: the 486 again, no event
    assert events(ep) == []
    [(_, again)] = sent(ep)
    assert isinstance(again, Response) and again.status == 486
    # ACK for the non-2xx: To tag of the response, same top Via → Confirmed
    ep.receive(raw("ACK", branch="", to_tag="t9", cseq_method="ACK"), UDP_SRC, 0.4)
    assert events(ep) == []
    assert ep.transaction_state(event.transaction_id) is State.CONFIRMED
    # a different Call-ID is a different transaction
    ep.receive(raw("INVITE", branch="", call_id="other"), UDP_SRC, 0.5)
    assert isinstance(events(ep)[0], RequestReceived)


def test_rfc2543_cancel() -> None:
    ep = Endpoint()
    ep.receive(raw("INVITE", branch=""), UDP_SRC, 0.0)
    [invite] = events(ep)
    ep.receive(raw("CANCEL", branch=""), UDP_SRC, 0.5)
    [cancel] = events(ep)
    assert isinstance(cancel, CancelReceived) and cancel.transaction_id == invite.transaction_id


def test_tu_that_never_answers_gets_500_and_an_event() -> None:
    ep = Endpoint()
    ep.receive(raw(), UDP_SRC, 0.0)
    [event] = events(ep)
    assert isinstance(event, RequestReceived)
    fired = run_timers(ep, 32.0)
    assert [t for t, _ in fired] == [32.0]
    resp = parse_message(fired[0][1].data)
    assert isinstance(resp, Response) and resp.status == 500
    [timeout] = events(ep)
    assert timeout == TransactionTimedOut(transaction_id=event.transaction_id,
                                          method="OPTIONS", timer="TU")
    with pytest.raises(TransactionStateError):
        ep.respond(event.transaction_id, make_response(event.request, 200), 33.0)


def test_respond_to_unknown_transaction_raises() -> None:
    ep = Endpoint()
    with pytest.raises(TransactionDoesNotExist):
        ep.respond(42, Response(200), 0.0)


def test_one_bad_tu_action_does_not_break_others() -> None:
    ep = Endpoint()
    ep.receive(raw(branch="z9hG4bK-a"), UDP_SRC, 0.0)
    ep.receive(raw(branch="z9hG4bK-b"), UDP_SRC, 0.0)
    a, b = events(ep)
    assert isinstance(a, RequestReceived) and isinstance(b, RequestReceived)
    ep.respond(a.transaction_id, make_response(a.request, 200, to_tag="x"), 0.0)
    with pytest.raises(TransactionStateError):
        ep.respond(a.transaction_id, make_response(a.request, 200, to_tag="x"), 0.0)
    ep.respond(b.transaction_id, make_response(b.request, 404, to_tag="y"), 0.0)
    assert [r.status for _, r in sent(ep)] == [200, 404]  # type: ignore[union-attr]


# --- client side -----------------------------------------------------------------------------


def options_request() -> Request:
    return Request("OPTIONS", "sip:bob@192.0.2.1:5062", Headers([
        ("From", "<sip:switch@example.com>;tag=s1"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "out-1"),
        ("CSeq", "1 OPTIONS"),
    ]))


def invite_request() -> Request:
    invite = options_request()
    invite.method = "INVITE"
    invite.headers.set("CSeq", "1 INVITE")
    return invite


def reply(ep_out: Outgoing, status: int) -> bytes:
    request = parse_message(ep_out.data)
    assert isinstance(request, Request)
    return make_response(request, status, to_tag="r1").encode()


def test_client_adds_via_retransmits_and_passes_the_final_up_once() -> None:
    ep = Endpoint(via_host="198.51.100.5", via_port=5070)
    tid = ep.send_request(options_request(), PEER, 0.0)
    [first] = ep.datagrams_to_send()
    request = parse_message(first.data)
    via = top_via(request)
    assert via.host == "198.51.100.5" and via.port == 5070 and via.transport == "UDP"
    assert via.branch is not None and via.branch.startswith("z9hG4bK")
    assert via.rport == ""
    assert request.headers.get("max-forwards") == "70"
    resends = run_timers(ep, 2.0)
    assert [t for t, _ in resends] == [0.5, 1.5]                   # Timer E
    assert all(o.data == first.data for _, o in resends)
    ep.receive(reply(first, 200), UDP_SRC, 2.0)
    [event] = events(ep)
    assert isinstance(event, ResponseReceived) and event.transaction_id == tid
    ep.receive(reply(first, 200), UDP_SRC, 2.1)                    # retransmitted final
    assert events(ep) == []
    assert run_timers(ep, 100.0) == []
    assert ep.transaction_count == 0


def test_client_timeout_is_an_event() -> None:
    ep = Endpoint()
    tid = ep.send_request(options_request(), PEER, 0.0)
    run_timers(ep, 100.0)
    assert events(ep) == [TransactionTimedOut(transaction_id=tid, method="OPTIONS", timer="F")]


def test_client_invite_acks_non_2xx_itself() -> None:
    ep = Endpoint()
    invite = invite_request()
    invite.headers.add("Route", "<sip:edge.example.com;lr>")
    tid = ep.send_request(invite, PEER, 0.0)
    [first] = ep.datagrams_to_send()
    ep.receive(reply(first, 180), UDP_SRC, 0.1)
    ep.receive(reply(first, 486), UDP_SRC, 0.2)
    ringing, busy = events(ep)
    assert isinstance(ringing, ResponseReceived) and isinstance(busy, ResponseReceived)
    [(dest, ack)] = sent(ep)
    assert dest == PEER and isinstance(ack, Request) and ack.method == "ACK"
    assert top_via(ack).branch == top_via(parse_message(first.data)).branch
    assert to_header(ack).tag == "r1" and cseq(ack).method == "ACK"
    assert ack.headers.get_all("route") == ["<sip:edge.example.com;lr>"]
    ep.receive(reply(first, 486), UDP_SRC, 0.3)
    assert events(ep) == []
    assert [m.method for _, m in sent(ep)] == ["ACK"]  # type: ignore[union-attr]
    assert ep.transaction_state(tid) is State.COMPLETED


def test_client_cancel_has_its_own_transaction() -> None:
    ep = Endpoint()
    invite = invite_request()
    invite_id = ep.send_request(invite, PEER, 0.0)
    [first] = ep.datagrams_to_send()
    ep.receive(reply(first, 180), UDP_SRC, 0.1)
    cancel_id = ep.send_request(make_cancel(invite), PEER, 0.2)
    [cancel_out] = ep.datagrams_to_send()
    ep.receive(reply(cancel_out, 200), UDP_SRC, 0.3)
    ep.receive(reply(first, 487), UDP_SRC, 0.4)
    got = [e for e in events(ep) if isinstance(e, ResponseReceived)]
    assert [(e.transaction_id, e.response.status) for e in got] == [
        (invite_id, 180), (cancel_id, 200), (invite_id, 487)]


def test_stray_response_is_dropped_and_counted() -> None:
    ep = Endpoint()
    ep.receive(make_response(parse_message(raw()), 200).encode(), UDP_SRC, 0.0)  # type: ignore[arg-type]
    assert events(ep) == [] and ep.datagrams_to_send() == []
    assert ep.stats.stray_responses == 1


def test_transport_error_is_reported() -> None:
    ep = Endpoint()
    tid = ep.send_request(options_request(), PEER, 0.0)
    ep.handle_transport_error(tid, 0.1)
    assert events(ep) == [TransportErrorOccurred(transaction_id=tid, method="OPTIONS")]
    assert ep.transaction_count == 0


def test_ack_is_not_a_transaction() -> None:
    ep = Endpoint()
    ack = options_request()
    ack.method = "ACK"
    with pytest.raises(ValueError):
        ep.send_request(ack, PEER, 0.0)
    ep.send_stateless(ack, PEER)
    assert len(ep.datagrams_to_send()) == 1


def test_get_timer_is_the_earliest_deadline_of_all_transactions() -> None:
    ep = Endpoint()
    ep.receive(raw(branch="z9hG4bK-late"), UDP_SRC, 10.0)   # TU guard at 42
    ep.send_request(options_request(), PEER, 20.0)            # Timer E at 20.5
    assert ep.get_timer() == 20.5
    ep.handle_timer(19.0)                                     # early: nothing fires
    assert ep.datagrams_to_send()[1:] == []
    samples = dict(((d, m, s), v) for d, m, s, v in ep.stats.samples())
    assert samples[("in", "OPTIONS", "")] == 1


@pytest.mark.parametrize(("via", "transport", "expected"), [
    ("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1", "udp", ("10.0.0.1", 5070)),
    ("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-1", "udp", ("10.0.0.1", 5060)),
    ("SIP/2.0/TLS 10.0.0.1;branch=z9hG4bK-1", "tcp", ("10.0.0.1", 5061)),
    ("SIP/2.0/UDP 10.0.0.1:5070;rport=4000;received=192.0.2.9;branch=x", "udp",
     ("192.0.2.9", 4000)),
    ("SIP/2.0/UDP 10.0.0.1:5070;RPORT=4000;Received=192.0.2.9;rport=1;received=1.1.1.1",
     "udp", ("192.0.2.9", 4000)),                         # the first of each, any case
    ("SIP/2.0/UDP 10.0.0.1:5070;rport;received=192.0.2.9", "udp", ("192.0.2.9", 5070)),
    ("SIP/2.0/UDP 10.0.0.1:5070;maddr=239.1.1.1;received=192.0.2.9", "udp",
     ("239.1.1.1", 5070)),                                # §18.2.2: maddr first over UDP
    ("SIP/2.0/TCP 10.0.0.1:5070;maddr=239.1.1.1;received=192.0.2.9", "tcp",
     ("192.0.2.9", 5070)),
    ("SIP/2.0/UDP [2001:db8::1]:5070;branch=x", "udp", ("2001:db8::1", 5070)),
])
def test_reply_destination(via: str, transport: str, expected: tuple[str, int]) -> None:
    endpoint = Endpoint(via_host="127.0.0.1", via_port=5060)
    source = Source(transport=transport, host="198.51.100.7", port=9999)
    destination = endpoint._reply_destination(parse_via(via), source)
    assert (destination.host, destination.port) == expected


# --- the driver's re-arm hint -------------------------------------------------------------


def test_earliest_scheduled_is_never_later_than_a_new_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The driver asks get_timer again only when earliest_scheduled is before its
    # armed timer: it must be a lower bound of every deadline scheduled since,
    # also when the pending list overflows onto the heap.
    monkeypatch.setattr("switch.sip.endpoint._MAX_PENDING", 3)
    endpoint = Endpoint()
    assert endpoint.get_timer() is None and endpoint.earliest_scheduled == float("inf")
    endpoint.send_request(Request("OPTIONS", "sip:bob@example.com", _request_headers(0)),
                          PEER, 0.0)                  # E at 0.5, F at 32
    assert endpoint.earliest_scheduled == 0.5
    for n in range(1, 6):                             # later starts overflow the list
        endpoint.send_request(Request("OPTIONS", "sip:bob@example.com", _request_headers(n)),
                              PEER, 10.0 + n)
        assert endpoint.earliest_scheduled == 0.5
    assert endpoint.get_timer() == 0.5
    assert endpoint.earliest_scheduled == float("inf")
    endpoint.send_request(Request("OPTIONS", "sip:bob@example.com", _request_headers(9)),
                          PEER, 0.25)
    assert endpoint.earliest_scheduled == 0.75 and endpoint.get_timer() == 0.5


def _request_headers(n: int) -> Headers:
    headers = Headers()
    headers.add("From", f"<sip:alice@example.com>;tag=f{n}")
    headers.add("To", "<sip:bob@example.com>")
    headers.add("Call-ID", f"hint-{n}")
    headers.add("CSeq", f"{n + 1} OPTIONS")
    return headers


@pytest.mark.parametrize("via_params", [
    ";rport", ";rport;maddr=192.0.2.77", ";received=198.51.100.1;rport", ";rport=7777",
    ";maddr=192.0.2.77", ";RPORT;foo=bar", "",
])
@pytest.mark.parametrize("via_host", ["192.0.2.1", "192.0.2.9", "host.example.com"])
def test_stamp_via_destination_is_what_the_stamped_via_says(via_params: str,
                                                             via_host: str) -> None:
    # _stamp_via returns the reply address without re-reading the Via it stamped
    # in the usual rport case: it must be what reply_destination reads from it.
    endpoint = Endpoint()
    request = parse_message(raw(via_params=via_params, via_host=via_host))
    assert isinstance(request, Request)
    destination = endpoint._stamp_via(request, top_via(request), UDP_SRC)
    reparsed = parse_message(request.encode())
    assert isinstance(reparsed, Request)
    assert destination == endpoint.reply_destination(reparsed, UDP_SRC)


def test_timer_heap_holds_numbers_not_terminated_transactions() -> None:
    # Timer C (3 min) is cancelled by the 2xx and Timer M ends the transaction
    # after 32 s: C's dead heap entry must not keep the transaction alive.
    ep = Endpoint()
    invite = invite_request()
    tid = ep.send_request(invite, PEER, 0.0)
    [first] = ep.datagrams_to_send()
    ep.receive(reply(first, 180), UDP_SRC, 0.1)
    assert ep.get_timer() == 180.1                  # C on the heap
    ep.receive(reply(first, 200), UDP_SRC, 0.2)
    assert ep.transaction_state(tid) is State.ACCEPTED
    assert ep.get_timer() == 32.2                   # M
    ep.handle_timer(33.0)
    assert ep.transaction_state(tid) is None and ep.transaction_count == 0
    assert ep._heap and all(type(x) in (float, int) for entry in ep._heap for x in entry)
    assert ep.get_timer() is None
