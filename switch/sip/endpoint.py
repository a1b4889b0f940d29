"""The SIP endpoint: parser + transaction layer behind one sans-I/O facade.

Theory of operation
-------------------
Modelled on aioquic's ``QuicConnection`` (DESIGN.md rule 1).  The driver
feeds bytes in and takes bytes, events and one deadline out; nothing here
reads a clock or touches a socket::

    endpoint.receive(data, source, now)      # a UDP datagram or one TCP frame
    endpoint.handle_timer(now)               # when now >= endpoint.get_timer()
    while (event := endpoint.next_event()):  # RequestReceived, ResponseReceived, ...
        tu(event)                            # may call respond() / send_request()
    for out in endpoint.datagrams_to_send(): # Outgoing(data, destination, transaction_id)
        transport.send(out)

Incoming requests are matched to server transactions by top-Via branch +
sent-by + method (RFC 3261 §17.2.3; ACK matches its INVITE, CANCEL has its own
transaction), or, for an RFC 2543 peer without the magic cookie, by
Request-URI, From tag, Call-ID, CSeq, top Via and To tag.  A retransmission is
absorbed by its transaction (which re-sends its last response); only a new
request becomes a ``RequestReceived`` event.  CANCEL is answered here (200, or
481 without a matching INVITE, §9.2) and reported as ``CancelReceived`` with
the INVITE's transaction id; the TU then answers the INVITE with 487.
Incoming responses are matched to client transactions by branch + CSeq method
(§17.1.3); strays are dropped and counted.

Responses go where §18.2.2 and RFC 3581 §4 say: the Via of the request as
received is stamped with ``received`` (when the sent-by host is not the source
address, or when ``rport`` asks for it) and ``rport=<source port>``; replies
go to that address and port, over TCP back on the same connection (the driver
connects anew if it has gone).

Errors are converted once, here (DESIGN.md rule 5): a message the parser
rejects is answered 400/505/513 with a ``Warning`` naming the problem when
the headers needed for a response are present (§8.2.6.2), else dropped; both
are reported as ``MessageRejected``.

Every timer of every transaction lives in one heap keyed by deadline with
lazy deletion (a popped entry whose deadline is no longer its transaction's,
or whose transaction has terminated, is ignored; entries name the transaction
by id); ``get_timer`` is the heap's top.  ``earliest_scheduled`` (the
earliest deadline scheduled since ``get_timer`` last ran) lets the driver skip
asking when nothing earlier than its armed timer was started.

Message counts (for ``switch_sip_messages_total``) are kept in
``Endpoint.stats``, a dict increment per message, read by the app.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from heapq import heappop, heappush
from itertools import count
from math import inf

from switch.sip.errors import (
    ParseError,
    SipError,
    TransactionDoesNotExist,
)
from switch.sip.headers import MAGIC_COOKIE, Via, cseq, from_header, get_param, to_header, top_via
from switch.sip.message import Message, Request, Response, make_response, split_list
from switch.sip.parser import DEFAULT_LIMITS, Limits, parse_message
from switch.sip.timers import DEFAULT_TIMERS, TimerConfig
from switch.sip.transaction import (
    ClientTransaction,
    Destination,
    Input,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Outgoing,
    ServerTransaction,
    Source,
    State,
    Transaction,
    TransactionStateError,
    new_branch,
    new_tag,
)

__all__ = [
    "AckReceived",
    "CancelReceived",
    "Destination",
    "Endpoint",
    "Event",
    "MessageCounters",
    "MessageRejected",
    "Outgoing",
    "RequestReceived",
    "ResponseReceived",
    "Source",
    "TransactionTimedOut",
    "TransportErrorOccurred",
]

# --- events (DESIGN.md rule 4) -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A new request; the TU must answer it with ``respond(transaction_id, ...)``."""

    transaction_id: int
    request: Request
    source: Source


