"""Dialogs (RFC 3261 §12): creation, in-dialog requests, route sets, CSeq checks, the table."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.sip.dialog import (
    TRANSITIONS,
    Dialog,
    DialogId,
    DialogTable,
    Input,
    InvalidTransition,
    OutOfOrderRequest,
    State,
    build_cancel,
    next_hop,
)
from switch.sip.errors import TransactionDoesNotExist
from switch.sip.headers import cseq
from switch.sip.message import Headers, Request, Response, make_response


def invite(*, record_route: tuple[str, ...] = (), uri: str = "sip:bob@example.com",
           number: int = 7) -> Request:
    headers = Headers([
        ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinv"),
        ("From", '"Alice" <sip:alice@example.com>;tag=a1'),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "call-1@10.0.0.1"),
        ("CSeq", f"{number} INVITE"),
        ("Contact", "<sip:alice@10.0.0.1:5060>"),
        ("Max-Forwards", "70"),
    ])
    for value in record_route:
        headers.add("Record-Route", value)
    return Request("INVITE", uri, headers)


def answer(request: Request, status: int = 200, *, tag: str | None = "b1",
           contact: str | None = "<sip:bob@10.0.0.2:5070>",
           record_route: tuple[str, ...] | None = None) -> Response:
    response = make_response(request, status, to_tag=tag)
    rr = record_route if record_route is not None else tuple(
        request.headers.get_all("record-route"))
    for value in rr:
        response.headers.add("Record-Route", value)
    if contact:
        response.headers.add("Contact", contact)
    return response


def in_dialog(method: str, number: int, *, from_tag: str = "a1", to_tag: str = "b1",
              contact: str | None = None) -> Request:
    headers = Headers([
        ("From", f"<sip:alice@example.com>;tag={from_tag}"),
        ("To", f"<sip:bob@example.com>;tag={to_tag}"),
        ("Call-ID", "call-1@10.0.0.1"),
        ("CSeq", f"{number} {method}"),
    ])
    if contact:
        headers.add("Contact", contact)
    return Request(method, "sip:bob@10.0.0.2:5070", headers)


# --- creation ---------------------------------------------------------------------

def test_uac_dialog_from_2xx() -> None:
    request = invite(record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))
    dialog = Dialog.as_uac(request, answer(request))
    assert dialog.state is State.CONFIRMED
    assert dialog.id == DialogId("call-1@10.0.0.1", "a1", "b1")
    # §12.1.2: route set = Record-Route reversed; remote target = Contact.
    assert dialog.route_set == ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")
    assert dialog.remote_target == "sip:bob@10.0.0.2:5070"
    assert dialog.local_cseq == 7
    assert dialog.remote_cseq is None       # empty until the peer sends a request
    assert dialog.local_party.display == "Alice"
    assert not dialog.secure


def test_uac_early_dialog_from_1xx_then_confirmed_recomputes_route_set() -> None:
    request = invite()
    ringing = answer(request, 180, contact=None, record_route=("<sip:p1.example.com;lr>",))
    dialog = Dialog.as_uac(request, ringing)
    assert dialog.state is State.EARLY
    assert dialog.remote_target == "sip:bob@example.com"    # no Contact in the 180 yet
    ok = answer(request, 200, record_route=("<sip:p9.example.com;lr>",))
    dialog.confirm(ok)
    # §13.2.2.4: the route set and remote target are recomputed from the 2xx.
    assert dialog.state is State.CONFIRMED
    assert dialog.route_set == ("<sip:p9.example.com;lr>",)
    assert dialog.remote_target == "sip:bob@10.0.0.2:5070"


def test_response_without_to_tag_creates_no_dialog() -> None:
    request = invite()
    with pytest.raises(Exception) as info:
        Dialog.as_uac(request, answer(request, 180, tag=None))
    assert getattr(info.value, "status", None) == 400


def test_uas_dialog_from_request() -> None:
    request = invite(record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))
    dialog = Dialog.as_uas(request, local_tag="b1", local_contact="<sip:bob@10.0.0.2:5070>")
    assert dialog.state is State.EARLY
    assert dialog.id == DialogId("call-1@10.0.0.1", "b1", "a1")
    # §12.1.1: route set = Record-Route in order; remote CSeq = the request's.
    assert dialog.route_set == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert dialog.remote_target == "sip:alice@10.0.0.1:5060"
    assert dialog.remote_cseq == 7
    assert dialog.local_cseq is None
    assert dialog.next_cseq() == 1


def test_secure_flag_needs_tls_and_sips() -> None:
    request = invite(uri="sips:bob@example.com")
    assert Dialog.as_uas(request, local_tag="b1", local_contact=None,
                         secure_transport=True).secure
    assert not Dialog.as_uas(request, local_tag="b1", local_contact=None).secure
    assert not Dialog.as_uas(invite(), local_tag="b1", local_contact=None,
                             secure_transport=True).secure


# --- building requests (§12.2.1.1) ---------------------------------------------------

def test_request_without_route_set() -> None:
    request = invite()
    dialog = Dialog.as_uac(request, answer(request))
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:bob@10.0.0.2:5070"
    assert "route" not in bye.headers
    assert bye.headers.get("from") == '"Alice" <sip:alice@example.com>;tag=a1'
    assert bye.headers.get("to") == "<sip:bob@example.com>;tag=b1"
    assert bye.headers.get("call-id") == "call-1@10.0.0.1"
    assert bye.headers.get("cseq") == "8 BYE"
    assert "contact" not in bye.headers
    assert next_hop(bye) == "sip:bob@10.0.0.2:5070"


def test_loose_routing() -> None:
    request = invite(record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))
    dialog = Dialog.as_uac(request, answer(request))
    reinvite = dialog.create_request("INVITE", body=b"v=0\r\n")
    assert reinvite.uri == "sip:bob@10.0.0.2:5070"
    assert reinvite.headers.get_all("route") == ["<sip:p2.example.com;lr>",
                                                  "<sip:p1.example.com;lr>"]
    assert reinvite.headers.get("contact") == "<sip:alice@10.0.0.1:5060>"
    assert reinvite.headers.get("content-type") == "application/sdp"
    assert next_hop(reinvite) == "sip:p2.example.com;lr"


def test_strict_routing_fallback() -> None:
    # The first route has no lr: it becomes the Request-URI (without disallowed
    # parameters) and the remote target goes last in Route (§12.2.1.1).
    request = invite(record_route=("<sip:p1.example.com;lr>",
                                   "<sip:p2.example.com;method=INVITE;transport=tcp>"))
    dialog = Dialog.as_uac(request, answer(request))
    bye = dialog.create_request("BYE")
    assert bye.uri == "sip:p2.example.com;transport=tcp"
    assert bye.headers.get_all("route") == ["<sip:p1.example.com;lr>",
                                             "<sip:bob@10.0.0.2:5070>"]


def test_cseq_increments_but_ack_reuses_the_invite_number() -> None:
    request = invite()
    dialog = Dialog.as_uac(request, answer(request))
    ack = dialog.create_ack(7)
    assert ack.headers.get("cseq") == "7 ACK"
    assert dialog.local_cseq == 7
    assert cseq(dialog.create_request("UPDATE")).seq == 8
    assert cseq(dialog.create_request("INFO")).seq == 9
    with pytest.raises(InvalidTransition):
        dialog.create_request("CANCEL")


def test_build_cancel_copies_the_invite() -> None:
    request = invite()
    request.headers.add("Route", "<sip:p1.example.com;lr>")
    cancel = build_cancel(request)
    assert cancel.method == "CANCEL" and cancel.uri == request.uri
    assert cancel.headers.get("cseq") == "7 CANCEL"
    assert cancel.headers.get_all("via") == ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinv"]
    for name in ("from", "to", "call-id", "route"):
        assert cancel.headers.get(name) == request.headers.get(name)


# --- incoming requests (§12.2.2) ------------------------------------------------------

def test_lower_cseq_is_rejected_with_500() -> None:
    dialog = Dialog.as_uas(invite(), local_tag="b1", local_contact=None)
    dialog.confirm()
    dialog.receive_request(in_dialog("INFO", 9, to_tag="b1"))
    assert dialog.remote_cseq == 9
    with pytest.raises(OutOfOrderRequest) as info:
        dialog.receive_request(in_dialog("INFO", 8, to_tag="b1"))
    assert info.value.status == 500
    # ACK and CANCEL carry the INVITE's number and are not checked.
    dialog.receive_request(in_dialog("ACK", 7, to_tag="b1"))
    assert dialog.remote_cseq == 9


def test_uac_remote_cseq_starts_empty() -> None:
    request = invite()
    dialog = Dialog.as_uac(request, answer(request))
    # The callee's first request may use any number, even one below ours.
    dialog.receive_request(in_dialog("BYE", 1, from_tag="b1", to_tag="a1"))
    assert dialog.remote_cseq == 1


def test_request_for_another_dialog_gets_481() -> None:
    dialog = Dialog.as_uas(invite(), local_tag="b1", local_contact=None)
    with pytest.raises(TransactionDoesNotExist) as info:
        dialog.receive_request(in_dialog("BYE", 8, to_tag="zz"))
    assert info.value.status == 481
    dialog.terminate()
    with pytest.raises(TransactionDoesNotExist):
        dialog.receive_request(in_dialog("BYE", 8, to_tag="b1"))


def test_target_refresh() -> None:
    request = invite()
    dialog = Dialog.as_uac(request, answer(request))
    reinvite = dialog.create_request("INVITE")
    dialog.refresh_target(answer(reinvite, contact="<sip:bob@192.0.2.9:5080>"))
    assert dialog.remote_target == "sip:bob@192.0.2.9:5080"
    assert dialog.create_request("BYE").uri == "sip:bob@192.0.2.9:5080"


def test_dialog_ids() -> None:
    request = in_dialog("BYE", 3)
    assert DialogId.of_incoming_request(request) == DialogId("call-1@10.0.0.1", "b1", "a1")
    assert DialogId.of_incoming_request(invite()) is None
    request_invite = invite()
    assert DialogId.of_response(answer(request_invite)) == DialogId(
        "call-1@10.0.0.1", "a1", "b1")
    assert DialogId.of_response(answer(request_invite, 100, tag=None)) is None


def test_dialog_table_lookup_gives_481_for_unknown() -> None:
    table: DialogTable[str] = DialogTable()
    table.add(DialogId("call-1@10.0.0.1", "b1", "a1"), "leg-1")
    assert table.lookup(in_dialog("BYE", 3)) == "leg-1"
    with pytest.raises(TransactionDoesNotExist):
        table.lookup(in_dialog("BYE", 3, to_tag="nope"))
    with pytest.raises(TransactionDoesNotExist):
        table.lookup(invite())
    table.remove(DialogId("call-1@10.0.0.1", "b1", "a1"))
    assert len(table) == 0


# --- the table ------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Input)))
def test_transition_table(state: State, event: Input) -> None:
    dialog = Dialog.as_uas(invite(), local_tag="b1", local_contact=None)
    dialog.state = state
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(InvalidTransition):
            dialog._apply(event)
        assert dialog.state is state
    else:
        dialog._apply(event)
        assert dialog.state is expected


def test_terminated_dialog_sends_nothing() -> None:
    request = invite()
    dialog = Dialog.as_uac(request, answer(request))
    dialog.terminate()
    with pytest.raises(InvalidTransition):
        dialog.create_request("BYE")
    dialog.terminate()          # idempotent


@pytest.mark.parametrize("contact", [
    "<sip:alice@10.0.0.1:5060>",
    '"Al" <SIP:alice@10.0.0.1;transport=UDP>;expires=60',
    "sip:alice@10.0.0.1;ob",
    "*, <sip:a@h>",
    "<sip:a@h>, <sip:b@h>",
])
def test_contact_target_cache_agrees_with_the_parse(contact: str) -> None:
    """The remote target remembered per Contact text is the one the full parse gives."""
    from switch.sip import dialog as dialog_module
    request = invite()
    request.headers.set("Contact", contact)
    expected = dialog_module._first_contact_uri(request)
    dialog_module._TARGETS.clear()
    first = Dialog.as_uas(request, local_tag="b1", local_contact=None).remote_target
    again = Dialog.as_uas(request, local_tag="b2", local_contact=None).remote_target
    assert first == again == (expected or "sip:alice@example.com")


def test_receive_matched_checks_cseq_and_state() -> None:
    dialog = Dialog.as_uas(invite(number=7), local_tag="b1", local_contact=None)
    dialog.confirm()
    bye = in_dialog("BYE", 6)
    with pytest.raises(OutOfOrderRequest):
        dialog.receive_matched(bye)
    dialog.terminate()
    with pytest.raises(TransactionDoesNotExist):
        dialog.receive_matched(in_dialog("BYE", 8))


_PARTY_PIECES = ['"', "<", ">", ";", "=", " ", "\t", "\\", "sip:", "alice", "@", "h.example",
                 ":5060", "tag", ";tag=", "TAG", "a1", "x-Y.z~", "*", "lr", "Bob", ","]


_PIECES = st.lists(st.sampled_from(_PARTY_PIECES), max_size=6).map("".join)
# Mostly well-formed name-addrs and addr-specs (so that the tagged form parses), with
# random pieces between the parts.
_PARTY_VALUES = st.one_of(
    st.lists(st.sampled_from(_PARTY_PIECES), max_size=14).map("".join),
    st.tuples(st.sampled_from(["", '"Al ice" ', "Bob ", " "]), _PIECES,
              st.sampled_from(["<sip:alice@h.example>", "<sip:alice@h.example;lr>",
                               "sip:alice@h.example", "<sip:a@h;tag=in>"]),
              _PIECES, st.sampled_from(["", ";x=1", ";lr", ' ;q="a;tag=b"']),
              st.sampled_from(["", ";tag=a1", ";tag=x-Y.z~", " ;tag=a1", ";tag=a1 ",
                               ";tag = a1", ";Tag=a1", ";tag=a1;tag=b2", ";tag=\"q\""]))
    .map("".join))


@given(_PARTY_VALUES)
@settings(max_examples=1000, deadline=None)
def test_party_parse_agrees_with_the_full_parse(value: str) -> None:
    """The From/To parse that reuses the tag-less rest gives what ``parse_name_addr`` gives."""
    from switch.sip import dialog as dialog_module
    from switch.sip.errors import ParseError
    from switch.sip.headers import parse_name_addr
    request = invite()
    request.headers.set("From", value)
    try:
        expected = parse_name_addr(value)
    except ParseError:
        with pytest.raises(ParseError):
            dialog_module._party(request, "from")
        return
    dialog_module._PARTIES.clear()
    assert dialog_module._party(request, "from") == expected
    assert dialog_module._party(request, "from") == expected      # from the cache


@pytest.mark.parametrize("value", [
    "sipp <sip:sipp@127.0.0.1:5061>;tag=1SIPpTag001",
    '"Alice" <sip:alice@example.com>;tag=a1',
    "<sip:bob@example.com>",
    "sip:bob@example.com;tag=b2",
    "<sip:a@h;tag=inside>;x=1;tag=t",
    "<sip:a@h>;tag=t1;tag=t2",
    "<sip:a@h>;TAG=t",
])
def test_party_parse_examples(value: str) -> None:
    from switch.sip import dialog as dialog_module
    from switch.sip.headers import parse_name_addr
    request = invite()
    request.headers.set("To", value)
    assert dialog_module._party(request, "to") == parse_name_addr(value)
    assert dialog_module._party(request, "to") == parse_name_addr(value)
