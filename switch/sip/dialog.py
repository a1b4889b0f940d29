"""SIP dialogs (RFC 3261 §12), sans-I/O.

Theory of operation
-------------------
A dialog is the peer-to-peer relationship a 1xx-with-tag or a 2xx to an
INVITE sets up between two user agents.  It is identified by Call-ID, local
tag and remote tag (§12), and carries what is needed to build and check
requests inside it (§12.1.1, §12.1.2):

* local/remote URI (From/To of the dialog-creating request, with the tags),
* remote target (the peer's Contact; replaced by target refreshes, §12.2),
* route set (Record-Route: as received for the UAS, reversed for the UAC),
* local sequence number (the next request we send takes ``local_cseq + 1``)
  and remote sequence number (the last CSeq the peer used; empty for a UAC
  until the peer sends its first request, §12.1.2),
* the secure flag (TLS plus a ``sips:`` Request-URI, §12.1.1).

The dialog's life is a three-state machine (``State`` × ``Input`` →
``State``, the table below; an input the table does not list raises
``InvalidTransition``)::

               CONFIRM (2xx)
      EARLY ──────────────────▶ CONFIRMED
        │  ◀┐ SEND/RECEIVE/         │ ◀┐ SEND/SEND_ACK/RECEIVE/REFRESH
        │   └─ REFRESH              │  └─
        │ TERMINATE                 │ TERMINATE
        └───────────▶ TERMINATED ◀──┘ ◀┐ SEND_ACK (a 2xx that crossed the BYE
                                       └─ is still ACKed, §13.2.2.4)

A B2BUA keeps one dialog per leg; nothing here knows about the other leg.
Requests built here carry no Via: the transaction layer adds the top Via and
its branch (§8.1.1.7), and the ACK for a 2xx, which is its own transaction
(§13.2.2.4), gets one from whoever sends it.  CANCEL is not built from the
dialog but from the INVITE it cancels (§9.1, ``build_cancel``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import auto
from typing import Generic, TypeVar

from switch.fsm import FastEnum
from switch.sip.errors import ParseError, SipError, TransactionDoesNotExist
from switch.sip.headers import (
    NameAddr,
    contacts,
    cseq,
    parse_name_addr,
    tag_of,
)
from switch.sip.message import Headers, Request, Response
from switch.sip.uri import SipUri, parse_uri

MAX_FORWARDS = "70"  # RFC 3261 §8.1.1.6
# Methods whose requests carry a Contact and refresh the remote target
# (RFC 3261 §12.2, RFC 3311 §5.1, RFC 3515 §2.4.4 for REFER, RFC 6665 for the rest).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
# Parameters that may not appear in a Request-URI (RFC 3261 §19.1.1 table 1):
# stripped when a strict router's URI becomes the Request-URI (§12.2.1.1).
_NOT_IN_REQUEST_URI = frozenset({"method"})


class InvalidTransition(SipError):
    """An input the machine's table does not allow in its current state.

    A programming error in the caller, or a peer sending something the RFC
    rules out; the boundary answers it like any other error (500).
    """

    status = 500
    reason = "Server Internal Error"


class OutOfOrderRequest(SipError):
    """§12.2.2: a CSeq lower than the last one the peer used."""

    status = 500
    reason = "Server Internal Error"


class State(FastEnum):
    EARLY = auto()
    CONFIRMED = auto()
    TERMINATED = auto()


class Input(FastEnum):
    CONFIRM = auto()           # 2xx to the dialog-creating INVITE, sent (UAS) or received (UAC)
    SEND_REQUEST = auto()      # a request built here is about to be sent
    SEND_ACK = auto()          # the ACK for a 2xx: owed even after the dialog ended (§13.2.2.4)
    RECEIVE_REQUEST = auto()   # an in-dialog request arrived and passed the CSeq check
    REFRESH_TARGET = auto()    # 2xx to a target refresh request (§12.2.1.2, §12.2.2)
    TERMINATE = auto()         # BYE, failure of the INVITE, 481/408 to an in-dialog request


TRANSITIONS: dict[tuple[State, Input], State] = {
    (State.EARLY, Input.CONFIRM): State.CONFIRMED,
    (State.EARLY, Input.SEND_REQUEST): State.EARLY,        # UPDATE/PRACK/BYE (§15) early
    (State.EARLY, Input.RECEIVE_REQUEST): State.EARLY,
    (State.EARLY, Input.REFRESH_TARGET): State.EARLY,
    (State.EARLY, Input.TERMINATE): State.TERMINATED,
    (State.CONFIRMED, Input.SEND_REQUEST): State.CONFIRMED,
    (State.CONFIRMED, Input.RECEIVE_REQUEST): State.CONFIRMED,
    (State.CONFIRMED, Input.REFRESH_TARGET): State.CONFIRMED,
    (State.CONFIRMED, Input.TERMINATE): State.TERMINATED,
    (State.CONFIRMED, Input.SEND_ACK): State.CONFIRMED,
    (State.TERMINATED, Input.TERMINATE): State.TERMINATED,  # idempotent
    (State.TERMINATED, Input.SEND_ACK): State.TERMINATED,   # a 2xx that crossed the BYE
}


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID, local tag, remote tag (RFC 3261 §12)."""

    call_id: str
    local_tag: str
    remote_tag: str

    @staticmethod
    def of_incoming_request(request: Request) -> DialogId | None:
        """The id of the dialog an incoming request belongs to (UAS view), if it names one.

        §12.2.2: local tag = To tag, remote tag = From tag.  A request without a
        To tag is outside any dialog.
        """
        key = incoming_key(request)
        return None if key is None else DialogId(*key)

    @staticmethod
    def of_response(response: Response) -> DialogId | None:
        """The id of the dialog a response to our request belongs to (UAC view, §12.1.2)."""
        call_id = response.headers.get("call-id")
        to_value = response.headers.get("to")
        from_value = response.headers.get("from")
        if call_id is None or to_value is None or from_value is None:
            return None
        remote = tag_of(to_value)
        local = tag_of(from_value)
        if not remote or not local:
            return None
        return DialogId(call_id.strip(), local, remote)


