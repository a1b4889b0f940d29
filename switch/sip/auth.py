"""Digest authentication of SIP requests (RFC 3261 §22, RFC 7616, RFC 8760).

Theory of operation
-------------------
``DigestAuthenticator.authenticate(request, source_ip, now)`` looks at one
request and returns an ``AuthResult``: OK (with the authenticated user), or a
response to send (a challenge, a stale challenge, 400 or 403).  Nothing is
logged or sent from here; the caller turns the result into a response, a
metric and (at debug level, see ``AuthResult.detail``) a log line.

Nonces are stateless (RFC 7616 §3.3 leaves the construction to the server)::

    nonce = base64url(timestamp_ms[8] | salt[8] | HMAC-SHA256(secret, ts|salt|realm)[:16])

so a nonce needs no storage, cannot be forged without the secret, is bound to
the realm it was issued for, and carries its own age: a nonce older than
``nonce_lifetime`` whose digest is otherwise correct is answered with
``stale=true`` (RFC 7616 §3.3: the client retries with the new nonce without
asking the user).  The salt makes every challenge's nonce unique, so the
nonce-count bookkeeping below never mixes two clients.

Replay (RFC 7616 §3.4 / §5.8): for ``qop=auth`` the highest ``nc`` accepted
per nonce is kept in a bounded LRU table; an ``nc`` not above it is a replay.
A nonce that is not in the table (never used, or evicted) is accepted only
with ``nc=00000001``; a higher count gets a stale challenge, so evicting an
entry can never re-open a replay window.  The legacy answer without ``qop``
(RFC 2069; pyVoIP 1.6.8 sends it) has no count and is protected only by the
nonce lifetime; it can be switched off with ``allow_legacy_no_qop=False``.

Wrong password and unknown user are indistinguishable from outside: both
get the same fresh challenge, and an unknown user costs the same hash work
(a dummy HA1 is hashed), so timing has the same shape.  The failure limiter
counts both alike.

Brute-force limiter: failures are counted per source IP and per
(source IP, username) in fixed windows; past the limit the source (or the
pair) is answered 403 for ``block_seconds`` without looking at the
credentials.  The pair limit lets one misconfigured phone behind an office
NAT lock itself out without locking out its neighbours; the per-IP limit
(higher) catches password spraying across usernames.  Memory is bounded
(LRU tables).

Time is a parameter (``now``, seconds, any monotonic clock; nonces issued
before a restart are simply stale or unverifiable afterwards), randomness is
injectable (``random_bytes``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Protocol

from switch.sip.errors import ParseError
from switch.sip.headers import Credentials, parse_auth, quote
from switch.sip.message import Request, Response, make_response
from switch.sip.uri import SipUri, Uri, parse_uri

__all__ = [
    "ALGORITHMS",
    "AuthOutcome",
    "AuthResult",
    "CredentialSource",
    "DigestAuthenticator",
    "FailureLimiter",
    "StaticCredentials",
    "UserCredentials",
    "compute_ha1",
    "digest_response",
]

# RFC 7616 §3.2 / RFC 8760 §2: algorithm name -> hash function.  The "-sess"
# variants use the same hash with a session HA1 (RFC 7616 §3.4.2).
_HASHES: Final[dict[str, Callable[[bytes], str]]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data).hexdigest(),
}
ALGORITHMS: Final = ("SHA-512-256", "SHA-256", "MD5",
                     "SHA-512-256-sess", "SHA-256-sess", "MD5-sess")
# Preference order of challenges (RFC 8760 §2.4: most preferred first).
_PREFERENCE: Final = {name.upper(): rank for rank, name in enumerate(ALGORITHMS)}
_DUMMY_PASSWORD: Final = "\x00switch-dummy-password\x00"
_NONCE_RAW_LEN: Final = 32      # 8 timestamp + 8 salt + 16 mac
_NC_LEN: Final = 8              # RFC 7616 §3.4: nc is 8LHEX


def _base_algorithm(name: str) -> tuple[str, bool]:
    """``("SHA-256", True)`` for ``"sha-256-sess"``; KeyError when unknown."""
    upper = name.upper()
    sess = upper.endswith("-SESS")
    base = upper[:-5] if sess else upper
    if base not in _HASHES:
        raise KeyError(name)
    return base, sess


def canonical_algorithm(name: str) -> str:
    """The spelling used on the wire (RFC 7616 §3.3: ``MD5-sess``, ``SHA-256``)."""
    base, sess = _base_algorithm(name)
    return f"{base}-sess" if sess else base


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """HA1 = H(username:realm:password) (RFC 7616 §3.4.2), not yet "-sess" adjusted."""
    base, _ = _base_algorithm(algorithm)
    return _HASHES[base](f"{username}:{realm}:{password}".encode())


def digest_response(*, algorithm: str, ha1: str, nonce: str, method: str, uri: str,
                    qop: str | None = None, nc: str | None = None,
                    cnonce: str | None = None) -> str:
    """The expected ``response`` value (RFC 7616 §3.4.1, RFC 2069 without qop).

    ``ha1`` is H(username:realm:password); for "-sess" algorithms the session
    HA1 = H(HA1:nonce:cnonce) is derived here (RFC 7616 §3.4.2).
    """
    base, sess = _base_algorithm(algorithm)
    h = _HASHES[base]
    if sess:
        ha1 = h(f"{ha1}:{nonce}:{cnonce or ''}".encode())
    ha2 = h(f"{method}:{uri}".encode())      # qop=auth: A2 = Method:request-uri (§3.4.3)
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{ha2}".encode())


@dataclass(frozen=True, slots=True, kw_only=True)
class UserCredentials:
    """What the server knows about one digest username.

    Either the clear ``password`` or, per algorithm (base name, e.g.
    ``"MD5"``, ``"SHA-256"``), the precomputed HA1 = H(username:realm:password)
    for *this* realm.  ``extension`` is the AOR user part the account may
    register (RFC 3261 §10.3 step 4).
    """

    username: str
    extension: str
    password: str | None = field(default=None, repr=False)
    ha1: Mapping[str, str] = field(default_factory=dict, repr=False)

    def ha1_for(self, algorithm: str, realm: str) -> str | None:
        base, _ = _base_algorithm(algorithm)
        for name, value in self.ha1.items():
            if name.upper() == base:
                return value.lower()
        if self.password is not None:
            return compute_ha1(base, self.username, realm, self.password)
        return None


class CredentialSource(Protocol):
    """Where digest credentials come from (config users, later a database)."""

    def lookup(self, username: str) -> UserCredentials | None: ...


class StaticCredentials:
    """An in-memory ``CredentialSource`` (and user directory) built from config users.

    The digest username of a user is their extension.
    """

    __slots__ = ("_users", "_extensions")

    def __init__(self, users: Iterable[UserCredentials]) -> None:
        self._users: dict[str, UserCredentials] = {u.username: u for u in users}
        self._extensions = frozenset(u.extension for u in self._users.values())

    @classmethod
    def from_passwords(cls, pairs: Iterable[tuple[str, str]]) -> StaticCredentials:
        """From ``(extension, password)`` pairs."""
        return cls(UserCredentials(username=ext, extension=ext, password=pw)
                   for ext, pw in pairs)

    def lookup(self, username: str) -> UserCredentials | None:
        return self._users.get(username)

    def has_extension(self, extension: str) -> bool:
        return extension in self._extensions


class AuthOutcome(Enum):
    OK = "ok"
    CHALLENGE = "challenge"   # no credentials for our realm: 401/407
    STALE = "stale"           # valid digest, expired nonce: 401/407 stale=true
    FAILED = "failed"         # wrong/unknown/forged/replayed: fresh 401/407 (or 400)
    BLOCKED = "blocked"       # the limiter refuses the source: 403


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResult:
    """The outcome of authenticating one request.

    ``response`` is what to send (None when OK).  ``username`` is the claimed
    digest username (None without credentials); ``user`` the authenticated
    account (OK only).  ``detail`` is a log-safe reason for *debug* logs only:
    it distinguishes "unknown user" from "wrong password", which INFO logs
    and responses must not.
    """

    outcome: AuthOutcome
    response: Response | None = None
    username: str | None = None
    user: UserCredentials | None = None
    algorithm: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


@dataclass(slots=True)
class _Counter:
    window_start: float
    failures: int = 0
    blocked_until: float = float("-inf")


class FailureLimiter:
    """Fixed-window failure counter with a cooldown, bounded by LRU eviction."""

    __slots__ = ("limit", "window", "block_seconds", "capacity", "_entries")

    def __init__(self, *, limit: int, window: float, block_seconds: float,
                 capacity: int = 65536) -> None:
        self.limit = limit
        self.window = window
        self.block_seconds = block_seconds
        self.capacity = capacity
        self._entries: OrderedDict[object, _Counter] = OrderedDict()

    def blocked(self, key: object, now: float) -> bool:
        entry = self._entries.get(key)
        return entry is not None and now < entry.blocked_until

    def record_failure(self, key: object, now: float) -> bool:
        """Count a failure; True when this failure starts a block."""
        entry = self._entries.get(key)
        if entry is None:
            entry = _Counter(window_start=now)
            self._entries[key] = entry
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
            if now - entry.window_start >= self.window:
                entry.window_start = now
                entry.failures = 0
        if now < entry.blocked_until or self.block_seconds <= 0:
            return False
        entry.failures += 1
        if entry.failures >= self.limit:
            entry.blocked_until = now + self.block_seconds
            entry.failures = 0
            entry.window_start = now
            return True
        return False

    def __len__(self) -> int:
        return len(self._entries)


class DigestAuthenticator:
    """Challenges and verifies SIP digest credentials for one realm (sans-I/O)."""

    def __init__(self, realm: str, *, secret: bytes, credentials: CredentialSource,
                 algorithms: Iterable[str] = ("MD5",), nonce_lifetime: float = 300,
                 allow_legacy_no_qop: bool = True,
                 failure_limit: int = 20, failure_window: float = 60,
                 block_seconds: float = 300, source_failure_limit: int | None = None,
                 nc_capacity: int = 65536, limiter_capacity: int = 65536,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if not secret:
            raise ValueError("secret must not be empty")
        offered: list[str] = []
        for name in algorithms:
            canonical = canonical_algorithm(name)   # KeyError on an unknown name
            if canonical not in offered:
                offered.append(canonical)
        if not offered:
            raise ValueError("at least one algorithm must be offered")
        # RFC 8760 §2.4: one challenge per algorithm, most preferred first.
        offered.sort(key=lambda a: _PREFERENCE[a.upper()])
        self.realm = realm
        self.algorithms: tuple[str, ...] = tuple(offered)
        self.nonce_lifetime = nonce_lifetime
        self.allow_legacy_no_qop = allow_legacy_no_qop
        self._secret = secret
        self._credentials = credentials
        self._random = random_bytes
        self._realm_bytes = realm.encode()
        self._opaque = hmac.new(secret, b"opaque|" + self._realm_bytes,
                                hashlib.sha256).hexdigest()[:32]
        self._nc_seen: OrderedDict[str, int] = OrderedDict()
        self._nc_capacity = nc_capacity
        self._pair_limiter = FailureLimiter(limit=failure_limit, window=failure_window,
                                            block_seconds=block_seconds,
                                            capacity=limiter_capacity)
        self._source_limiter = FailureLimiter(
            limit=source_failure_limit if source_failure_limit is not None
            else failure_limit * 5,
            window=failure_window, block_seconds=block_seconds, capacity=limiter_capacity)

    # --- nonces (RFC 7616 §3.3) ------------------------------------------------

    def _mac(self, stamp: bytes, salt: bytes) -> bytes:
        # hmac.digest: the one-shot C path, ~3x cheaper than hmac.new(...).digest()
        return hmac.digest(self._secret, stamp + salt + b"|" + self._realm_bytes,
                           "sha256")[:16]

    def make_nonce(self, now: float) -> str:
        stamp = struct.pack(">q", int(now * 1000))
        salt = self._random(8)
        raw = stamp + salt + self._mac(stamp, salt)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _nonce_time(self, nonce: str) -> float | None:
        """The issue time of a nonce we made for this realm, else None."""
        if len(nonce) != 43:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except ValueError:
            return None
        if len(raw) != _NONCE_RAW_LEN:
            return None
        stamp, salt, mac = raw[:8], raw[8:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(stamp, salt)):
            return None
        millis: int = struct.unpack(">q", stamp)[0]
        return millis / 1000.0

    # --- challenges ------------------------------------------------------------

    def challenge_headers(self, request: Request, now: float, *,
                          stale: bool = False) -> tuple[tuple[str, str], ...]:
        """One WWW-/Proxy-Authenticate per offered algorithm (RFC 8760 §2.4)."""
        name = "WWW-Authenticate" if request.method == "REGISTER" else "Proxy-Authenticate"
        nonce = self.make_nonce(now)
        stale_param = ", stale=true" if stale else ""
        return tuple(
            (name, f"Digest realm={quote(self.realm)}, nonce=\"{nonce}\", "
                   f"opaque=\"{self._opaque}\", algorithm={algorithm}, qop=\"auth\""
                   f"{stale_param}")
            for algorithm in self.algorithms)

    def challenge(self, request: Request, now: float, *, stale: bool = False) -> Response:
        """401 for REGISTER, 407 otherwise (RFC 3261 §22.1, §22.3)."""
        status = 401 if request.method == "REGISTER" else 407
        return make_response(request, status, to_tag=self._random(6).hex(),
                             extra=self.challenge_headers(request, now, stale=stale))

    def _refuse(self, request: Request, status: int) -> Response:
        return make_response(request, status, to_tag=self._random(6).hex())

    # --- verification ----------------------------------------------------------

    def blocked(self, source_ip: str, now: float, username: str | None = None) -> bool:
        if self._source_limiter.blocked(source_ip, now):
            return True
        return username is not None and self._pair_limiter.blocked((source_ip, username), now)

    def _credentials_for_realm(self, request: Request) -> Credentials | None:
        """The Digest credentials addressed to our realm (RFC 3261 §22.4)."""
        field_name = "authorization" if request.method == "REGISTER" else "proxy-authorization"
        for value in request.headers.get_all(field_name):
            creds = parse_auth(value)
            if creds.scheme.lower() == "digest" and creds.get("realm") == self.realm:
                return creds
        return None

    def authenticate(self, request: Request, source_ip: str, now: float) -> AuthResult:
        """Verify ``request``'s credentials; see the module docstring."""
        try:
            creds = self._credentials_for_realm(request)
        except ParseError:
            creds = None
            malformed = True
        else:
            malformed = False
        username = creds.get("username") if creds is not None else None
        if self.blocked(source_ip, now, username):
            return AuthResult(outcome=AuthOutcome.BLOCKED, response=self._refuse(request, 403),
                              username=username, detail="source blocked by failure limiter")
        if malformed:
            return self._failed(request, source_ip, None, now, "malformed credentials",
                                status=400)
        if creds is None:
            return AuthResult(outcome=AuthOutcome.CHALLENGE,
                              response=self.challenge(request, now),
                              detail="no credentials for realm")
        return self._verify(request, creds, source_ip, now)

    def _failed(self, request: Request, source_ip: str, username: str | None, now: float,
                detail: str, *, status: int | None = None,
                algorithm: str | None = None) -> AuthResult:
        self._source_limiter.record_failure(source_ip, now)
        if username is not None:
            self._pair_limiter.record_failure((source_ip, username), now)
        response = self._refuse(request, status) if status is not None \
            else self.challenge(request, now)
        return AuthResult(outcome=AuthOutcome.FAILED, response=response, username=username,
                          algorithm=algorithm, detail=detail)

    def _verify(self, request: Request, creds: Credentials, source_ip: str,
                now: float) -> AuthResult:
        params = creds.params
        username = params.get("username")
        nonce = params.get("nonce")
        uri = params.get("uri")
        answer = params.get("response")
        if not username or nonce is None or uri is None or not answer:
            return self._failed(request, source_ip, username, now,
                                "credentials lack username/nonce/uri/response", status=400)
        # RFC 7616 §3.4: no algorithm parameter means MD5.
        try:
            algorithm = canonical_algorithm(params.get("algorithm") or "MD5")
        except KeyError:
            algorithm = ""
        if algorithm not in self.algorithms:
            return self._failed(request, source_ip, username, now,
                                "algorithm not offered")
        # RFC 2617 §3.2.2.5 / RFC 3261 §22.4: the digest must be for this Request-URI.
        if not _same_resource(uri, request.uri):
            return self._failed(request, source_ip, username, now,
                                "digest uri does not match Request-URI", status=400,
                                algorithm=algorithm)
        opaque = params.get("opaque")
        if opaque is not None and not hmac.compare_digest(opaque.encode(),
                                                          self._opaque.encode()):
            return self._failed(request, source_ip, username, now, "opaque mismatch",
                                algorithm=algorithm)
        qop = params.get("qop")
        nc = params.get("nc")
        cnonce = params.get("cnonce")
        if qop is not None:
            if qop.lower() != "auth":
                return self._failed(request, source_ip, username, now, "qop not offered",
                                    algorithm=algorithm)
            if not cnonce or nc is None or len(nc) != _NC_LEN or not _is_hex(nc):
                return self._failed(request, source_ip, username, now,
                                    "qop=auth without valid nc/cnonce", status=400,
                                    algorithm=algorithm)
        elif not self.allow_legacy_no_qop:
            return self._failed(request, source_ip, username, now,
                                "answer without qop refused", algorithm=algorithm)
        elif algorithm.endswith("-sess"):
            return self._failed(request, source_ip, username, now,
                                "-sess algorithm without qop", status=400,
                                algorithm=algorithm)
        issued = self._nonce_time(nonce)
        if issued is None:
            return self._failed(request, source_ip, username, now,
                                "nonce not issued by us for this realm", algorithm=algorithm)

        # Same hash work whether or not the user exists (no timing oracle).
        user = self._credentials.lookup(username)
        ha1 = user.ha1_for(algorithm, self.realm) if user is not None else None
        known = ha1 is not None
        if ha1 is None:
            ha1 = compute_ha1(algorithm, username, self.realm, _DUMMY_PASSWORD)
        expected = digest_response(algorithm=algorithm, ha1=ha1, nonce=nonce,
                                   method=request.method, uri=uri, qop=qop,
                                   nc=nc, cnonce=cnonce)
        matches = hmac.compare_digest(expected.encode(), answer.lower().encode())
        if not (matches and known):
            return self._failed(request, source_ip, username, now,
                                "wrong password" if known else "unknown user",
                                algorithm=algorithm)
        assert user is not None
        age = now - issued
        if age > self.nonce_lifetime or age < -self.nonce_lifetime:
            # RFC 7616 §3.3: stale only when the digest itself is valid.
            return AuthResult(outcome=AuthOutcome.STALE,
                              response=self.challenge(request, now, stale=True),
                              username=username, algorithm=algorithm, detail="nonce expired")
        if nc is not None:
            count = int(nc, 16)
            last = self._nc_seen.get(nonce)
            if last is None and count != 1:
                # Unknown to the table (evicted or never seen): we cannot tell a
                # replay from a continuation, so ask for a fresh nonce.
                return AuthResult(outcome=AuthOutcome.STALE,
                                  response=self.challenge(request, now, stale=True),
                                  username=username, algorithm=algorithm,
                                  detail="nonce count unknown for nonce")
            if last is not None and count <= last:
                return self._failed(request, source_ip, username, now,
                                    "nonce count replayed", algorithm=algorithm)
            self._nc_seen[nonce] = count
            self._nc_seen.move_to_end(nonce)
            if len(self._nc_seen) > self._nc_capacity:
                self._nc_seen.popitem(last=False)
        return AuthResult(outcome=AuthOutcome.OK, username=username, user=user,
                          algorithm=algorithm, detail="authenticated")


def _is_hex(text: str) -> bool:
    return all(ch in "0123456789abcdefABCDEF" for ch in text)


_DEFAULT_PORTS: Final = {"sip": 5060, "sips": 5061}


def _same_resource(digest_uri: str, request_uri: str) -> bool:
    """Lenient Request-URI match for the digest ``uri`` (RFC 3261 §22.4).

    Scheme, user, host (case-insensitive) and port (absent = the scheme's
    default) must agree; URI parameters are ignored, because clients write
    e.g. ``sip:host;transport=UDP`` there while the Request-URI is
    ``sip:host`` (pyVoIP 1.6.8).  Non-SIP URIs compare as text.
    """
    if digest_uri == request_uri:
        return True
    try:
        a: Uri = parse_uri(digest_uri)
        b: Uri = parse_uri(request_uri)
    except ParseError:
        return False
    if isinstance(a, SipUri) and isinstance(b, SipUri):
        return (a.scheme == b.scheme and a.user_unescaped == b.user_unescaped
                and a.host.lower() == b.host.lower()
                and (a.port or _DEFAULT_PORTS[a.scheme]) == (b.port or _DEFAULT_PORTS[b.scheme]))
    return a == b
