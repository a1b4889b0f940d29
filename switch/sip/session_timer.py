"""Session timers (RFC 4028), sans-I/O.

Theory of operation
-------------------
A session timer keeps a dialog from outliving a peer that vanished without a
BYE: one side, the *refresher*, sends a session refresh (re-INVITE or
UPDATE) every so often; if none succeeds within the session interval, either
side ends the session with a BYE.

Negotiation (pure functions below) happens on every INVITE, re-INVITE and
UPDATE and its 2xx:

* the UAC of a transaction offers ``Session-Expires: <delta>[;refresher=…]``
  and ``Min-SE``, with ``Supported: timer`` (§7.1);
* a UAS that finds the interval below its minimum answers 422 with its
  ``Min-SE`` (§8.1, §5); the UAC retries with a larger interval (§7.4);
* otherwise the UAS accepts, picks the refresher if the request left it open
  (§9) and echoes ``Session-Expires`` in the 2xx, with ``Require: timer`` when
  the UAC supports the extension; the 2xx fixes interval and refresher for
  both sides (§7.2, §9).
* ``refresher=uac`` / ``uas`` name the roles in *that* transaction, so the
  same session's refresher may be ``uac`` in one exchange and ``uas`` in the
  next; ``we_refresh`` below translates.

Then ``SessionTimer`` runs the clock, a table-driven machine::

              START_REFRESHER                 REFRESH_DUE
   INACTIVE ─────────────────▶ REFRESHER ─────────────────▶ REFRESHING
       │ START_REFRESHEE            ▲  any START_* (a successful  │
       ▼                            │  refresh renegotiates)      │
   REFRESHEE ◀──────────────────────┴─────────────────────────────┘
       │ EXPIRED (no refresh in time)        EXPIRED │
       └────────────────────▶ EXPIRED ◀──────────────┘

The refresher refreshes at half the interval (§10 recommends it); either
side sends BYE at ``expiry - min(32, interval/3)`` if no refresh succeeded
(§10).  Time is a parameter: ``get_timer()`` gives the next deadline,
``handle_timer(now)`` says what is due.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from switch.fsm import FastEnum
from switch.sip.dialog import InvalidTransition
from switch.sip.errors import ParseError, SipError
from switch.sip.headers import get_param, parse_params
from switch.sip.message import Request, Response

ABSOLUTE_MIN_SE = 90   # RFC 4028 §4: Min-SE MUST NOT be less than 90 seconds


class SessionIntervalTooSmall(SipError):
    """RFC 4028 §8.1 / §5: the offered Session-Expires is below our Min-SE."""

    status = 422
    reason = "Session Interval Too Small"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTimerConfig:
    enabled: bool = True
    session_expires: int = 1800     # what we ask for as UAC (RFC 4028 §4 recommends 1800)
    min_se: int = ABSOLUTE_MIN_SE   # the smallest interval we accept

    def __post_init__(self) -> None:
        if self.min_se < ABSOLUTE_MIN_SE or self.session_expires < self.min_se:
            raise ValueError(f"need {ABSOLUTE_MIN_SE} <= min_se <= session_expires: {self}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Negotiated:
    """The outcome of one negotiation: interval in seconds and who refreshes."""

    interval: int
    we_refresh: bool


def parse_session_expires(value: str) -> tuple[int, str | None]:
    """``delta-seconds *(;se-params)`` → (delta, refresher) (RFC 4028 §4)."""
    text = value.strip()
    semi = text.find(";")
    delta_text = (text if semi < 0 else text[:semi]).strip()
    if not (delta_text.isascii() and delta_text.isdigit()):
        raise ParseError(f"bad Session-Expires {value!r}")
    params = parse_params(text[semi:] if semi >= 0 else "", "Session-Expires")
    refresher = get_param(params, "refresher")
    if refresher is not None:
        refresher = refresher.lower()
        if refresher not in ("uac", "uas"):
            raise ParseError(f"bad refresher in Session-Expires {value!r}")
    return int(delta_text), refresher


def parse_min_se(value: str) -> int:
    text = value.strip().split(";")[0].strip()
    if not (text.isascii() and text.isdigit()):
        raise ParseError(f"bad Min-SE {value!r}")
    return int(text)


def _supports_timer(message: Request | Response) -> bool:
    tags = [t.lower() for t in message.headers.get_list("supported")]
    tags += [t.lower() for t in message.headers.get_list("require")]
    return "timer" in tags


def offer_headers(config: SessionTimerConfig, *, interval: int | None = None,
                  refresher: str | None = None) -> list[tuple[str, str]]:
    """Headers a UAC puts in an INVITE/UPDATE to use session timers (§7.1, §7.4)."""
    if not config.enabled:
        return []
    value = str(interval if interval is not None else config.session_expires)
    if refresher is not None:
        value += f";refresher={refresher}"
    return [("Supported", "timer"), ("Session-Expires", value),
            ("Min-SE", str(config.min_se))]


def check_request(request: Request, config: SessionTimerConfig) -> None:
    """Raise 422 (with our Min-SE) if the request's interval is too small (§8.1)."""
    value = request.headers.get("session-expires")
    if value is None or not config.enabled:
        return
    interval, _ = parse_session_expires(value)
    if interval < config.min_se:
        raise SessionIntervalTooSmall(
            f"Session-Expires {interval} < Min-SE {config.min_se}",
            headers=(("Min-SE", str(config.min_se)),))