def incoming_key(request: Request) -> tuple[str, str, str] | None:
    """``DialogId.of_incoming_request`` as a plain tuple (Call-ID, local tag, remote
    tag), to compare with ``Dialog.key``: no object made, a C-level comparison."""
    headers = request.headers
    call_id = headers.get("call-id")
    to_value = headers.get("to")
    from_value = headers.get("from")
    if call_id is None or to_value is None or from_value is None:
        return None
    local = tag_of(to_value)
    if not local:
        return None
    return (call_id.strip(), local, tag_of(from_value) or "")


# From/To without their tag → parsed.  The rest of a party's From/To repeats from
# call to call (the tag is what is new), and the full parse is ~5 us each, four per
# call; bounded (the values come from the network), emptied when full.
_PARTIES: dict[str, NameAddr] = {}
_PARTIES_MAX = 4096
# A last ";tag=" whose value is a plain token (RFC 3261 §25.1) ending the value: the
# parse of the rest plus this one parameter is the parse of the whole.
_TRAILING_TAG = re.compile(r";tag=([A-Za-z0-9\-.!%*_+`'~]+)\Z")


def _party(message: Request | Response, name: str) -> NameAddr:
    """``from_header``/``to_header`` (``name`` "from"/"to"), the part before the tag
    parsed once per distinct text."""
    value = message.headers.get(name)
    if value is None:
        raise ParseError(f"no {name} header")
    text = value.strip()
    match = _TRAILING_TAG.search(text)
    rest = text if match is None else text[:match.start()]
    party = _PARTIES.get(rest)
    if party is None:
        try:
            party = parse_name_addr(rest)
        except ParseError:
            return parse_name_addr(value)     # the whole value's parse says what is wrong
        if len(_PARTIES) >= _PARTIES_MAX:
            _PARTIES.clear()
        _PARTIES[rest] = party
    if match is None:
        return party
    return NameAddr(party.uri, party.display, (*party.params, ("tag", match.group(1))))


def _route_uri(route: str) -> SipUri | None:
    uri = parse_name_addr(route).uri
    return uri if isinstance(uri, SipUri) else None


def _is_loose(route: str) -> bool:
    uri = _route_uri(route)
    return uri is not None and uri.has_param("lr")


def _strip_for_request_uri(route: str) -> str:
    """A strict router's URI as a Request-URI: no disallowed params, no headers (§12.2.1.1)."""
    uri = parse_name_addr(route).uri
    if not isinstance(uri, SipUri):
        return str(uri)
    params = tuple(p for p in uri.params if p[0].lower() not in _NOT_IN_REQUEST_URI)
    return str(SipUri(uri.scheme, uri.host, uri.user, uri.password, uri.port, params, ()))


# Contact value → remote target.  A phone sends the same Contact in every call, and
# the full parse plus re-serialisation of the URI cost ~30 us a call; bounded (the
# values come from the network), emptied when full.
_TARGETS: dict[str, str] = {}
_TARGETS_MAX = 4096