@dataclass(frozen=True, slots=True, kw_only=True)
class AckReceived:
    """An ACK for a 2xx (§13.3.1.4). ``transaction_id`` is the INVITE server
    transaction when it matched one in Accepted (RFC 6026 §7.1), else None: the
    dialog layer matches it by dialog."""

    request: Request
    source: Source
    transaction_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelReceived:
    """A CANCEL for the INVITE server transaction ``transaction_id`` while it had
    no final response; the endpoint has already answered the CANCEL 200 (§9.2)."""

    transaction_id: int
    request: Request
    source: Source


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived:
    """A response for the client transaction ``transaction_id`` (§17.1)."""

    transaction_id: int
    response: Response


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionTimedOut:
    """``timer`` fired: 'B', 'F' or 'C' (client: treat as 408, §8.1.3.1), 'H' (no
    ACK for a non-2xx final, §17.2.1) or 'TU' (the TU never answered; the
    endpoint sent 500 itself)."""

    transaction_id: int
    method: str
    timer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportErrorOccurred:
    """Sending for ``transaction_id`` failed (§17.1.4, §17.2.4)."""

    transaction_id: int
    method: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRejected:
    """A message the parser refused: answered with ``status``, or dropped (None)."""

    reason: str
    status: int | None
    source: Source


Event = (RequestReceived | AckReceived | CancelReceived | ResponseReceived
         | TransactionTimedOut | TransportErrorOccurred | MessageRejected)


class MessageCounters:
    """Messages in and out by (direction, method, status); status 0 for requests."""

    __slots__ = ("messages", "stray_responses", "rejected")

    def __init__(self) -> None:
        self.messages: dict[tuple[str, str, int], int] = {}
        self.stray_responses = 0
        self.rejected = 0

    def samples(self) -> Iterator[tuple[str, str, str, int]]:
        """(direction, method, status label — '' for requests, count)."""
        for (direction, method, status), value in list(self.messages.items()):
            yield direction, method, str(status) if status else "", value


# --- the endpoint ------------------------------------------------------------------------

ServerKey = tuple[object, ...]   # also the client index key: (branch, method)
# (deadline, transaction id, timer code): numbers only, so a terminated
# transaction is freed at once rather than when its cancelled entries (Timer C:
# 3 min) reach the top, and the entries are not tracked by the cyclic GC.
HeapEntry = tuple[float, int, int]
_TIMER_CODE: dict[Input, int] = {timer: code for code, timer in enumerate(Input)}
_TIMER_OF: tuple[Input, ...] = tuple(Input)
# Timers scheduled and not yet on the heap, checked as transactions start (each
# schedules a few): the driver asks get_timer only for an earlier deadline, so
# nothing else bounds the list between two timer wake-ups.
_MAX_PENDING = 4096