def negotiate_as_uas(request: Request, config: SessionTimerConfig
                     ) -> tuple[Negotiated | None, list[tuple[str, str]]]:
    """Our decision as UAS of ``request`` and the headers for our 2xx (§9).

    Call ``check_request`` first.  With no Session-Expires in the request, no
    session timer runs (we accept timers when offered; we do not impose them).
    """
    value = request.headers.get("session-expires")
    if value is None or not config.enabled:
        return None, []
    interval, refresher = parse_session_expires(value)
    uac_supports = _supports_timer(request)
    if refresher is None:
        # §9: the UAS picks.  A UAC that does not support timers cannot refresh.
        refresher = "uac" if uac_supports else "uas"
    elif not uac_supports:
        refresher = "uas"
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if uac_supports:
        headers.append(("Require", "timer"))
    return Negotiated(interval=interval, we_refresh=refresher == "uas"), headers


def negotiate_as_uac(response: Response) -> Negotiated | None:
    """The session timer a 2xx to our INVITE/UPDATE sets up (§7.2), if any."""
    value = response.headers.get("session-expires")
    if value is None:
        return None
    interval, refresher = parse_session_expires(value)
    # §7.2: a 2xx without refresher would be malformed; we take the duty then.
    return Negotiated(interval=interval, we_refresh=refresher != "uas")


def retry_interval(response: Response, config: SessionTimerConfig) -> int | None:
    """The Session-Expires to retry with after a 422 (§7.4), or None if it cannot help."""
    value = response.headers.get("min-se")
    if value is None:
        return None
    return max(parse_min_se(value), config.min_se)


class State(FastEnum):
    INACTIVE = auto()
    REFRESHER = auto()     # we refresh; waiting for half the interval
    REFRESHING = auto()    # refresh due/sent; waiting for a successful one
    REFRESHEE = auto()     # the peer refreshes; waiting for it
    EXPIRED = auto()


class Input(FastEnum):
    START_REFRESHER = auto()
    START_REFRESHEE = auto()
    REFRESH_DUE = auto()
    EXPIRED = auto()
    STOP = auto()


TRANSITIONS: dict[tuple[State, Input], State] = {
    (State.INACTIVE, Input.START_REFRESHER): State.REFRESHER,
    (State.INACTIVE, Input.START_REFRESHEE): State.REFRESHEE,
    (State.INACTIVE, Input.STOP): State.INACTIVE,
    (State.REFRESHER, Input.START_REFRESHER): State.REFRESHER,
    (State.REFRESHER, Input.START_REFRESHEE): State.REFRESHEE,
    (State.REFRESHER, Input.REFRESH_DUE): State.REFRESHING,
    (State.REFRESHER, Input.STOP): State.INACTIVE,
    (State.REFRESHING, Input.START_REFRESHER): State.REFRESHER,
    (State.REFRESHING, Input.START_REFRESHEE): State.REFRESHEE,
    (State.REFRESHING, Input.EXPIRED): State.EXPIRED,
    (State.REFRESHING, Input.STOP): State.INACTIVE,
    (State.REFRESHEE, Input.START_REFRESHER): State.REFRESHER,
    (State.REFRESHEE, Input.START_REFRESHEE): State.REFRESHEE,
    (State.REFRESHEE, Input.EXPIRED): State.EXPIRED,
    (State.REFRESHEE, Input.STOP): State.INACTIVE,
    (State.EXPIRED, Input.STOP): State.EXPIRED,
}


class Due(Enum):
    """What ``handle_timer`` says is due."""

    REFRESH = auto()   # send a session refresh now
    EXPIRE = auto()    # no refresh succeeded: send BYE now


def bye_margin(interval: int) -> float:
    """§10: BYE goes out min(32, interval/3) seconds before the session expires."""
    return float(min(32.0, interval / 3.0))


class SessionTimer:
    """The clock of one session's timer (RFC 4028 §10)."""

    __slots__ = ("active", "deadline", "expires_at", "interval", "refresh_at", "state")

    def __init__(self) -> None:
        self.state = State.INACTIVE
        self.interval: int | None = None
        self.refresh_at: float | None = None
        self.expires_at: float | None = None   # when we send BYE without a refresh
        # ``get_timer()``'s answer and whether the clock runs, kept current by every
        # change of state or times: the session reads them several times a message.
        self.deadline: float | None = None
        self.active = False

    def _apply(self, event: Input) -> None:
        next_state = TRANSITIONS.get((self.state, event))
        if next_state is None:
            raise InvalidTransition(f"session timer: {event.name} in {self.state.name}")
        self.state = next_state
        self._set_deadline()

    def _set_deadline(self) -> None:
        state = self.state
        if state is State.REFRESHER:
            self.deadline, self.active = self.refresh_at, True
        elif state is State.REFRESHING or state is State.REFRESHEE:
            self.deadline, self.active = self.expires_at, True
        else:
            self.deadline, self.active = None, False

    def start(self, negotiated: Negotiated, now: float) -> None:
        """(Re)start after a successful negotiation: the session was just refreshed."""
        self._apply(Input.START_REFRESHER if negotiated.we_refresh else Input.START_REFRESHEE)
        self.interval = negotiated.interval
        self.expires_at = now + negotiated.interval - bye_margin(negotiated.interval)
        self.refresh_at = now + negotiated.interval / 2.0 if negotiated.we_refresh else None
        self._set_deadline()

    def stop(self) -> None:
        self._apply(Input.STOP)
        if self.state is State.INACTIVE:
            self.refresh_at = self.expires_at = self.interval = None

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> Due | None:
        deadline = self.deadline
        if deadline is None or now < deadline:
            return None
        if self.state is State.REFRESHER:
            self._apply(Input.REFRESH_DUE)
            return Due.REFRESH
        self._apply(Input.EXPIRED)
        return Due.EXPIRE
