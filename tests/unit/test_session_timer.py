"""Session timers (RFC 4028): negotiation helpers and the clock's table."""

from __future__ import annotations

import itertools

import pytest

from switch.sip.dialog import InvalidTransition
from switch.sip.errors import ParseError
from switch.sip.message import Headers, Request, Response
from switch.sip.session_timer import (
    TRANSITIONS,
    Due,
    Input,
    Negotiated,
    SessionIntervalTooSmall,
    SessionTimer,
    SessionTimerConfig,
    State,
    bye_margin,
    check_request,
    negotiate_as_uac,
    negotiate_as_uas,
    offer_headers,
    parse_session_expires,
    retry_interval,
)


def request(*headers: tuple[str, str]) -> Request:
    return Request("INVITE", "sip:bob@example.com", Headers(headers))


def test_parse_session_expires() -> None:
    assert parse_session_expires("1800") == (1800, None)
    assert parse_session_expires("600;refresher=UAS") == (600, "uas")
    for bad in ("", "abc", "600;refresher=proxy"):
        with pytest.raises(ParseError):
            parse_session_expires(bad)


def test_offer_headers() -> None:
    assert offer_headers(SessionTimerConfig()) == [
        ("Supported", "timer"), ("Session-Expires", "1800"), ("Min-SE", "90")]
    assert offer_headers(SessionTimerConfig(), interval=600, refresher="uac")[1] == (
        "Session-Expires", "600;refresher=uac")
    assert offer_headers(SessionTimerConfig(enabled=False)) == []


def test_too_small_interval_gets_422_with_min_se() -> None:
    config = SessionTimerConfig(min_se=300)
    with pytest.raises(SessionIntervalTooSmall) as info:
        check_request(request(("Session-Expires", "120")), config)
    assert info.value.status == 422
    assert info.value.headers == (("Min-SE", "300"),)
    check_request(request(("Session-Expires", "300")), config)
    check_request(request(), config)


def test_config_enforces_the_absolute_minimum() -> None:
    with pytest.raises(ValueError):
        SessionTimerConfig(min_se=60)


@pytest.mark.parametrize(("headers", "we_refresh", "response_headers"), [
    # §9: the request's choice stands.
    ((("Supported", "timer"), ("Session-Expires", "600;refresher=uas")), True,
     [("Session-Expires", "600;refresher=uas"), ("Require", "timer")]),
    ((("Supported", "timer"), ("Session-Expires", "600;refresher=uac")), False,
     [("Session-Expires", "600;refresher=uac"), ("Require", "timer")]),
    # Left open: a UAC supporting timers refreshes.
    ((("Supported", "timer"), ("Session-Expires", "600")), False,
     [("Session-Expires", "600;refresher=uac"), ("Require", "timer")]),
    # A UAC without timer support cannot refresh (a proxy added the header).
    ((("Session-Expires", "600"),), True, [("Session-Expires", "600;refresher=uas")]),
])
def test_negotiate_as_uas(headers: tuple[tuple[str, str], ...], we_refresh: bool,
                          response_headers: list[tuple[str, str]]) -> None:
    negotiated, extra = negotiate_as_uas(request(*headers), SessionTimerConfig())
    assert negotiated == Negotiated(interval=600, we_refresh=we_refresh)
    assert extra == response_headers


def test_no_session_expires_no_timer() -> None:
    assert negotiate_as_uas(request(("Supported", "timer")), SessionTimerConfig()) == (None, [])


def test_negotiate_as_uac() -> None:
    ok = Response(200, headers=Headers([("Session-Expires", "900;refresher=uas")]))
    assert negotiate_as_uac(ok) == Negotiated(interval=900, we_refresh=False)
    ok = Response(200, headers=Headers([("Session-Expires", "900;refresher=uac")]))
    assert negotiate_as_uac(ok) == Negotiated(interval=900, we_refresh=True)
    assert negotiate_as_uac(Response(200)) is None


def test_retry_interval_after_422() -> None:
    too_small = Response(422, headers=Headers([("Min-SE", "1200")]))
    assert retry_interval(too_small, SessionTimerConfig()) == 1200
    assert retry_interval(Response(422), SessionTimerConfig()) is None


def test_refresher_clock() -> None:
    timer = SessionTimer()
    timer.start(Negotiated(interval=1800, we_refresh=True), now=100.0)
    assert timer.get_timer() == 100.0 + 900.0            # half the interval (§10)
    assert timer.handle_timer(999.0) is None
    assert timer.handle_timer(1000.0) is Due.REFRESH
    assert timer.state is State.REFRESHING
    assert timer.get_timer() == 100.0 + 1800.0 - 32.0    # expiry minus min(32, SE/3)
    timer.start(Negotiated(interval=1800, we_refresh=True), now=1001.0)   # refreshed
    assert timer.get_timer() == 1901.0


def test_refreshee_expires() -> None:
    timer = SessionTimer()
    timer.start(Negotiated(interval=90, we_refresh=False), now=0.0)
    assert bye_margin(90) == 30.0
    assert timer.get_timer() == 60.0
    assert timer.handle_timer(60.0) is Due.EXPIRE
    assert timer.state is State.EXPIRED
    assert timer.get_timer() is None
    timer.stop()
    assert timer.state is State.EXPIRED


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Input)))
def test_transition_table(state: State, event: Input) -> None:
    timer = SessionTimer()
    timer.state = state
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(InvalidTransition):
            timer._apply(event)
        assert timer.state is state
    else:
        timer._apply(event)
        assert timer.state is expected
        assert timer.active == (expected in (State.REFRESHER, State.REFRESHING,
                                             State.REFRESHEE))


def _deadline_from_state(timer: SessionTimer) -> float | None:
    """What ``get_timer`` answered before it was kept as an attribute."""
    if timer.state is State.REFRESHER:
        return timer.refresh_at
    if timer.state in (State.REFRESHING, State.REFRESHEE):
        return timer.expires_at
    return None


@pytest.mark.parametrize("seed", range(20))
def test_kept_deadline_matches_the_state(seed: int) -> None:
    """The deadline kept up to date on every change equals the one read off the state."""
    import random
    rng = random.Random(seed)
    timer = SessionTimer()
    now = 0.0
    for _ in range(200):
        if timer.state is State.EXPIRED:        # the end: nothing starts it again
            break
        step = rng.choice(["start", "start", "stop", "tick", "tick"])
        if step == "start":
            timer.start(Negotiated(interval=rng.choice([90, 600, 1800]),
                                   we_refresh=rng.random() < 0.5), now)
        elif step == "stop":
            timer.stop()
        else:
            deadline = timer.get_timer()
            if deadline is not None:
                now = deadline if rng.random() < 0.7 else now + 1.0
            timer.handle_timer(now)
        assert timer.get_timer() == _deadline_from_state(timer)
        assert timer.active == (timer.state in (State.REFRESHER, State.REFRESHING,
                                                State.REFRESHEE))