class Endpoint:
    """Parser + transaction layer, sans-I/O."""

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS, timers: TimerConfig = DEFAULT_TIMERS,
                 via_host: str = "127.0.0.1", via_port: int = 5060) -> None:
        self._limits = limits
        self._timers = timers
        self.via_host = via_host
        self.via_port = via_port
        self.stats = MessageCounters()
        self._events: deque[Event] = deque()
        self._out: list[Outgoing] = []
        self._heap: list[HeapEntry] = []
        self._pending: list[tuple[Transaction, Input, float]] = []
        # The earliest deadline scheduled since get_timer last looked (inf: none):
        # the driver asks get_timer again only when this is before its armed timer.
        self.earliest_scheduled = inf
        self._ids = count(1)
        self._by_id: dict[int, Transaction] = {}
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._clients: dict[ServerKey, ClientTransaction] = {}
        self._source: Source | None = None
        self._sink = _Sink(self)

    def set_via_address(self, host: str, port: int) -> None:
        """The host:port written in the Via of requests we send (once bound)."""
        self.via_host = host
        self.via_port = port

    # --- the driver's side ----------------------------------------------------------

    def receive(self, data: bytes, source: Source, now: float) -> None:
        """One UDP datagram, or one frame ``StreamFramer`` cut from a TCP stream."""
        try:
            message = parse_message(data, self._limits, stream=source.transport != "udp")
        except ParseError as exc:
            partial = getattr(exc, "partial", None)
            self._reject(exc, partial, source)
            return
        self._source = source
        try:
            if type(message) is Request:
                self._receive_request(message, source, now)
            else:
                assert isinstance(message, Response)
                self._receive_response(message, now)
        except SipError as exc:
            # A header parsed on demand was malformed (DESIGN.md rule 5).
            self._reject(exc, message, source)

    def receive_unframeable(self, data: bytes, error: ParseError, source: Source) -> None:
        """A TCP stream ``StreamFramer`` cannot cut (no or bad Content-Length, too
        large): answer 400/513 if ``data`` has the headers for it; the driver then
        closes the connection."""
        partial: Message | None = None
        try:
            parse_message(data, self._limits, stream=True)
        except ParseError as exc:
            partial = getattr(exc, "partial", None)
        self._reject(error, partial, source)

    def next_event(self) -> Event | None:
        events = self._events
        return events.popleft() if events else None

    def datagrams_to_send(self) -> list[Outgoing]:
        out = self._out
        if out:
            self._out = []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline of all transactions, or None; resets
        ``earliest_scheduled`` (the driver is its one caller)."""
        if self._pending:
            self._push_pending()
        self.earliest_scheduled = inf
        heap = self._heap
        by_id = self._by_id
        while heap:
            deadline, transaction_id, code = heap[0]
            txn = by_id.get(transaction_id)
            if txn is not None and txn.deadlines.get(_TIMER_OF[code]) == deadline:
                return deadline
            heappop(heap)   # lazy deletion: cancelled, restarted or terminated
        return None

    def handle_timer(self, now: float) -> None:
        if self._pending:
            self._push_pending()
        heap = self._heap
        by_id = self._by_id
        while heap and heap[0][0] <= now:
            deadline, transaction_id, code = heappop(heap)
            txn = by_id.get(transaction_id)
            if txn is None:
                continue            # terminated
            timer = _TIMER_OF[code]
            deadlines = txn.deadlines
            if deadlines.get(timer) != deadline:
                continue            # lazy deletion (fire_timer's test, inlined)
            del deadlines[timer]
            try:
                txn._step(timer, now, None)
            except TransactionStateError:
                # A gap in a table is a bug; it must not stop the other timers.
                self._forget(txn)

    def handle_transport_error(self, transaction_id: int, now: float) -> None:
        """The driver could not send for ``transaction_id`` (§17.1.4, §17.2.4)."""
        txn = self._by_id.get(transaction_id)
        if txn is not None and not txn.terminated:
            txn.transport_error(now)

    # --- the TU's side ----------------------------------------------------------------

    def respond(self, transaction_id: int, response: Response, now: float) -> None:
        """Send ``response`` through server transaction ``transaction_id``.

        Raises ``TransactionDoesNotExist`` for an unknown or terminated
        transaction and ``TransactionStateError`` for a response the transaction
        cannot take (a second final response)."""
        txn = self._by_id.get(transaction_id)
        if not isinstance(txn, ServerTransaction):
            raise TransactionDoesNotExist(f"no server transaction {transaction_id}")
        txn.send_response(response, now)

    def send_request(self, request: Request, destination: Destination, now: float) -> int:
        """Start a client transaction; returns its id.

        A request without Via gets one naming this endpoint, with a fresh RFC 3261
        branch and ``rport`` (§8.1.1.7, RFC 3581 §3); a request with a Via (a CANCEL
        from ``make_cancel``) keeps its branch.  ACK is not a transaction: send it
        with ``send_stateless`` (§17.1.1.3, §13.2.2.4)."""
        method = request.method
        if method == "ACK":
            raise ValueError("an ACK is sent with send_stateless (RFC 3261 §13.2.2.4)")
        headers = request.headers
        if "via" not in headers:
            branch = new_branch()
            headers.prepend("Via", f"SIP/2.0/{destination.transport.upper()} "
                                   f"{self._via_hostport()};branch={branch};rport")
            request._cache.pop("top_via", None)
            request._cache.pop("vias", None)
        else:
            found = top_via(request).branch
            if not found or not found.startswith(MAGIC_COOKIE):
                raise ValueError(f"top Via branch {found!r} lacks the RFC 3261 magic cookie")
            branch = found
        if "max-forwards" not in headers:
            headers.add("Max-Forwards", "70")    # §8.1.1.6
        key = (branch, method)
        if key in self._clients:
            raise ValueError(f"a {method} client transaction with branch {branch} exists")
        transaction_id = next(self._ids)
        cls = InviteClientTransaction if method == "INVITE" else NonInviteClientTransaction
        txn = cls(transaction_id, request, destination, self._sink, self._timers, branch=branch)
        txn.key = key
        self._clients[key] = txn
        self._by_id[transaction_id] = txn
        txn.start(now)
        if len(self._pending) > _MAX_PENDING:
            self._push_pending()
        return transaction_id

    def send_stateless(self, message: Message, destination: Destination) -> None:
        """Send outside any transaction: an ACK for a 2xx, a stateless response."""
        self._out.append(Outgoing(data=message.encode(), destination=destination))
        if isinstance(message, Request):
            self._count("out", message.method, 0)
        else:
            self._count("out", cseq(message).method, message.status)

    def reply_destination(self, request: Request, source: Source) -> Destination:
        """Where responses to ``request`` go (§18.2.2, RFC 3581 §4)."""
        via = top_via(request)
        return self._reply_destination(via, source)

    # --- introspection ------------------------------------------------------------------

    def transaction_state(self, transaction_id: int) -> State | None:
        txn = self._by_id.get(transaction_id)
        return txn.state if txn is not None else None

    @property
    def transaction_count(self) -> int:
        return len(self._by_id)

    # --- incoming requests (§17.2.3) ------------------------------------------------------

    def _receive_request(self, request: Request, source: Source, now: float) -> None:
        via = top_via(request)
        method = request.method
        key0 = ("in", method, 0)        # _count, inlined: one of the hottest paths
        messages = self.stats.messages
        messages[key0] = messages.get(key0, 0) + 1
        branch = via.branch
        txn: ServerTransaction | None
        if branch is not None and branch.startswith(MAGIC_COOKIE):
            key: ServerKey = (branch, via.host.lower(), via.port,
                              "INVITE" if method == "ACK" else method)
            txn = self._servers.get(key)
        else:
            key = _key_2543(request, via, "INVITE" if method == "ACK" else method)
            txn = self._match_2543(key, request, method)
        if txn is not None:
            txn.receive_request(request, now)     # absorbed: re-send or ACK handling
            return
        if method == "ACK":
            # An ACK for a 2xx: its own transaction-less request (§17.1.1.3).
            self._events.append(AckReceived(request=request, source=source))
            return
        destination = self._stamp_via(request, via, source)
        transaction_id = next(self._ids)
        if method == "INVITE":
            txn = InviteServerTransaction(transaction_id, request, destination, self._sink,
                                          self._timers)
        else:
            txn = NonInviteServerTransaction(transaction_id, request, destination, self._sink,
                                             self._timers)
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            txn.request_to_tag = to_header(request).tag
        txn.key = key
        self._servers[key] = txn
        self._by_id[transaction_id] = txn
        txn.start(now)
        if len(self._pending) > _MAX_PENDING:
            self._push_pending()
        if method == "CANCEL":
            self._answer_cancel(txn, request, via, source, now)
        else:
            self._events.append(RequestReceived(transaction_id=transaction_id, request=request,
                                                source=source))

    def _match_2543(self, key: ServerKey, request: Request, method: str
                    ) -> ServerTransaction | None:
        txn = self._servers.get(key)
        if txn is None:
            return None
        tag = to_header(request).tag
        if tag == txn.request_to_tag or (method == "ACK" and tag == txn.to_tag):
            return txn
        return None

    def _answer_cancel(self, txn: ServerTransaction, cancel: Request, via: Via, source: Source,
                       now: float) -> None:
        # §9.2: the INVITE is the one the CANCEL would match, method aside.
        branch = via.branch
        invite: ServerTransaction | None
        if branch is not None and branch.startswith(MAGIC_COOKIE):
            invite = self._servers.get((branch, via.host.lower(), via.port, "INVITE"))
        else:
            invite = self._match_2543(_key_2543(cancel, via, "INVITE"), cancel, "INVITE")
        if invite is None or invite.terminated:
            txn.send_response(make_response(cancel, 481, to_tag=new_tag()), now)
            return
        txn.send_response(make_response(cancel, 200, to_tag=invite.to_tag or new_tag()), now)
        if invite.state is State.PROCEEDING:
            self._events.append(CancelReceived(transaction_id=invite.id, request=cancel,
                                               source=source))

    def _stamp_via(self, request: Request, via: Via, source: Source) -> Destination:
        """§18.2.1 + RFC 3581 §4: add received / fill rport; return the reply address."""
        rport = via.rport
        host = via.host
        source_host = source.host
        if rport is None and (host == source_host or host.strip("[]") == source_host):
            # Fast path: a well-behaved peer on a flat network.
            port = via.port or (5061 if via.transport == "TLS" else 5060)
            if get_param(via.params, "maddr") is None:
                return Destination(transport=source.transport, host=source_host, port=port,
                                   connection_id=source.connection_id)
            return self._reply_destination(via, source)
        params = []
        maddr = False
        for name, value in via.params:
            lname = name.lower()
            if lname == "received" or (lname == "rport" and rport == ""):
                continue
            if lname == "maddr":
                maddr = True
            params.append((name, value))
        params.append(("received", source_host))
        if rport == "":
            params.append(("rport", str(source.port)))
        stamped = Via(via.transport, via.host, via.port, tuple(params), via.protocol)
        headers = request.headers
        first = headers.get("via") or ""
        if "," in first:
            items = split_list(first)
            items[0] = str(stamped)
            headers.replace_first("Via", ", ".join(items))
        else:
            headers.replace_first("Via", str(stamped))
        request._cache["top_via"] = stamped
        request._cache.pop("vias", None)
        if rport == "" and not maddr and source_host:
            # What _reply_destination finds in the Via just stamped, known already:
            # received=<source host>, rport=<source port> (the usual RFC 3581 case).
            return Destination(transport=source.transport, host=source_host, port=source.port,
                               connection_id=source.connection_id)
        return self._reply_destination(stamped, source)

    def _reply_destination(self, via: Via, source: Source) -> Destination:
        maddr: str | None = None
        received: str | None = None
        rport: str | None = None
        for name, value in via.params:          # one pass for the three (§18.2.2)
            lname = name.lower()                # (the first of each wins, as get_param)
            if lname == "received":
                if received is None:
                    received = value or ""
            elif lname == "rport":
                if rport is None:
                    rport = value or ""
            elif lname == "maddr" and maddr is None:
                maddr = value or ""
        if maddr and source.transport == "udp":
            return Destination(transport="udp", host=maddr, port=via.port or 5060)
        host = received or via.host.strip("[]")
        if rport and (rport.isascii() and rport.isdigit()):
            port = int(rport)
        else:
            port = via.port or (5061 if via.transport == "TLS" else 5060)
        return Destination(transport=source.transport, host=host, port=port,
                           connection_id=source.connection_id)

    # --- incoming responses (§17.1.3) -----------------------------------------------------

    def _receive_response(self, response: Response, now: float) -> None:
        method = cseq(response).method
        key = ("in", method, response.status)     # _count, inlined
        messages = self.stats.messages
        messages[key] = messages.get(key, 0) + 1
        branch = top_via(response).branch
        txn = self._clients.get((branch, method)) if branch is not None else None
        if txn is None:
            self.stats.stray_responses += 1     # §18.1.2: discarded
            return
        txn.receive_response(response, now)

    # --- errors (DESIGN.md rule 5) --------------------------------------------------------

    def _reject(self, error: SipError, partial: Message | None, source: Source) -> None:
        self.stats.rejected += 1
        reason = error.detail
        if not _can_answer(partial):
            self._events.append(MessageRejected(reason=reason, status=None, source=source))
            return
        assert isinstance(partial, Request)
        text = reason.replace("\\", "/").replace('"', "'")[:200]
        response = make_response(partial, error.status, error.reason, to_tag=new_tag(),
                                 extra=(("Warning", f'399 {self._via_hostport()} "{text}"'),
                                        *error.headers))
        try:
            destination = self._reply_destination(top_via(partial), source)
        except ParseError:
            destination = Destination(transport=source.transport, host=source.host,
                                      port=source.port, connection_id=source.connection_id)
        self._out.append(Outgoing(data=response.encode(), destination=destination))
        self._count("out", partial.method, error.status)
        self._events.append(MessageRejected(reason=reason, status=error.status, source=source))

    # --- bookkeeping ------------------------------------------------------------------------

    def _count(self, direction: str, method: str, status: int) -> None:
        key = (direction, method, status)
        messages = self.stats.messages
        messages[key] = messages.get(key, 0) + 1

    def _via_hostport(self) -> str:
        host = self.via_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.via_port}"

    def _push_pending(self) -> None:
        # Timers are pushed on the heap only when somebody asks for the next
        # deadline: the TU guard of a request answered at once (the usual case)
        # is cancelled before that and never costs a heap entry.
        heap = self._heap
        codes = _TIMER_CODE
        for txn, timer, deadline in self._pending:
            if txn.deadlines.get(timer) == deadline:
                heappush(heap, (deadline, txn.id, codes[timer]))
        self._pending = []

    def _forget(self, txn: Transaction) -> None:
        txn.deadlines.clear()
        self._by_id.pop(txn.id, None)
        index: dict[ServerKey, ClientTransaction] | dict[ServerKey, ServerTransaction] = (
            self._clients if txn.is_client else self._servers)
        if index.get(txn.key) is txn:
            del index[txn.key]


def _key_2543(request: Request, via: Via, method: str) -> ServerKey:
    """§17.2.3 matching for requests without the magic cookie (To tag checked apart)."""
    return ("2543", request.uri, from_header(request).tag, request.headers.get("call-id"),
            cseq(request).seq, via, method)


def _can_answer(partial: Message | None) -> bool:
    # §8.2.6.2 needs Via, From, To, Call-ID and CSeq; an ACK is never answered.
    if not isinstance(partial, Request) or partial.method == "ACK":
        return False
    headers = partial.headers
    return all(name in headers for name in ("via", "from", "to", "call-id", "cseq"))


class _Sink:
    """The endpoint's side of ``TransactionSink``: queues, never I/O."""

    __slots__ = ("_endpoint",)

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def send(self, transaction: Transaction, data: bytes, method: str, status: int) -> None:
        endpoint = self._endpoint
        endpoint._out.append(Outgoing(data=data, destination=transaction.destination,
                                      transaction_id=transaction.id))
        key = ("out", method, status)
        messages = endpoint.stats.messages
        messages[key] = messages.get(key, 0) + 1

    def schedule(self, transaction: Transaction, timer: Input, deadline: float) -> None:
        endpoint = self._endpoint
        endpoint._pending.append((transaction, timer, deadline))
        if deadline < endpoint.earliest_scheduled:
            endpoint.earliest_scheduled = deadline

    def pass_up(self, transaction: Transaction, message: Message) -> None:
        endpoint = self._endpoint
        if isinstance(message, Response):
            endpoint._events.append(ResponseReceived(transaction_id=transaction.id,
                                                     response=message))
        else:
            source = endpoint._source
            assert source is not None
            endpoint._events.append(AckReceived(request=message, source=source,
                                                transaction_id=transaction.id))

    def timed_out(self, transaction: Transaction, timer: Input) -> None:
        self._endpoint._events.append(TransactionTimedOut(
            transaction_id=transaction.id, method=transaction.method,
            timer=timer.name.removeprefix("TIMER_")))

    def transport_failed(self, transaction: Transaction) -> None:
        self._endpoint._events.append(TransportErrorOccurred(
            transaction_id=transaction.id, method=transaction.method))

    def terminated(self, transaction: Transaction) -> None:
        self._endpoint._forget(transaction)