def _contact_uri(message: Request | Response) -> str | None:
    lines = message.headers.get_all("contact")
    if len(lines) != 1:
        return _first_contact_uri(message) if lines else None
    line = lines[0]
    target = _TARGETS.get(line)
    if target is None:
        target = _first_contact_uri(message)
        if target is not None:
            if len(_TARGETS) >= _TARGETS_MAX:
                _TARGETS.clear()
            _TARGETS[line] = target
    return target


def _first_contact_uri(message: Request | Response) -> str | None:
    found = [c for c in contacts(message) if not c.wildcard]
    return str(found[0].uri) if found else None


class Dialog:
    """One dialog's state (RFC 3261 §12).  Build with ``as_uac`` / ``as_uas``."""

    __slots__ = ("_from_text", "_to_text", "call_id", "id", "key", "local_contact",
                 "local_cseq", "local_party", "local_tag", "remote_cseq", "remote_party",
                 "remote_tag", "remote_target", "route_set", "secure", "state")

    def __init__(self, *, call_id: str, local_party: NameAddr, remote_party: NameAddr,
                 remote_target: str, route_set: tuple[str, ...], local_cseq: int | None,
                 remote_cseq: int | None, secure: bool, local_contact: str | None,
                 state: State = State.EARLY) -> None:
        self.call_id = call_id
        self.local_party = local_party        # From of our requests, with our tag
        self.remote_party = remote_party      # To of our requests, with the peer's tag
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_cseq = local_cseq          # last CSeq number we used; None = empty
        self.remote_cseq = remote_cseq        # last CSeq number the peer used; None = empty
        self.secure = secure
        self.local_contact = local_contact    # our Contact header value (name-addr text)
        self.state = state
        # The parties never change once the dialog exists (§12.1): their tags and the
        # id are plain attributes (read a dozen times a call), made here; the From/To
        # text of our requests is made once, on first use.
        self.local_tag: str = local_party.tag or ""
        self.remote_tag: str = remote_party.tag or ""
        self.id = DialogId(call_id, self.local_tag, self.remote_tag)
        self.key = (call_id, self.local_tag, self.remote_tag)     # the id as ``incoming_key``
        self._from_text: str | None = None
        self._to_text: str | None = None

    # --- creation ---------------------------------------------------------------

    @classmethod
    def as_uac(cls, request: Request, response: Response, *, secure_transport: bool = False
               ) -> Dialog:
        """The dialog a 1xx-with-tag or 2xx to our INVITE creates (§12.1.2).

        Early for a 101-199, confirmed for a 2xx.  Raises ``SipError`` when the
        response cannot create a dialog (no To tag, §12.1).
        """
        remote = _party(response, "to")
        if not remote.tag:
            raise SipError("response without To tag cannot create a dialog", status=400)
        # Route set: Record-Route of the response, reversed (§12.1.2).
        route_set = tuple(reversed(response.headers.get_list("record-route")))
        target = _contact_uri(response)
        if target is None:
            # §12.1.2 needs a Contact; a 1xx often lacks one.  Until a response
            # carries one, the Request-URI of the INVITE is the best target we have.
            target = request.uri
        local_contact = request.headers.get("contact")
        dialog = cls(
            call_id=(request.headers.get("call-id") or "").strip(),
            local_party=_party(request, "from"),
            remote_party=remote,
            remote_target=target,
            route_set=route_set,
            local_cseq=cseq(request).seq,
            remote_cseq=None,
            secure=secure_transport and request.uri.lower().startswith("sips:"),
            local_contact=local_contact,
            state=State.CONFIRMED if 200 <= response.status < 300 else State.EARLY,
        )
        return dialog

    @classmethod
    def as_uas(cls, request: Request, *, local_tag: str, local_contact: str | None,
               secure_transport: bool = False) -> Dialog:
        """The dialog our 1xx/2xx to ``request`` creates (§12.1.1).  Starts early."""
        remote = _party(request, "from")
        to = _party(request, "to")
        kept = tuple(p for p in to.params if p[0].lower() != "tag") if to.params else ()
        local = NameAddr(to.uri, to.display, (*kept, ("tag", local_tag)))
        target = _contact_uri(request) or str(remote.uri)
        return cls(
            call_id=(request.headers.get("call-id") or "").strip(),
            local_party=local,
            remote_party=remote,
            remote_target=target,
            # Record-Route of the request, in order (§12.1.1).
            route_set=tuple(request.headers.get_list("record-route")),
            local_cseq=None,
            remote_cseq=cseq(request).seq,
            secure=secure_transport and request.uri.lower().startswith("sips:"),
            local_contact=local_contact,
        )

    # --- the machine ------------------------------------------------------------

    def _apply(self, event: Input) -> None:
        next_state = TRANSITIONS.get((self.state, event))
        if next_state is None:
            raise InvalidTransition(f"dialog {self.id}: {event.name} in {self.state.name}")
        self.state = next_state

    def confirm(self, response: Response | None = None) -> None:
        """The dialog-creating INVITE got its 2xx.

        UAC (``response`` given): an early dialog's route set and remote target
        are recomputed from the 2xx (§13.2.2.4, §12.2.1.2).
        """
        self._apply(Input.CONFIRM)
        if response is not None:
            self.route_set = tuple(reversed(response.headers.get_list("record-route")))
            target = _contact_uri(response)
            if target is not None:
                self.remote_target = target

    def terminate(self) -> None:
        self._apply(Input.TERMINATE)

    def refresh_target(self, message: Request | Response) -> None:
        """Replace the remote target with the Contact of a target refresh (§12.2).

        Called with the 2xx to our re-INVITE/UPDATE (§12.2.1.2), or with the
        peer's re-INVITE/UPDATE once we answer it 2xx: RFC 6141 §4 has the target
        change only when the request succeeds.
        """
        self._apply(Input.REFRESH_TARGET)
        target = _contact_uri(message)
        if target is not None:
            self.remote_target = target

    # --- incoming ---------------------------------------------------------------

    def matches(self, request: Request) -> bool:
        return incoming_key(request) == self.key

    def receive_request(self, request: Request) -> None:
        """Check and record an in-dialog request (§12.2.2).

        Raises ``TransactionDoesNotExist`` (481) if the request is not for this
        dialog or the dialog is over, and ``OutOfOrderRequest`` (500) for a CSeq
        lower than the last one.  ACK and CANCEL carry the INVITE's CSeq and are
        not sequence-checked.
        """
        if self.state is State.TERMINATED or not self.matches(request):
            raise TransactionDoesNotExist(f"no dialog {DialogId.of_incoming_request(request)}")
        self.receive_matched(request)

    def receive_matched(self, request: Request) -> None:
        """``receive_request`` for a request already known to name this dialog (its
        caller looked the dialog up by the request's id): the CSeq check and the
        transition, without reading Call-ID/From/To again."""
        if self.state is State.TERMINATED:
            raise TransactionDoesNotExist(f"no dialog {self.id}")
        number = cseq(request).seq
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_cseq is not None and number < self.remote_cseq:
                raise OutOfOrderRequest(
                    f"CSeq {number} lower than {self.remote_cseq} (RFC 3261 §12.2.2)")
            self.remote_cseq = number
        self._apply(Input.RECEIVE_REQUEST)

    # --- outgoing ---------------------------------------------------------------

    def next_cseq(self) -> int:
        """Take the next local sequence number (§12.2.1.1: incremented by one).

        An empty local sequence (UAS that never sent a request) starts at 1:
        any value below 2**31 is allowed (§8.1.1.5).
        """
        self.local_cseq = 1 if self.local_cseq is None else self.local_cseq + 1
        return self.local_cseq

    def create_request(self, method: str, *, body: bytes = b"",
                       content_type: str | None = None,
                       extra: Iterable[tuple[str, str]] = (),
                       cseq_number: int | None = None) -> Request:
        """A request inside the dialog (§12.2.1.1).

        The CSeq takes the next local number unless ``cseq_number`` is given
        (ACK for a 2xx reuses the INVITE's number, §13.2.2.4).  Request-URI and
        Route follow the route set: loose routing when its first URI has ``lr``,
        else the strict-routing fallback (the first route becomes the
        Request-URI and the remote target the last Route).
        """
        method = method.upper()
        if method == "CANCEL":
            raise InvalidTransition("CANCEL is built from the INVITE (RFC 3261 §9.1)")
        self._apply(Input.SEND_ACK if method == "ACK" else Input.SEND_REQUEST)
        number = cseq_number if cseq_number is not None else self.next_cseq()
        headers = Headers()
        if self.route_set:
            request_uri, routes = self.request_target()
            for route in routes:
                headers.add("Route", route)
        else:
            request_uri = self.remote_target      # no route set: the common case, no call
        headers.add("Max-Forwards", MAX_FORWARDS)
        if self._from_text is None:
            self._from_text, self._to_text = str(self.local_party), str(self.remote_party)
        headers.add("From", self._from_text)
        headers.add("To", self._to_text or "")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{number} {method}")
        if method in TARGET_REFRESH_METHODS and self.local_contact:
            headers.add("Contact", self.local_contact)
        for name, value in extra:
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type or "application/sdp")
        return Request(method, request_uri, headers, body)

    def create_ack(self, invite_cseq: int, *, body: bytes = b"",
                   content_type: str | None = None,
                   extra: Iterable[tuple[str, str]] = ()) -> Request:
        """The ACK for a 2xx to the INVITE numbered ``invite_cseq`` (§13.2.2.4)."""
        return self.create_request("ACK", body=body, content_type=content_type, extra=extra,
                                   cseq_number=invite_cseq)

    def request_target(self) -> tuple[str, list[str]]:
        """Request-URI and Route values for the next request (§12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if _is_loose(first):
            return self.remote_target, list(self.route_set)
        # Strict routing: the first route becomes the Request-URI; the remote
        # target is appended as the last Route.
        return (_strip_for_request_uri(first),
                [*self.route_set[1:], f"<{self.remote_target}>"])

    def __repr__(self) -> str:
        return f"<Dialog {self.id} {self.state.name}>"


def next_hop(request: Request) -> str:
    """Where an in-dialog request goes (§8.1.2): the first Route's URI if it is a
    loose router (``lr``), else the Request-URI (no Route, or a strict router that
    §12.2.1.1 moved into the Request-URI)."""
    route = request.headers.get_list("route")
    if route and _is_loose(route[0]):
        return str(parse_name_addr(route[0]).uri)
    return str(parse_uri(request.uri))


@dataclass(frozen=True, slots=True, kw_only=True)
class Hop:
    """The address of a next hop taken from its URI (RFC 3263 without DNS: the host
    as written, the port or 5060/5061, the ``transport`` parameter if any)."""

    host: str
    port: int
    transport: str | None


def route_hop(request: Request) -> Hop | None:
    """The next hop of an in-dialog request that carries a route set, or None.

    None when the request has no Route (the route set is empty: the caller sends
    to the peer's flow) or is outside a dialog (no To tag: an initial INVITE, whose
    Route is a preloaded Path, and its CANCEL go where the INVITE went, §9.1).
    """
    if "route" not in request.headers or not tag_of(request.headers.get("to") or ""):
        return None
    uri = parse_uri(next_hop(request))
    if not isinstance(uri, SipUri):
        return None
    transport = uri.param("transport")
    port = uri.port or (5061 if uri.scheme == "sips" else 5060)
    return Hop(host=uri.host_unbracketed, port=port,
               transport=transport.lower() if transport else None)


def build_cancel(invite: Request) -> Request:
    """A CANCEL for ``invite`` (RFC 3261 §9.1).

    Request-URI, Call-ID, To, From, the CSeq number and the Route set are the
    INVITE's; the method is CANCEL.  The single Via must be the INVITE's top
    Via: copied when the INVITE carries one, else the transaction layer that
    sent the INVITE must add it.
    """
    src = invite.headers
    headers = Headers()
    vias = src.get_list("via")
    if vias:
        headers.add("Via", vias[0])
    for route in src.get_all("route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", MAX_FORWARDS)
    for name in ("From", "To", "Call-ID"):
        value = src.get(name)
        if value is not None:
            headers.add(name, value)
    headers.add("CSeq", f"{cseq(invite).seq} CANCEL")
    return Request("CANCEL", invite.uri, headers)


V = TypeVar("V")


class DialogTable(Generic[V]):
    """Maps dialog ids to whatever the call layer keeps per dialog (a session, a leg).

    ``lookup`` is the §12.2.2 check: a request naming a dialog we do not have
    gets 481 (``TransactionDoesNotExist``).
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[DialogId, V] = {}

    def add(self, dialog_id: DialogId, value: V) -> None:
        self._items[dialog_id] = value

    def remove(self, dialog_id: DialogId) -> None:
        self._items.pop(dialog_id, None)

    def get(self, dialog_id: DialogId) -> V | None:
        return self._items.get(dialog_id)

    def lookup(self, request: Request) -> V:
        dialog_id = DialogId.of_incoming_request(request)
        if dialog_id is None:
            raise TransactionDoesNotExist("request names no dialog")
        value = self._items.get(dialog_id)
        if value is None:
            raise TransactionDoesNotExist(f"no dialog {dialog_id}")
        return value

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, dialog_id: object) -> bool:
        return dialog_id in self._items
