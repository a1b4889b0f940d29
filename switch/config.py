"""Configuration: TOML file -> frozen, validated dataclasses.

Theory of operation
-------------------
The file is parsed with :mod:`tomllib` into plain Python values, then every
section is read through a small ``_Table`` helper that records each key it
consumes and each problem it finds.  Validation never stops at the first
problem: operators fix a config in one round trip, so ``ConfigError`` carries
the complete list.  Every problem is one line that starts with the key path
exactly as it is written in the file (``sip.port``, ``users[2].extension``,
``users[0].numbers[1]``; array indices are 0-based), so ``switch check-config``
output can be read next to the file.  Keys nobody consumed are reported as
unknown: a typo (``prot = 5070``) must not silently fall back to a default.

Command-line flags (``switch run --sip-port ...``) are applied with
:func:`apply_overrides`, which re-runs the same validation on the merged values
and names the flag in the problems it causes.

Units: durations are integer **seconds**, except the RFC 3261 transaction
timers ``sip.t1``/``t2``/``t4``, which are integer **milliseconds** because
the RFC states them in milliseconds (T1 = 500 ms).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Final

from switch import __version__

__all__ = [
    "AUTH_ALGORITHMS",
    "CallsConfig",
    "Config",
    "ConfigError",
    "DTMF_MODES",
    "FEATURE_NAMES",
    "FeaturesConfig",
    "HttpConfig",
    "LogConfig",
    "MediaConfig",
    "SipConfig",
    "StorageConfig",
    "User",
    "apply_overrides",
    "load_config",
    "parse_config",
]

AUTH_ALGORITHMS: Final = ("MD5", "SHA-256")
LOG_FORMATS: Final = ("json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
MIN_TOKEN_LENGTH: Final = 8
DTMF_MODES: Final = ("auto", "rfc4733", "inband", "info")
FEATURE_NAMES: Final = ("blind_transfer", "warm_transfer", "warm_transfer_complete",
                        "warm_transfer_cancel", "voicemail_transfer")
_NUMBERED_FEATURES: Final = frozenset({"blind_transfer", "warm_transfer", "voicemail_transfer"})


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class SipConfig:
    host: str = "0.0.0.0"
    port: int = 5060
    realm: str = "switch.local"
    auth_algorithms: tuple[str, ...] = ("MD5",)
    nonce_lifetime: int = 300
    """Seconds a digest nonce is accepted before the answer is ``stale=true``."""
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_message_size: int = 65535
    """Bytes; larger messages are refused (513) or dropped."""
    max_headers: int = 256
    auth_failure_limit: int = 20
    """Failed authentications from one source address within the window ..."""
    auth_failure_window: int = 60
    """... (seconds) before the source is refused with 403 ..."""
    auth_block_seconds: int = 300
    """... for this many seconds."""
    user_agent: str = f"switch/{__version__}"
    """Value of the User-Agent (requests) and Server (responses) headers."""
    t1: int = 500
    """RFC 3261 T1, milliseconds (RTT estimate)."""
    t2: int = 4000
    """RFC 3261 T2, milliseconds (maximum retransmit interval)."""
    t4: int = 5000
    """RFC 3261 T4, milliseconds (maximum time a message stays in the network)."""

    @property
    def t1_seconds(self) -> float:
        return self.t1 / 1000.0

    @property
    def t2_seconds(self) -> float:
        return self.t2 / 1000.0

    @property
    def t4_seconds(self) -> float:
        return self.t4 / 1000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # repr=False: a Config printed in a traceback or a log must not leak it.
    token: str | None = field(default=None, repr=False)
    """Bearer token for /api/v1; ``None`` disables the API (every call is 401)."""
    event_queue_size: int = 1000
    """Events buffered per WebSocket client before it is dropped as too slow."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaConfig:
    host: str = "127.0.0.1"
    """Address written into SDP (c=) and bound for RTP."""
    rtp_port_min: int = 20000
    rtp_port_max: int = 20999


