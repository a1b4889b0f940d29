"""SIP INFO bodies, the per-leg collector and the feature-code matcher."""

from __future__ import annotations

import pytest

from switch.dtmf.collector import DigitCollector
from switch.dtmf.events import InbandToneStarted, Method, TelephoneEventStarted
from switch.dtmf.features import (
    BlindTransferRequested,
    DigitsReleased,
    FeatureCode,
    FeatureInvoked,
    FeatureMatcher,
    MatcherState,
    WarmTransferRequested,
)
from switch.dtmf.info import InfoBodyError, InfoDigit, parse_info_body

RELAY = "application/dtmf-relay"


@pytest.mark.parametrize(
    "body, digit, duration",
    [
        ("Signal=5\r\nDuration=160\r\n", "5", 0.16),
        ("Signal=5\nDuration=160\n", "5", 0.16),
        ("signal = *\r\nduration= 250", "*", 0.25),
        ("SIGNAL=#\r\nDURATION=100\r\n", "#", 0.1),
        ("Signal=10\r\nDuration=100\r\n", "*", 0.1),
        ("Signal=11\r\nDuration=100\r\n", "#", 0.1),
        ("Signal=a\r\nDuration=100\r\n", "A", 0.1),
        ("Signal=D\r\n", "D", None),
        ("  Signal=0  \r\n\r\nVolume=10\r\nDuration=60\r\n", "0", 0.06),
    ],
)
def test_dtmf_relay_bodies(body: str, digit: str, duration: float | None) -> None:
    assert parse_info_body(RELAY, body) == InfoDigit(digit=digit, duration=duration)
    assert parse_info_body(RELAY + "; charset=utf-8", body.encode()).digit == digit


def test_application_dtmf_bodies() -> None:
    assert parse_info_body("application/dtmf", "7").digit == "7"
    assert parse_info_body("Application/DTMF", b" # \r\n").digit == "#"
    assert parse_info_body("application/dtmf", "11").digit == "#"


@pytest.mark.parametrize(
    "ctype, body, status",
    [
        (RELAY, "Duration=100", 400),
        (RELAY, "Signal=E", 400),
        (RELAY, "Signal=16", 400),
        (RELAY, "Signal=5\r\nDuration=abc", 400),
        (RELAY, "garbage", 400),
        (RELAY, "Signal=5\r\n" + "x" * 2000, 413),
        (RELAY, b"Signal=\xff", 400),
        ("text/plain", "Signal=5", 415),
    ],
)
def test_bad_info_bodies(ctype: str, body: str | bytes, status: int) -> None:
    with pytest.raises(InfoBodyError) as err:
        parse_info_body(ctype, body)
    assert err.value.status == status


# -- collector -------------------------------------------------------------------


def inband(digit: str, start: float) -> InbandToneStarted:
    return InbandToneStarted(slot=0, digit=digit, start=start)


def rtp(digit: str, start: float, ts: int) -> TelephoneEventStarted:
    return TelephoneEventStarted(ssrc=1, timestamp=ts, digit=digit, code=0, volume=10, start=start)


def test_keypress_seen_inband_after_rfc4733_is_reported_once() -> None:
    c = DigitCollector()
    first = c.rfc4733(rtp("5", 10.00, 100), now=10.00)
    assert first is not None and first.method is Method.RFC4733 and first.digit == "5"
    # the in-band detector confirms ~35 ms later, dating the tone back to its start
    assert c.inband(inband("5", 10.004), now=10.04) is None


def test_keypress_seen_inband_first_then_rfc4733_late() -> None:
    c = DigitCollector()
    assert c.inband(inband("9", 3.0), now=3.04) is not None
    assert c.rfc4733(rtp("9", 3.06, 1), now=3.06) is None  # first packet lost, arrived late
    assert c.info(InfoDigit(digit="9", duration=0.1), now=3.15) is None


def test_fast_repeated_digit_from_two_sources_counts_twice() -> None:
    c = DigitCollector()
    out = [
        c.rfc4733(rtp("1", 0.00, 0), 0.00),
        c.inband(inband("1", 0.005), 0.04),
        c.rfc4733(rtp("1", 0.08, 640), 0.08),
        c.inband(inband("1", 0.085), 0.12),
    ]
    assert [o.digit if o else None for o in out] == ["1", None, "1", None]


def test_different_digits_and_distant_times_are_separate() -> None:
    c = DigitCollector(tolerance=0.25)
    assert c.inband(inband("1", 0.0), 0.04) is not None
    assert c.rfc4733(rtp("2", 0.0, 0), 0.0) is not None
    assert c.rfc4733(rtp("1", 1.0, 8000), 1.0) is not None
    assert (
        c.rfc4733(
            TelephoneEventStarted(ssrc=1, timestamp=9, digit=None, code=16, volume=0, start=2.0),
            2.0,
        )
        is None
    )


