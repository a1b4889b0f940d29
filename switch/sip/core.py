"""The UAS core for requests outside any dialog (RFC 3261 §8.2), sans-I/O.

Every new request the transaction layer passes up goes through the checks of
§8.2 in the RFC's order before any usage sees it:

1. §8.2.1 method inspection: an unknown method gets 501 (with ``Allow``);
2. §8.2.2.1 Request-URI scheme: a scheme we cannot handle gets 416;
3. §8.2.2.3 Require: option tags we do not support get 420 with ``Unsupported``
   (never for ACK or CANCEL, which cannot be rejected);
4. §8.2.3 content processing: a body of a type we do not understand gets 415
   with ``Accept`` (only where we would process the body);

then the request is dispatched to its usage: REGISTER to the registrar
(§10.3), OPTIONS answered here (§11.2), INVITE to call control (until that
lands, a clear 501).  Results are values; the driver sends them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from switch.sip.errors import SipError
from switch.sip.message import Request, Response, make_response
from switch.sip.uri import parse_request_uri

# Methods this engine implements end to end today; others we know are answered
# 405 with Allow (§8.2.1), unknown ones 501.
KNOWN_METHODS = frozenset({
    "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "REFER", "NOTIFY",
    "SUBSCRIBE", "INFO", "UPDATE", "PRACK", "MESSAGE", "PUBLISH",
})
# Methods only meaningful inside a dialog: outside one they get 481 (RFC 3261
# §12.2.2; RFC 6086 INFO, RFC 3311 UPDATE, RFC 3262 PRACK, RFC 6665 NOTIFY).
IN_DIALOG_METHODS = frozenset({"BYE", "NOTIFY", "INFO", "UPDATE", "PRACK"})
SUPPORTED_OPTION_TAGS = frozenset({"path"})
ACCEPTED_BODY_TYPES = ("application/sdp",)


class Usage(Protocol):
    """Something that answers one kind of out-of-dialog request."""

    def __call__(self, request: Request, source: object, now: float, wall: float) -> Response:
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreConfig:
    server_name: str = "switch"
    allowed: tuple[str, ...] = ("OPTIONS", "REGISTER")   # methods advertised in Allow
    # Option tags a request may Require (RFC 3261 §8.2.2.3) and OPTIONS advertises:
    # "timer" too when the engine does session timers (RFC 4028).
    supported: tuple[str, ...] = tuple(sorted(SUPPORTED_OPTION_TAGS))


class UasCore:
    """Applies the §8.2 checks and routes each request to its usage."""

    def __init__(self, config: CoreConfig, make_tag: Callable[[], str]) -> None:
        self._config = config
        self._make_tag = make_tag
        self._usages: dict[str, Usage] = {"OPTIONS": self._options}
        self._allow = ", ".join(config.allowed)
        self._supported = frozenset(tag.lower() for tag in config.supported)

    def register_usage(self, method: str, usage: Usage) -> None:
        self._usages[method] = usage
        if method not in self._config.allowed:
            self._allow = ", ".join((*self._config.allowed, method))

    @property
    def allow(self) -> str:
        return self._allow

    def handle(self, request: Request, source: object, now: float, wall: float
               ) -> Response | None:
        """The response to send for a new server transaction, or None for ACK."""
        method = request.method
        if method == "ACK":
            return None     # §17.1.1.3 / §13.2.2.4: never answered
        try:
            response = self._check(request)
            if response is None:
                usage = self._usages.get(method)
                if usage is None:
                    response = self._not_here(request)
                else:
                    response = usage(request, source, now, wall)
        except SipError as exc:
            response = self.error_response(request, exc)
        self._decorate(response)
        return response

    def check(self, request: Request) -> Response | None:
        """The §8.2 checks alone, for usages that answer later (INVITE): the
        refusal to send, or None when the request may go on to its usage."""
        try:
            response = self._check(request)
        except SipError as exc:
            response = self.error_response(request, exc)
        if response is not None:
            self._decorate(response)
        return response

    def error_response(self, request: Request, exc: SipError) -> Response:
        response = make_response(request, exc.status, exc.reason, to_tag=self._make_tag(),
                                 extra=exc.headers)
        if exc.status == 400:
            # RFC 3261 §20.43: say what was wrong (warn-code 399: miscellaneous).
            detail = exc.detail.replace('"', "'")[:120]
            response.headers.add("Warning", f'399 {self._config.server_name} "{detail}"')
        return response

    def _check(self, request: Request) -> Response | None:
        method = request.method
        if method not in KNOWN_METHODS:
            return make_response(request, 501, to_tag=self._make_tag(),
                                 extra=(("Allow", self._allow),))
        parse_request_uri(request.uri)       # raises 416 / 400
        if method != "CANCEL":
            unsupported = [tag for tag in request.headers.get_list("require")
                           if tag.lower() not in self._supported]
            if unsupported:
                return make_response(request, 420, to_tag=self._make_tag(),
                                     extra=(("Unsupported", ", ".join(unsupported)),))
        if request.body and method in ("INVITE", "UPDATE", "OPTIONS"):
            content_type = (request.headers.get("content-type") or "").split(";")[0]
            if content_type.strip().lower() not in ACCEPTED_BODY_TYPES:
                return make_response(request, 415, to_tag=self._make_tag(),
                                     extra=(("Accept", ", ".join(ACCEPTED_BODY_TYPES)),))
        return None

    def _not_here(self, request: Request) -> Response:
        if request.method in IN_DIALOG_METHODS:
            # In-dialog methods outside any dialog we know (§12.2.2).
            return make_response(request, 481, to_tag=self._make_tag())
        return make_response(request, 405, to_tag=self._make_tag(),
                             extra=(("Allow", self._allow),))

    def _options(self, request: Request, source: object, now: float, wall: float) -> Response:
        # §11.2: a UAS answers OPTIONS as it would an INVITE; we say what we support.
        return make_response(request, 200, to_tag=self._make_tag(), extra=(
            ("Allow", self._allow),
            ("Accept", ", ".join(ACCEPTED_BODY_TYPES)),
            ("Accept-Encoding", "identity"),
            ("Accept-Language", "en"),
            ("Supported", ", ".join(sorted(self._supported))),
        ))

    def _decorate(self, response: Response) -> None:
        if "server" not in response.headers:
            response.headers.add("Server", self._config.server_name)