@dataclass(frozen=True, slots=True, kw_only=True)
class CallsConfig:
    """Call control (``[calls]``); durations in seconds."""

    ring_timeout: int = 60
    """Unanswered calls get 408 after this long; the callee's phones are CANCELed."""
    max_calls: int = 1000
    """Calls in progress at most; more INVITEs are refused with 503."""
    media_timeout: int = 60
    """A leg that sends no RTP this long while it should is hung up (not while held)."""
    session_timer: bool = True
    """Use RFC 4028 session timers (accepted when a phone offers them, offered to callees)."""
    session_expires: int = 1800
    """The session interval asked for on the callee side (RFC 4028 §4)."""
    min_se: int = 90
    """The smallest session interval accepted (RFC 4028 §5: at least 90)."""
    shutdown_grace: int = 2
    """At shutdown, seconds to wait for the 200s to the BYEs ending active calls."""
    max_duration: int = 0
    """An answered call is released (BYE both ways, cause ``max_duration``) this long
    after its answer; 0 = unlimited.  The backstop for a dead signalling-only call."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeaturesConfig:
    """DTMF feature codes (``[features]``).

    ``codes`` maps an action name to its digit pattern (``switch.dtmf.features``):
    literal digits ``0-9 * # A-D`` and at most one ``{number}``.  In the file a code
    that takes a number may be given as its prefix alone (``blind_transfer = "*1"``
    means ``*1{number}#``); an empty string disables the code.
    """

    codes: tuple[tuple[str, str], ...] = (
        ("blind_transfer", "*1{number}#"),
        ("warm_transfer", "*2{number}#"),
        ("warm_transfer_complete", "*3"),
        ("warm_transfer_cancel", "*4"),
        ("voicemail_transfer", "*5{number}#"),
    )
    inter_digit_timeout: int = 3
    """Seconds between two digits of a code before the held digits are let go."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    path: Path = Path("switch.db")
    """SQLite file; relative paths are relative to ``data_dir``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    format: str = "json"
    level: str = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    extension: str
    name: str
    password: str = field(repr=False)
    numbers: tuple[str, ...] = ()
    voicemail: bool = True
    dtmf_mode: str = "auto"
    """Which DTMF sources count for this user's legs: "auto" (in-band, RFC 4733 and
    SIP INFO, one report per keypress), "rfc4733", "inband" or "info" only."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    data_dir: Path = Path("./var")
    sip: SipConfig = field(default_factory=SipConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    log: LogConfig = field(default_factory=LogConfig)
    users: tuple[User, ...] = ()
    source: Path | None = None
    """The file this was loaded from (``None`` when built in code)."""
    _routes: Mapping[str, User] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        # Precomputed so routing a Request-URI is one dict lookup.
        routes: dict[str, User] = {}
        for user in self.users:
            routes.setdefault(user.extension, user)
            for number in user.numbers:
                digits = number.removeprefix("+")
                # CONTRACT: a number matches "E.164 with +, or the same digits without it".
                routes.setdefault(digits, user)
                routes.setdefault("+" + digits, user)
        object.__setattr__(self, "_routes", routes)

    @property
    def storage_path(self) -> Path:
        return self.storage.path if self.storage.path.is_absolute() else (
            self.data_dir / self.storage.path
        )

    def lookup(self, user_part: str) -> User | None:
        """The user a Request-URI user part routes to (extension or number)."""
        return self._routes.get(user_part)

    def user(self, extension: str) -> User | None:
        """The user with this extension (not a number)."""
        user = self._routes.get(extension)
        return user if user is not None and user.extension == extension else None


# --------------------------------------------------------------------------- reading


class _Missing:
    pass


_MISSING: Final = _Missing()

_EXTENSION_RE: Final = re.compile(r"[0-9]{1,15}")
_NUMBER_RE: Final = re.compile(r"\+?[0-9]{1,15}")
_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
# Characters that would break a header or a quoted-string if written into SIP.
_UNSAFE_IN_HEADER_RE: Final = re.compile(r'[\x00-\x1f\x7f"\\]')
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


def _show(value: object) -> str:
    """How a wrong value is quoted in a problem line (TOML-like)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime | date | time):
        return f"a date/time ({value.isoformat()})"
    return type(value).__name__


class _Table:
    """One TOML table being validated; remembers consumed keys and problems."""

    def __init__(self, data: Mapping[str, object], path: str, problems: list[str]) -> None:
        self._data = data
        self._path = path
        self._problems = problems
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def problem(self, name: str, message: str) -> None:
        self._problems.append(f"{self.key(name)}: {message}")

    def raw(self, name: str) -> object:
        self._seen.add(name)
        return self._data.get(name, _MISSING)

    def table(self, name: str) -> _Table:
        value = self.raw(name)
        if value is _MISSING:
            return _Table({}, self.key(name), self._problems)
        if not isinstance(value, Mapping):
            self.problem(name, f"must be a table ([{self.key(name)}]), got {_show(value)}")
            return _Table({}, self.key(name), self._problems)
        return _Table(value, self.key(name), self._problems)

    def integer(self, name: str, default: int, lo: int, hi: int, hint: str = "") -> int:
        value = self.raw(name)
        if value is _MISSING:
            return default
        # bool is an int subclass in Python; `port = true` is still a mistake.
        if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
            return value
        self.problem(name, f"must be an integer {lo}-{hi}{hint}, got {_show(value)}")
        return default

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool):
            return value
        self.problem(name, f"must be true or false, got {_show(value)}")
        return default

    def string(self, name: str, default: str | None, *, required: bool = False) -> str | None:
        """A non-empty string; ``None`` only when missing and not required."""
        value = self.raw(name)
        if value is _MISSING:
            if required:
                self.problem(name, "missing (required)")
            return default
        if not isinstance(value, str):
            self.problem(name, f"must be a string, got {_show(value)}")
            return default
        if not value.strip():
            self.problem(name, "must not be empty")
            return default
        return value

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value = self.raw(name)
        if value is _MISSING:
            return default
        if isinstance(value, str) and value in choices:
            return value
        allowed = ", ".join(json.dumps(c) for c in choices)
        self.problem(name, f"must be one of {allowed}, got {_show(value)}")
        return default

    def host(self, name: str, default: str) -> str:
        value = self.string(name, None)
        if value is None:
            return default
        if not _is_host(value):
            self.problem(name, f"must be an IP address or host name, got {_show(value)}")
            return default
        return value

    def finish(self) -> None:
        """Report keys present in the file that nobody asked for."""
        known = sorted(self._seen)
        for name in self._data:
            if name in self._seen:
                continue
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            self.problem(name, f"unknown key{hint}")


def _is_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return _HOSTNAME_RE.fullmatch(value) is not None
    return True


# --------------------------------------------------------------------------- sections


def _read_sip(t: _Table) -> SipConfig:
    d = SipConfig()
    host = t.host("host", d.host)
    port = t.integer("port", d.port, 0, 65535, " (0 = pick a free port)")
    realm = t.string("realm", d.realm) or d.realm
    if _UNSAFE_IN_HEADER_RE.search(realm):
        t.problem("realm", f"must not contain quotes, backslashes or control characters, "
                           f"got {_show(realm)}")
        realm = d.realm
    algorithms = _read_algorithms(t, d.auth_algorithms)
    nonce_lifetime = t.integer("nonce_lifetime", d.nonce_lifetime, 10, 86400)
    min_expires = t.integer("min_expires", d.min_expires, 1, 86400)
    max_expires = t.integer("max_expires", d.max_expires, 1, 604800)
    default_expires = t.integer("default_expires", d.default_expires, 1, 604800)
    if min_expires > max_expires:
        t.problem("max_expires", f"must be at least {t.key('min_expires')} ({min_expires}), "
                                 f"got {max_expires}")
    elif not min_expires <= default_expires <= max_expires:
        t.problem("default_expires",
                  f"must be between {t.key('min_expires')} ({min_expires}) and "
                  f"{t.key('max_expires')} ({max_expires}), got {default_expires}")
    max_message_size = t.integer("max_message_size", d.max_message_size, 1024, 16 * 1024 * 1024)
    max_headers = t.integer("max_headers", d.max_headers, 16, 10000)
    failure_limit = t.integer("auth_failure_limit", d.auth_failure_limit, 1, 1_000_000)
    failure_window = t.integer("auth_failure_window", d.auth_failure_window, 1, 86400)
    block_seconds = t.integer("auth_block_seconds", d.auth_block_seconds, 0, 86400)
    user_agent = t.string("user_agent", d.user_agent) or d.user_agent
    if _CONTROL_RE.search(user_agent):
        t.problem("user_agent", f"must not contain control characters, got {_show(user_agent)}")
        user_agent = d.user_agent
    t1 = t.integer("t1", d.t1, 1, 60000, " (milliseconds)")
    t2 = t.integer("t2", d.t2, 1, 600000, " (milliseconds)")
    t4 = t.integer("t4", d.t4, 1, 600000, " (milliseconds)")
    if t2 < t1:
        t.problem("t2", f"must be at least {t.key('t1')} ({t1} ms), got {t2}")
    t.finish()
    return SipConfig(
        host=host, port=port, realm=realm, auth_algorithms=algorithms,
        nonce_lifetime=nonce_lifetime, min_expires=min_expires, max_expires=max_expires,
        default_expires=default_expires, max_message_size=max_message_size,
        max_headers=max_headers, auth_failure_limit=failure_limit,
        auth_failure_window=failure_window, auth_block_seconds=block_seconds,
        user_agent=user_agent, t1=t1, t2=t2, t4=t4,
    )


def _read_algorithms(t: _Table, default: tuple[str, ...]) -> tuple[str, ...]:
    value = t.raw("auth_algorithms")
    if value is _MISSING:
        return default
    allowed = ", ".join(json.dumps(a) for a in AUTH_ALGORITHMS)
    if not isinstance(value, list) or not value:
        t.problem("auth_algorithms",
                  f"must be a non-empty array of {allowed}, got {_show(value)}")
        return default
    result: list[str] = []
    ok = True
    for i, item in enumerate(value):
        name = f"auth_algorithms[{i}]"
        if not isinstance(item, str) or item not in AUTH_ALGORITHMS:
            t.problem(name, f"must be one of {allowed}, got {_show(item)}")
            ok = False
        elif item in result:
            t.problem(name, f"duplicate {_show(item)}")
            ok = False
        else:
            result.append(item)
    return tuple(result) if ok else default


def _read_http(t: _Table) -> HttpConfig:
    d = HttpConfig()
    host = t.host("host", d.host)
    port = t.integer("port", d.port, 0, 65535, " (0 = pick a free port)")
    token = t.string("token", None)
    if token is not None:
        if len(token) < MIN_TOKEN_LENGTH:
            t.problem("token", f"must be at least {MIN_TOKEN_LENGTH} characters")
            token = None
        elif any(c.isspace() or not c.isprintable() for c in token):
            t.problem("token", "must not contain spaces or control characters")
            token = None
    queue = t.integer("event_queue_size", d.event_queue_size, 1, 1_000_000)
    t.finish()
    return HttpConfig(host=host, port=port, token=token, event_queue_size=queue)


def _read_media(t: _Table) -> MediaConfig:
    d = MediaConfig()
    host = t.string("host", d.host) or d.host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        t.problem("host", f"must be an IP address (it is written into SDP), got {_show(host)}")
    else:
        if address.is_unspecified:
            # c=0.0.0.0 means "hold" to many peers (RFC 2543 legacy), never "any".
            t.problem("host", f"must be an address peers can reach, not {_show(host)}")
    lo = t.integer("rtp_port_min", d.rtp_port_min, 1, 65535)
    hi = t.integer("rtp_port_max", d.rtp_port_max, 1, 65535)
    if hi <= lo:
        t.problem("rtp_port_max", f"must be greater than {t.key('rtp_port_min')} ({lo}), got {hi}")
    t.finish()
    return MediaConfig(host=host, rtp_port_min=lo, rtp_port_max=hi)


def _read_calls(t: _Table) -> CallsConfig:
    d = CallsConfig()
    ring_timeout = t.integer("ring_timeout", d.ring_timeout, 1, 600)
    max_calls = t.integer("max_calls", d.max_calls, 1, 1_000_000)
    media_timeout = t.integer("media_timeout", d.media_timeout, 1, 86400)
    session_timer = t.boolean("session_timer", d.session_timer)
    # RFC 4028 §4: Min-SE is never below 90 s.
    min_se = t.integer("min_se", d.min_se, 90, 86400)
    session_expires = t.integer("session_expires", d.session_expires, 90, 86400)
    if session_expires < min_se:
        t.problem("session_expires",
                  f"must be at least {t.key('min_se')} ({min_se}), got {session_expires}")
    shutdown_grace = t.integer("shutdown_grace", d.shutdown_grace, 0, 8)
    max_duration = t.integer("max_duration", d.max_duration, 0, 604_800, " (0 = unlimited)")
    t.finish()
    return CallsConfig(ring_timeout=ring_timeout, max_calls=max_calls,
                       media_timeout=media_timeout, session_timer=session_timer,
                       session_expires=max(session_expires, min_se), min_se=min_se,
                       shutdown_grace=shutdown_grace, max_duration=max_duration)


_PATTERN_RE: Final = re.compile(r"([0-9*#A-D]*)(\{number\})?([*#A-D][0-9*#A-D]*)?")


def _read_features(t: _Table) -> FeaturesConfig:
    d = FeaturesConfig()
    defaults = dict(d.codes)
    codes: list[tuple[str, str]] = []
    for name in FEATURE_NAMES:
        value = t.raw(name)
        if value is _MISSING:
            codes.append((name, defaults[name]))
            continue
        if not isinstance(value, str):
            t.problem(name, f'must be a string of DTMF digits like "*1", got {_show(value)}')
            continue
        if not value:
            continue                                  # disabled
        pattern = value
        if "{number}" not in value and name in _NUMBERED_FEATURES:
            pattern = value + "{number}#"
        m = _PATTERN_RE.fullmatch(pattern)
        if m is None or not m.group(1):
            t.problem(name, "must be DTMF digits 0-9 * # A-D starting with a literal, with at "
                            "most one {number} followed by * # or A-D (or nothing), "
                            f"got {_show(value)}")
            continue
        if name in _NUMBERED_FEATURES and m.group(2) is None:
            t.problem(name, f"needs a {{number}}, got {_show(value)}")
            continue
        codes.append((name, pattern))
    # Two codes whose literal prefixes clash: one could never be dialled.
    prefixes = {name: _PATTERN_RE.fullmatch(p).group(1)  # type: ignore[union-attr]
                for name, p in codes}
    plain = {name for name, p in codes if "{number}" not in p}
    for name, prefix in prefixes.items():
        for other, other_prefix in prefixes.items():
            if other == name or FEATURE_NAMES.index(other) > FEATURE_NAMES.index(name):
                continue
            if prefix == other_prefix or (other in plain and prefix.startswith(other_prefix)) \
                    or (name in plain and other_prefix.startswith(prefix)):
                t.problem(name, f"{_show(dict(codes)[name])} clashes with "
                                f"{t.key(other)} ({_show(dict(codes)[other])})")
    timeout = t.integer("inter_digit_timeout", d.inter_digit_timeout, 1, 60, " (seconds)")
    t.finish()
    return FeaturesConfig(codes=tuple(codes), inter_digit_timeout=timeout)


def _read_storage(t: _Table) -> StorageConfig:
    path = t.string("path", None)
    t.finish()
    return StorageConfig(path=Path(path)) if path is not None else StorageConfig()


def _read_log(t: _Table) -> LogConfig:
    d = LogConfig()
    fmt = t.choice("format", d.format, LOG_FORMATS)
    level = t.choice("level", d.level, LOG_LEVELS)
    t.finish()
    return LogConfig(format=fmt, level=level)


def _read_users(root: _Table, problems: list[str]) -> tuple[User, ...]:
    value = root.raw("users")
    if value is _MISSING:
        return ()
    if not isinstance(value, list):
        root.problem("users", f"must be an array of tables ([[users]]), got {_show(value)}")
        return ()
    users: list[User] = []
    extensions: dict[str, str] = {}  # extension -> key path that declared it
    numbers: dict[str, str] = {}  # digits -> key path that declared it
    for i, entry in enumerate(value):
        path = f"users[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{path}: must be a table, got {_show(entry)}")
            continue
        t = _Table(entry, path, problems)
        extension = _read_extension(t)
        name = t.string("name", None, required=True)
        if name is not None and _CONTROL_RE.search(name):
            t.problem("name", f"must not contain control characters, got {_show(name)}")
        password = t.string("password", None, required=True)
        if password is not None and _CONTROL_RE.search(password):
            t.problem("password", "must not contain control characters")
        user_numbers = _read_numbers(t)
        voicemail = t.boolean("voicemail", True)
        dtmf_mode = t.choice("dtmf_mode", "auto", DTMF_MODES)
        t.finish()
        if extension is not None:
            if extension in extensions:
                t.problem("extension", f"duplicate {_show(extension)}")
            elif extension in numbers:
                t.problem("extension", f"{_show(extension)} is already a number of "
                                       f"{numbers[extension]}")
            else:
                extensions[extension] = path
        for j, number in enumerate(user_numbers):
            digits = number.removeprefix("+")
            key = f"numbers[{j}]"
            if digits in numbers:
                t.problem(key, f"duplicate {_show(number)}")
            elif digits in extensions:
                t.problem(key, f"{_show(number)} is already the extension of "
                               f"{extensions[digits]}")
            else:
                numbers[digits] = path
        if extension is not None and name is not None and password is not None:
            users.append(User(extension=extension, name=name, password=password,
                              numbers=user_numbers, voicemail=voicemail,
                              dtmf_mode=dtmf_mode))
    return tuple(users)


def _read_extension(t: _Table) -> str | None:
    value = t.raw("extension")
    if value is _MISSING:
        t.problem("extension", "missing (required)")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        t.problem("extension", f'must be a string of digits (quote it: "{value}"), got {value}')
        return None
    if not isinstance(value, str) or _EXTENSION_RE.fullmatch(value) is None:
        t.problem("extension", f"must be a string of 1-15 digits, got {_show(value)}")
        return None
    return value


def _read_numbers(t: _Table) -> tuple[str, ...]:
    value = t.raw("numbers")
    if value is _MISSING:
        return ()
    if not isinstance(value, list):
        t.problem("numbers", f'must be an array of strings like "+14155550101", '
                             f"got {_show(value)}")
        return ()
    result: list[str] = []
    for j, item in enumerate(value):
        if not isinstance(item, str) or _NUMBER_RE.fullmatch(item) is None:
            t.problem(f"numbers[{j}]", 'must be 1-15 digits with an optional leading "+" '
                                       f"(E.164), got {_show(item)}")
            continue
        result.append(item)
    return tuple(result)


# --------------------------------------------------------------------------- entry points


def parse_config(raw: Mapping[str, object], source: Path | None = None) -> Config:
    """Validate already-parsed TOML data; raises ConfigError with every problem."""
    problems: list[str] = []
    root = _Table(raw, "", problems)
    data_dir = root.string("data_dir", "./var") or "./var"
    sip = _read_sip(root.table("sip"))
    http = _read_http(root.table("http"))
    media = _read_media(root.table("media"))
    calls = _read_calls(root.table("calls"))
    features = _read_features(root.table("features"))
    storage = _read_storage(root.table("storage"))
    log = _read_log(root.table("log"))
    users = _read_users(root, problems)
    root.finish()
    if problems:
        raise ConfigError(problems)
    return Config(data_dir=Path(data_dir), sip=sip, http=http, media=media, calls=calls,
                  features=features, storage=storage, log=log, users=users, source=source)


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file; raises ConfigError (never OSError/TOMLDecodeError)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    return parse_config(raw, source=path)


# Flag name -> the key path it overrides (CONTRACT.md `switch run` flags).
_FLAG_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "data_dir": ("data_dir",),
    "sip_host": ("sip.host",),
    "sip_port": ("sip.port",),
    "http_host": ("http.host",),
    "http_port": ("http.port",),
    "rtp_ports": ("media.rtp_port_min", "media.rtp_port_max"),
    "log_format": ("log.format",),
    "log_level": ("log.level",),
}


def _to_raw(config: Config) -> dict[str, object]:
    """The inverse of parse_config, so overrides are validated by the same code."""
    s, h, m, c = config.sip, config.http, config.media, config.calls
    http: dict[str, object] = {"host": h.host, "port": h.port,
                               "event_queue_size": h.event_queue_size}
    if h.token is not None:
        http["token"] = h.token
    return {
        "data_dir": str(config.data_dir),
        "sip": {
            "host": s.host, "port": s.port, "realm": s.realm,
            "auth_algorithms": list(s.auth_algorithms), "nonce_lifetime": s.nonce_lifetime,
            "min_expires": s.min_expires, "max_expires": s.max_expires,
            "default_expires": s.default_expires, "max_message_size": s.max_message_size,
            "max_headers": s.max_headers, "auth_failure_limit": s.auth_failure_limit,
            "auth_failure_window": s.auth_failure_window,
            "auth_block_seconds": s.auth_block_seconds, "user_agent": s.user_agent,
            "t1": s.t1, "t2": s.t2, "t4": s.t4,
        },
        "http": http,
        "media": {"host": m.host, "rtp_port_min": m.rtp_port_min,
                  "rtp_port_max": m.rtp_port_max},
        "calls": {"ring_timeout": c.ring_timeout, "max_calls": c.max_calls,
                  "media_timeout": c.media_timeout, "session_timer": c.session_timer,
                  "session_expires": c.session_expires, "min_se": c.min_se,
                  "shutdown_grace": c.shutdown_grace, "max_duration": c.max_duration},
        "features": {
            **{name: "" for name in FEATURE_NAMES},
            **dict(config.features.codes),
            "inter_digit_timeout": config.features.inter_digit_timeout,
        },
        "storage": {"path": str(config.storage.path)},
        "log": {"format": config.log.format, "level": config.log.level},
        "users": [
            {"extension": u.extension, "name": u.name, "password": u.password,
             "numbers": list(u.numbers), "voicemail": u.voicemail, "dtmf_mode": u.dtmf_mode}
            for u in config.users
        ],
    }


def _flag_value(value: str | int) -> object:
    """Flags arrive as text; digits become integers so the range check applies."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def apply_overrides(config: Config, **flags: str | int | None) -> Config:
    """Apply ``switch run`` flags (None = not given); raises ConfigError naming the flag.

    Accepted flags: data_dir, sip_host, sip_port, http_host, http_port,
    rtp_ports ("MIN-MAX"), log_format, log_level.
    """
    unknown = sorted(set(flags) - set(_FLAG_KEYS))
    if unknown:
        raise TypeError(f"unknown override(s): {', '.join(unknown)}")
    raw = _to_raw(config)
    problems: list[str] = []
    used: dict[str, str] = {}  # key path -> flag spelling
    for flag, value in flags.items():
        if value is None:
            continue
        spelled = "--" + flag.replace("_", "-")
        for key in _FLAG_KEYS[flag]:
            used[key] = spelled
        if flag == "rtp_ports":
            match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(value))
            if match is None:
                problems.append(f"{spelled}: must be MIN-MAX (e.g. 20000-20999), "
                                f"got {_show(str(value))}")
                continue
            media = raw["media"]
            assert isinstance(media, dict)
            media["rtp_port_min"], media["rtp_port_max"] = int(match[1]), int(match[2])
            continue
        (key,) = _FLAG_KEYS[flag]
        section, _, name = key.rpartition(".")
        target = raw[section] if section else raw
        assert isinstance(target, dict)
        target[name] = _flag_value(value) if flag.endswith("_port") else value
    try:
        result = parse_config(raw, source=config.source)
    except ConfigError as exc:
        for problem in exc.problems:
            key, _, message = problem.partition(": ")
            problems.append(f"{used[key]} ({key}): {message}" if key in used else problem)
    if problems:
        raise ConfigError(problems)
    return result
