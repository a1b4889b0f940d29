"""The registrar: REGISTER processing per RFC 3261 §10.3 (sans-I/O).

Theory of operation
-------------------
``Registrar.handle(request, source, now, now_wall)`` runs the steps of RFC 3261
§10.3 on one REGISTER and returns a ``RegisterResult``: the response to send
and the binding events (``BindingAdded``/``Refreshed``/``Removed``) the driver
hands to the store and the event bus.  ``expire(now)`` returns
``BindingExpired`` events for the bindings whose time is up.

Decisions (where the RFC leaves a choice):

* Step 1, Request-URI: its host must be one of ``domains`` (the realm is
  always one); otherwise **404** (RFC 3261 §21.4.4: "...also returned if the
  domain in the Request-URI does not match any of the domains handled by the
  recipient").  ``domains=None`` accepts any host (a single-domain PBX).
  A user part in the Request-URI is tolerated (phones send one).
* Step 2, Require: we support ``path`` (RFC 3327) and nothing else; any other
  option tag → **420** with ``Unsupported`` (RFC 3261 §8.2.2.3).  RFC 5626
  ``outbound`` is *not* claimed (no keep-alive/flow handling), but
  ``+sip.instance``/``reg-id`` are stored and identify the binding.
* Steps 3-5: authentication comes first (401/403 from ``DigestAuthenticator``),
  so nothing about extensions can be learnt without valid credentials.  Then
  the To AOR: host not ours → 404; user part ≠ the authenticated account's
  extension → **403** (step 4: a user may only register their own extension);
  extension unknown to the directory → 404.
* Step 6: ``Contact: *`` must be alone and with ``Expires: 0``, else **400**.
* Step 7: expiry = contact ``expires`` param, else ``Expires`` header, else
  ``default_expires``; ``0 < e < min_expires`` → **423** with ``Min-Expires``;
  ``e > max_expires`` → clamped.  Same Call-ID with a CSeq not above the
  stored one → the request fails as a whole (**500** "Out Of Order"), no
  binding is touched; all updates of one request are applied atomically.
* Cap: at most ``max_bindings_per_aor`` bindings; a REGISTER that would
  exceed it evicts the least recently updated *other* bindings
  (``BindingRemoved(reason="evicted")``): a phone whose NAT port keeps
  changing must not lock its user out.  A single request that itself asks for more live
  contacts than the cap is refused with **403**.
* Path (RFC 3327 §5.3): stored and echoed in the 200 when the REGISTER's
  ``Supported`` has ``path``; ignored otherwise.
* 200 (step 8): every live binding of the AOR with its remaining
  ``expires``, a ``Date`` (RFC 1123 format, from ``now_wall``) and
  ``Supported: path``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final, Protocol

from switch.sip.auth import AuthResult, DigestAuthenticator
from switch.sip.errors import ParseError, SipError
from switch.sip.headers import NameAddr, contacts, cseq, to_header, unquote
from switch.sip.location import Binding, LocationService, Source
from switch.sip.message import Request, Response, make_response
from switch.sip.uri import SipUri, parse_request_uri

__all__ = [
    "SUPPORTED_OPTIONS",
    "BindingAdded",
    "BindingEvent",
    "BindingExpired",
    "BindingRefreshed",
    "BindingRemoved",
    "RegisterResult",
    "Registrar",
    "UserDirectory",
    "contact_key",
]

SUPPORTED_OPTIONS: Final = frozenset({"path"})
_MAX_DELTA: Final = 2**32 - 1    # RFC 3261 §20.19: larger values mean this


class UserDirectory(Protocol):
    """Which extensions exist (config users, later a database)."""

    def has_extension(self, extension: str) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingAdded:
    binding: Binding


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingRefreshed:
    binding: Binding
    previous: Binding


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingRemoved:
    binding: Binding
    reason: str         # "unregistered" (expires 0 / Contact *) | "evicted" (over the cap)


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingExpired:
    binding: Binding


BindingEvent = BindingAdded | BindingRefreshed | BindingRemoved | BindingExpired


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterResult:
    """What ``Registrar.handle`` decided.

    ``detail`` is log-safe; when ``auth`` failed its ``detail`` may tell
    "unknown user" from "wrong password" and belongs in debug logs only.
    """

    response: Response
    events: tuple[BindingEvent, ...] = ()
    auth: AuthResult | None = None
    aor: str | None = None
    detail: str = ""

    @property
    def status(self) -> int:
        return self.response.status


def canonical_uri(uri: SipUri) -> str:
    """A comparison key for a Contact URI (RFC 3261 §19.1.4, simplified).

    Scheme and host are case-insensitive, the user part is compared unescaped,
    parameters by lower-cased name, in any order; URI headers are ignored.
    """
    params = ";".join(sorted(
        f"{name.lower()}={(value or '').lower()}" if value is not None else name.lower()
        for name, value in uri.params))
    user = f"{uri.user_unescaped}@" if uri.user is not None else ""
    port = f":{uri.port}" if uri.port is not None else ""
    return f"{uri.scheme}:{user}{uri.host.lower()}{port};{params}"


def contact_key(uri: SipUri, instance_id: str | None, reg_id: int | None) -> str:
    """The binding identity within an AOR (see ``switch.sip.location``)."""
    if instance_id is not None:
        return f"instance:{instance_id}|{reg_id if reg_id is not None else ''}"
    return f"uri:{canonical_uri(uri)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _ContactRequest:
    """One Contact of the REGISTER, validated."""

    uri: SipUri
    key: str
    expires: int        # after clamping; 0 = remove
    q: float | None
    instance_id: str | None
    reg_id: int | None


def _delta_seconds(value: str, what: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise ParseError(f"bad {what} {value!r}")
    return min(int(text), _MAX_DELTA)


def _qvalue(value: str) -> float:
    # RFC 3261 §25.1: qvalue = ("0" [ "." 0*3DIGIT ]) / ("1" [ "." 0*3("0") ])
    text = value.strip()
    try:
        q = float(text)
    except ValueError:
        raise ParseError(f"bad q value {value!r}") from None
    if not (0.0 <= q <= 1.0) or not text[:1].isdigit():
        raise ParseError(f"bad q value {value!r}")
    return q


def _format_q(q: float) -> str:
    return f"{q:.3f}".rstrip("0").rstrip(".") if q not in (0.0, 1.0) else str(int(q))


class Registrar:
    """REGISTER handling on top of a ``LocationService`` (sans-I/O)."""

    def __init__(self, authenticator: DigestAuthenticator, users: UserDirectory,
                 location: LocationService, *, min_expires: int = 60,
                 max_expires: int = 3600, default_expires: int = 3600,
                 domains: Iterable[str] | None = None, max_bindings_per_aor: int = 10,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if not 0 < min_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= max_expires")
        if max_bindings_per_aor < 1:
            raise ValueError("max_bindings_per_aor must be at least 1")
        self.authenticator = authenticator
        self.users = users
        self.location = location
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = max(min_expires, min(default_expires, max_expires))
        self.max_bindings_per_aor = max_bindings_per_aor
        self.domains: frozenset[str] | None = None if domains is None else frozenset(
            {d.lower().strip("[]") for d in domains} | {authenticator.realm.lower()})
        self._random = random_bytes

    # --- queries for routing and the API ----------------------------------------

    def lookup(self, extension: str, now: float) -> list[Binding]:
        return self.location.lookup(extension, now)

    @property
    def binding_count(self) -> int:
        """Bindings held, expired-but-not-yet-swept included (O(1), for gauges)."""
        return len(self.location)

    def all_bindings(self, now: float) -> list[Binding]:
        return self.location.all_bindings(now)

    def expire(self, now: float) -> list[BindingExpired]:
        return [BindingExpired(binding=b) for b in self.location.expire(now)]

    def next_expiry(self) -> float | None:
        return self.location.next_expiry()

    def restore(self, bindings: Iterable[Binding], now: float, now_wall: float) -> int:
        """Load persisted bindings at start-up; returns how many are live."""
        return len(self.location.restore(bindings, now, now_wall))

    # --- REGISTER --------------------------------------------------------------

    def _serves(self, host: str) -> bool:
        return self.domains is None or host.lower().strip("[]") in self.domains

    def _reply(self, request: Request, status: int, reason: str | None = None,
               extra: Iterable[tuple[str, str]] = ()) -> Response:
        return make_response(request, status, reason, to_tag=self._random(6).hex(),
                             extra=extra)

    def handle(self, request: Request, source: Source, now: float,
               now_wall: float) -> RegisterResult:
        """Process one REGISTER (RFC 3261 §10.3); never raises a ``SipError``."""
        if request.method != "REGISTER":
            raise ValueError(f"not a REGISTER: {request.method}")
        auth: AuthResult | None = None
        aor: str | None = None
        try:
            # Step 1: is the Request-URI's domain ours?
            ruri = parse_request_uri(request.uri)
            if not isinstance(ruri, SipUri):
                raise SipError("Request-URI is not a SIP URI", status=404)
            if not self._serves(ruri.host):
                raise SipError(f"domain {ruri.host!r} not served", status=404)
            # Step 2: Require (RFC 3261 §8.2.2.3).
            unsupported = [tag for tag in request.headers.get_list("require")
                           if tag.lower() not in SUPPORTED_OPTIONS]
            if unsupported:
                raise SipError("unsupported Require", status=420,
                               headers=(("Unsupported", ", ".join(unsupported)),))
            # Step 3: authenticate.
            auth = self.authenticator.authenticate(request, source.host, now)
            if not auth.ok:
                assert auth.response is not None
                return RegisterResult(response=auth.response, auth=auth,
                                      detail=f"authentication {auth.outcome.value}")
            assert auth.user is not None
            # Steps 4-5: the AOR (To) must be ours and belong to the account.
            to = to_header(request)
            if not isinstance(to.uri, SipUri) or to.uri.user is None \
                    or not self._serves(to.uri.host):
                raise SipError("To is not an AOR of this domain", status=404)
            aor = to.uri.user_unescaped
            assert aor is not None
            if aor != auth.user.extension:
                raise SipError(f"account {auth.user.username!r} may not register {aor!r}",
                               status=403)
            if not self.users.has_extension(aor):
                raise SipError(f"unknown extension {aor!r}", status=404)
            events = self._update(request, aor, source, now, now_wall)
        except SipError as error:
            return RegisterResult(
                response=self._reply(request, error.status, error.reason, error.headers),
                auth=auth, aor=aor, detail=error.detail)
        return RegisterResult(response=self._ok(request, aor, now, now_wall), events=events,
                              auth=auth, aor=aor, detail="registered")

    def _parse_contacts(self, request: Request, items: list[NameAddr]) -> list[_ContactRequest]:
        header = request.headers.get("expires")
        header_expires = _delta_seconds(header, "Expires") if header is not None else None
        parsed: dict[str, _ContactRequest] = {}
        too_brief = False
        for item in items:
            if not isinstance(item.uri, SipUri):
                raise ParseError(f"Contact is not a SIP URI: {item.uri}")
            param = item.param("expires")
            if param is not None:
                expires = _delta_seconds(param, "Contact expires")
            elif header_expires is not None:
                expires = header_expires
            else:
                expires = self.default_expires
            if 0 < expires < self.min_expires:
                too_brief = True
            expires = min(expires, self.max_expires)
            q_text = item.param("q")
            q = _qvalue(q_text) if q_text is not None else None
            instance_text = item.param("+sip.instance")
            instance_id = unquote(instance_text) if instance_text else None
            reg_text = item.param("reg-id")
            reg_id = None
            if reg_text is not None:
                if not (reg_text.isascii() and reg_text.isdigit()) or not 0 < int(reg_text) < 2**31:
                    raise ParseError(f"bad reg-id {reg_text!r}")
                reg_id = int(reg_text)
            key = contact_key(item.uri, instance_id, reg_id)
            # A key listed twice: the last listing wins.
            parsed[key] = _ContactRequest(uri=item.uri, key=key, expires=expires, q=q,
                                          instance_id=instance_id, reg_id=reg_id)
        if too_brief:
            # RFC 3261 §10.3 step 7 / §21.4.17.
            raise SipError("expiration too brief", status=423,
                           headers=(("Min-Expires", str(self.min_expires)),))
        return list(parsed.values())

    def _update(self, request: Request, aor: str, source: Source, now: float,
                now_wall: float) -> tuple[BindingEvent, ...]:
        items = contacts(request)
        call_id = request.headers.get("call-id")
        if not call_id:
            raise ParseError("no Call-ID")
        seq = cseq(request).seq
        existing = {b.key: b for b in self.location.bindings(aor)}

        def in_order(binding: Binding) -> None:
            # RFC 3261 §10.3 step 7: same Call-ID needs a higher CSeq, else the
            # whole request fails and nothing is updated.
            if binding.call_id == call_id and seq <= binding.cseq:
                raise SipError("CSeq not above the stored one for this Call-ID",
                               status=500, reason="Out Of Order")

        if any(item.wildcard for item in items):
            # Step 6: "*" only alone and with Expires: 0.
            expires_header = request.headers.get("expires")
            if len(items) != 1 or expires_header is None \
                    or _delta_seconds(expires_header, "Expires") != 0:
                raise ParseError("Contact: * needs to be alone and with Expires: 0")
            for binding in existing.values():
                in_order(binding)
            for binding in existing.values():
                self.location.remove(aor, binding.key)
            return tuple(BindingRemoved(binding=b, reason="unregistered")
                         for b in existing.values())

        requested = self._parse_contacts(request, items)
        for item in requested:
            previous = existing.get(item.key)
            if previous is not None:
                in_order(previous)
        if sum(1 for i in requested if i.expires > 0) > self.max_bindings_per_aor:
            raise SipError("more contacts than allowed per user", status=403,
                           reason="Too Many Contacts")

        user_agent = request.headers.get("user-agent")
        path: tuple[str, ...] = ()
        if "path" in (tag.lower() for tag in request.headers.get_list("supported")):
            path = tuple(request.headers.get_list("path"))

        # Everything is validated: apply (atomically from the caller's view).
        events: list[BindingEvent] = []
        touched: set[str] = set()
        for item in requested:
            touched.add(item.key)
            previous = existing.get(item.key)
            if item.expires == 0:
                if previous is not None:
                    self.location.remove(aor, item.key)
                    del existing[item.key]
                    events.append(BindingRemoved(binding=previous, reason="unregistered"))
                continue
            binding = self.location.put(Binding(
                aor=aor, key=item.key, contact=str(item.uri), expires=item.expires,
                expires_at=now + item.expires, expires_at_wall=now_wall + item.expires,
                updated_at_wall=now_wall, call_id=call_id, cseq=seq, source=source,
                q=item.q, user_agent=user_agent, instance_id=item.instance_id,
                reg_id=item.reg_id, path=path))
            existing[item.key] = binding
            events.append(BindingAdded(binding=binding) if previous is None
                          else BindingRefreshed(binding=binding, previous=previous))

        # The cap: evict the least recently updated bindings this request did not touch.
        overflow = len(existing) - self.max_bindings_per_aor
        if overflow > 0:
            candidates = sorted((b for b in existing.values() if b.key not in touched),
                                key=lambda b: (b.updated_at_wall, b.expires_at))
            for victim in candidates[:overflow]:
                self.location.remove(aor, victim.key)
                events.append(BindingRemoved(binding=victim, reason="evicted"))
        return tuple(events)

    def _ok(self, request: Request, aor: str, now: float, now_wall: float) -> Response:
        """200 with every current binding (RFC 3261 §10.3 step 8)."""
        extra: list[tuple[str, str]] = []
        for binding in self.location.lookup(aor, now):
            params = [f"expires={binding.remaining(now)}"]
            if binding.q is not None:
                params.insert(0, f"q={_format_q(binding.q)}")
            if binding.instance_id is not None:
                params.append(f'+sip.instance="{binding.instance_id}"')
            if binding.reg_id is not None:
                params.append(f"reg-id={binding.reg_id}")
            extra.append(("Contact", f"<{binding.contact}>;" + ";".join(params)))
        if "path" in (tag.lower() for tag in request.headers.get_list("supported")):
            # RFC 3327 §5.3: the 200 carries the Path that was stored.
            extra.extend(("Path", value) for value in request.headers.get_list("path"))
        extra.append(("Date", formatdate(now_wall, usegmt=True)))
        extra.append(("Supported", ", ".join(sorted(SUPPORTED_OPTIONS))))
        return self._reply(request, 200, extra=extra)

