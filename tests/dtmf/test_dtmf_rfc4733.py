"""RFC 4733 receiver and sender: one keypress per event whatever the packets do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pcap import read_rtp

from switch.dtmf.events import TelephoneEventEnded, TelephoneEventStarted
from switch.dtmf.rfc4733 import (
    MalformedTelephoneEvent,
    TelephoneEventPayload,
    TelephoneEventReceiver,
    parse_payload,
    telephone_event_packets,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "dtmf"
SIPP = Path("/usr/share/sip-tester")
Ev = TelephoneEventStarted | TelephoneEventEnded


def pkt(code: int, duration: int, end: bool = False) -> bytes:
    return TelephoneEventPayload(code=code, end=end, volume=10, duration=duration).encode()


def starts(events: list[Ev]) -> str:
    return "".join(e.digit or "?" for e in events if isinstance(e, TelephoneEventStarted))


def ends(events: list[Ev]) -> list[TelephoneEventEnded]:
    return [e for e in events if isinstance(e, TelephoneEventEnded)]


def run_vector(name: str) -> tuple[list[Ev], dict[str, str]]:
    rx = TelephoneEventReceiver()
    events: list[Ev] = []
    expect: dict[str, str] = {}
    for line in (VECTORS / name).read_text().splitlines():
        if line.startswith("#"):
            if "expect:" in line:
                expect = dict(kv.split("=") for kv in line.split("expect:")[1].split())
            continue
        t, m, ssrc, ts, hexpl = line.split()
        events += rx.feed(bytes.fromhex(hexpl), int(ssrc, 16), int(ts), m == "1", float(t))
    return events, expect


@pytest.mark.parametrize("name", ["rfc4733_baresip.txt", "rfc4733_no_marker.txt"])
def test_vector_sequences(name: str) -> None:
    events, expect = run_vector(name)
    assert starts(events) == expect["digits"]
    assert len(ends(events)) == int(expect["ends"])
    assert not any(e.timed_out for e in ends(events))


def test_baresip_durations_and_start_times() -> None:
    events, _ = run_vector("rfc4733_baresip.txt")
    first = [e for e in events if isinstance(e, TelephoneEventStarted)][0]
    assert first.start == pytest.approx(0.0)  # 400 units (50 ms) before arrival at 0.050
    assert [round(e.duration, 3) for e in ends(events)] == [0.45, 0.45]


def sipp_pcaps() -> list[Path]:
    found = sorted(SIPP.glob("dtmf_2833_*.pcap"))
    if not found and os.environ.get("CI", "").lower() == "true":
        pytest.fail("SIPp pcaps (Debian sip-tester) are required in CI")
    return found


@pytest.mark.parametrize(
    "path", sipp_pcaps() or [pytest.param(None, marks=pytest.mark.skip("no SIPp pcaps"))]
)
def test_sipp_pcaps_give_one_keypress_each(path: Path) -> None:
    packets = [p for p in read_rtp(path) if p.payload_type == 101]
    assert len(packets) >= 4
    rx = TelephoneEventReceiver()
    events: list[Ev] = []
    for p in packets:
        events += rx.feed(p.payload, p.ssrc, p.timestamp, p.marker, p.time)
    digit = path.stem.removeprefix("dtmf_2833_")
    expected = {"star": "*", "pound": "#"}.get(digit, digit)
    assert starts(events) == expected
    assert len(ends(events)) == 1 and not ends(events)[0].timed_out


def test_all_sipp_pcaps_in_one_stream_in_order() -> None:
    paths = sipp_pcaps()
    if not paths:
        pytest.skip("no SIPp pcaps")
    rx = TelephoneEventReceiver()
    events: list[Ev] = []
    packets = sorted(
        (p for path in paths for p in read_rtp(path) if p.payload_type == 101), key=lambda p: p.time
    )
    for p in packets:
        events += rx.feed(p.payload, p.ssrc, p.timestamp, p.marker, p.time)
    assert sorted(starts(events)) == sorted("0123456789*#")
    assert len(ends(events)) == 12


def test_lost_first_packet_and_missing_marker() -> None:
    rx = TelephoneEventReceiver()
    ev = rx.feed(pkt(3, 480), 1, 800, False, 10.06)
    assert starts(ev) == "3"
    assert ev[0].start == pytest.approx(10.0)
    ev = rx.feed(pkt(3, 640, end=True), 1, 800, False, 10.08)
    assert [e.duration for e in ends(ev)] == [0.08]


def test_only_end_packets_seen() -> None:
    rx = TelephoneEventReceiver()
    ev = []
    for t in (1.0, 1.0, 1.02):
        ev += rx.feed(pkt(11, 800, end=True), 1, 99, False, t)
    assert starts(ev) == "#" and len(ends(ev)) == 1


def test_out_of_order_end_packets_after_next_event() -> None:
    rx = TelephoneEventReceiver()
    ev = rx.feed(pkt(1, 0), 7, 1000, True, 0.0)
    ev += rx.feed(pkt(1, 400, end=True), 7, 1000, False, 0.05)
    ev += rx.feed(pkt(2, 0), 7, 2000, True, 0.2)
    # the other two end packets of "1" arrive late, after "2" started
    ev += rx.feed(pkt(1, 400, end=True), 7, 1000, False, 0.21)
    ev += rx.feed(pkt(1, 400, end=True), 7, 1000, False, 0.22)
    ev += rx.feed(pkt(2, 400, end=True), 7, 2000, False, 0.25)
    assert starts(ev) == "12"
    assert [e.digit for e in ends(ev)] == ["1", "2"]


def test_new_event_ends_the_previous_one_when_its_end_was_lost() -> None:
    rx = TelephoneEventReceiver()
    ev = rx.feed(pkt(4, 0), 7, 1000, True, 0.0)
    ev += rx.feed(pkt(4, 800), 7, 1000, False, 0.1)
    ev += rx.feed(pkt(5, 0), 7, 3000, True, 0.5)
    assert starts(ev) == "45"
    (end,) = ends(ev)
    assert end.digit == "4" and end.duration == 0.1 and not end.timed_out


def test_reordered_older_event_is_its_own_keypress() -> None:
    rx = TelephoneEventReceiver()
    ev = rx.feed(pkt(6, 160), 7, 5000, False, 1.0)
    ev += rx.feed(pkt(9, 800, end=True), 7, 4000, False, 1.01)  # older, never seen before
    ev += rx.feed(pkt(6, 800, end=True), 7, 5000, False, 1.1)
    assert starts(ev) == "69"
    assert len(ends(ev)) == 2


def test_ssrcs_are_independent() -> None:
    rx = TelephoneEventReceiver()
    ev = rx.feed(pkt(1, 0), 1, 100, True, 0.0)
    ev += rx.feed(pkt(1, 0), 2, 100, True, 0.0)
    ev += rx.feed(pkt(1, 160, end=True), 1, 100, False, 0.02)
    ev += rx.feed(pkt(1, 160, end=True), 2, 100, False, 0.02)
    assert starts(ev) == "11" and len(ends(ev)) == 2


def test_digit_that_never_ends_times_out() -> None:
    rx = TelephoneEventReceiver(timeout=1.0)
    ev = rx.feed(pkt(8, 0), 1, 100, True, 5.0)
    ev += rx.feed(pkt(8, 400), 1, 100, False, 5.05)
    assert rx.get_timer() == pytest.approx(6.05)
    assert rx.handle_timer(6.0) == []
    (end,) = rx.handle_timer(6.05)
    assert isinstance(end, TelephoneEventEnded) and end.timed_out and end.digit == "8"
    # a late end packet does not report it again
    assert rx.feed(pkt(8, 4000, end=True), 1, 100, False, 6.2) == []


def test_long_event_split_in_segments_is_one_keypress() -> None:
    """§2.5.1.5: the duration reaches 0xFFFF, a new segment starts at ts + 0xFFFF."""
    rx = TelephoneEventReceiver(timeout=30.0)
    ev = rx.feed(pkt(0, 0), 1, 1000, True, 0.0)
    for d in range(400, 0xFFFF, 4000):
        ev += rx.feed(pkt(0, d), 1, 1000, False, d / 8000)
    ev += rx.feed(pkt(0, 0xFFFF), 1, 1000, False, 0xFFFF / 8000)
    ev += rx.feed(pkt(0, 400), 1, 1000 + 0xFFFF, False, (0xFFFF + 400) / 8000)
    ev += rx.feed(pkt(0, 800, end=True), 1, 1000 + 0xFFFF, False, (0xFFFF + 800) / 8000)
    assert starts(ev) == "0"
    (end,) = ends(ev)
    assert end.duration == pytest.approx((0xFFFF + 800) / 8000)


def test_duration_field_wrapping_in_place_is_one_keypress() -> None:
    rx = TelephoneEventReceiver(timeout=30.0)
    ev = rx.feed(pkt(2, 0), 1, 1000, True, 0.0)
    for d in list(range(8000, 0x10000, 8000)) + [0xFFFF]:
        ev += rx.feed(pkt(2, d), 1, 1000, False, d / 8000)
    ev += rx.feed(pkt(2, 2000), 1, 1000, False, (0x10000 + 2000) / 8000)
    ev += rx.feed(pkt(2, 2400, end=True), 1, 1000, False, (0x10000 + 2400) / 8000)
    assert starts(ev) == "2"
    assert ends(ev)[0].duration == pytest.approx((0x10000 + 2400) / 8000)


def test_timestamp_wraparound_orders_events() -> None:
    rx = TelephoneEventReceiver()
    ev = rx.feed(pkt(1, 0), 1, 0xFFFFFF00, True, 0.0)
    ev += rx.feed(pkt(2, 0), 1, 0x00000100, True, 0.3)
    assert starts(ev) == "12"
    assert ends(ev)[0].digit == "1"


def test_malformed_payloads_are_rejected() -> None:
    for bad in (b"", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05"):
        with pytest.raises(MalformedTelephoneEvent):
            parse_payload(bad)


def test_sender_sequence_round_trips_through_receiver() -> None:
    packets = telephone_event_packets("#", 0.180, interval=0.050)
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    body = [parse_payload(p.payload) for p in packets]
    assert [b.duration for b in body] == [0, 400, 800, 1200, 1440, 1440, 1440]
    assert [b.end for b in body] == [False] * 4 + [True] * 3
    assert [p.offset for p in packets] == pytest.approx([0, 0.05, 0.1, 0.15, 0.18, 0.23, 0.28])
    rx = TelephoneEventReceiver()
    ev: list[Ev] = []
    for p in packets:
        ev += rx.feed(p.payload, 42, 777, p.marker, 3.0 + p.offset)
    assert starts(ev) == "#"
    assert ends(ev)[0].duration == pytest.approx(0.18)
    with pytest.raises(ValueError):
        telephone_event_packets("x", 0.1)