def test_info_digit_carries_duration() -> None:
    c = DigitCollector()
    d = c.info(InfoDigit(digit="#", duration=0.16), now=7.0)
    assert d is not None and d.method is Method.INFO and d.duration == 0.16 and d.start == 7.0


# -- feature matcher ------------------------------------------------------------


def feed(m: FeatureMatcher, digits: str, t0: float = 0.0, step: float = 0.2) -> list[object]:
    out: list[object] = []
    for i, d in enumerate(digits):
        out += m.digit(d, round(t0 + i * step, 6))
    return out


def released(out: list[object]) -> str:
    return "".join(o.digits for o in out if isinstance(o, DigitsReleased))


def test_blind_transfer_code_is_consumed() -> None:
    m = FeatureMatcher()
    out = feed(m, "*1234#")
    assert out == [BlindTransferRequested(number="234", at=1.0)]
    assert m.state is MatcherState.IDLE and m.held == ""


def test_warm_transfer_and_plain_codes() -> None:
    m = FeatureMatcher()
    assert feed(m, "*2100#")[-1] == WarmTransferRequested(number="100", at=1.0)
    (done,) = feed(m, "*3", t0=5)
    assert isinstance(done, FeatureInvoked) and done.name == "warm_transfer_complete"


def test_ordinary_digits_pass_through_at_once() -> None:
    m = FeatureMatcher()
    out = feed(m, "123")
    assert out == [DigitsReleased(digits=d, at=0.2 * i) for i, d in enumerate("123")]


def test_star_is_held_then_released_when_no_code_can_follow() -> None:
    m = FeatureMatcher()
    assert m.digit("*", 0.0) == []
    assert m.held == "*"
    assert m.digit("9", 0.1) == [DigitsReleased(digits="*9", at=0.1)]


def test_release_keeps_a_code_that_starts_inside_the_held_digits() -> None:
    m = FeatureMatcher()
    out = feed(m, "**1555#")
    assert released(out) == "*"
    assert out[-1] == BlindTransferRequested(number="555", at=1.2)


def test_inter_digit_timeout_releases_a_partial_code() -> None:
    m = FeatureMatcher(inter_digit_timeout=2.0)
    assert feed(m, "*12") == []
    assert m.get_timer() == pytest.approx(2.4)
    assert m.handle_timer(2.3) == []
    assert m.handle_timer(2.4) == [DigitsReleased(digits="*12", at=2.4)]
    assert m.state is MatcherState.IDLE and m.get_timer() is None


def test_timeout_can_drop_instead_of_release() -> None:
    m = FeatureMatcher(inter_digit_timeout=1.0, release_on_timeout=False)
    feed(m, "*1")
    assert m.handle_timer(5.0) == []
    # the next digit after a timeout starts afresh
    assert m.digit("5", 6.0) == [DigitsReleased(digits="5", at=6.0)]


def test_late_digit_flushes_then_matches_afresh() -> None:
    m = FeatureMatcher(inter_digit_timeout=1.0)
    m.digit("*", 0.0)
    out = m.digit("*", 5.0)
    assert out == [DigitsReleased(digits="*", at=5.0)]
    assert m.held == "*"


def test_number_at_end_of_pattern_completes_on_timeout() -> None:
    m = FeatureMatcher((FeatureCode(name="park", pattern="*9{number}"),), inter_digit_timeout=1.0)
    feed(m, "*942", step=0.1)
    (out,) = m.handle_timer(1.3)
    assert out == FeatureInvoked(name="park", number="42", digits="*942", at=1.3)


def test_custom_codes_and_errors() -> None:
    m = FeatureMatcher((FeatureCode(name="record", pattern="##"),))
    assert feed(m, "1##") == [
        DigitsReleased(digits="1", at=0.0),
        FeatureInvoked(name="record", number=None, digits="##", at=0.4),
    ]
    with pytest.raises(ValueError):
        FeatureMatcher((FeatureCode(name="x", pattern="*{number}1"),))
    with pytest.raises(ValueError):
        FeatureMatcher((FeatureCode(name="x", pattern="*x"),))
    with pytest.raises(ValueError):
        m.digit("E", 1.0)


def test_too_long_number_is_released() -> None:
    m = FeatureMatcher(max_number=4)
    out = feed(m, "*112345")
    assert released(out) == "*112345"


def test_first_digits_are_what_a_code_may_begin_with() -> None:
    assert FeatureMatcher().first_digits == "*"
    codes = (FeatureCode(name="park", pattern="#7"), FeatureCode(name="dial", pattern="{number}#"))
    assert FeatureMatcher(codes).first_digits == "0123456789#"
    assert FeatureMatcher(()).first_digits == ""


def test_info_body_is_what_the_parser_reads() -> None:
    from switch.dtmf.info import info_body

    for media_type in ("application/dtmf-relay", "application/dtmf"):
        for digit in "0123456789*#ABCD":
            parsed = parse_info_body(media_type, info_body(digit, media_type, 160))
            assert parsed.digit == digit
            if media_type == "application/dtmf-relay":
                assert parsed.duration == 0.16
