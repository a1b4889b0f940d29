"""The media side's per-call fast paths agree with what they replace (no sockets).

``EngineMediaPort`` shares converted payload-type mappings between legs;
``MediaEngine.configure`` derives clock rate and silence in one pass;
``set_digit_gate`` reuses its table; ``add_tap``/``remove_tap`` keep the
tick-end hook while any leg has the tap; an untapped leg skips clearing buffers
that cannot hold anything.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from switch.call.media import Codec as CallCodec
from switch.call.media import EngineMediaPort
from switch.call.media import LegConfig as CallLegConfig
from switch.dtmf.tones import DIGITS, event_code
from switch.media import Codec, LegConfig, MediaEngine, MediaLeg
from switch.media.relay import _RtcpReceiver, _RtpReceiver, _Sender

_SILENCE = {"PCMU": b"\xff", "PCMA": b"\xd5"}


def make_leg(engine: MediaEngine, leg_id: str = "l1") -> MediaLeg:
    sender = _Sender()
    rx = _RtpReceiver(sender, 50, lambda addr: None, lambda: None)
    leg = MediaLeg(leg_id, "127.0.0.1", 40000, rx, sender, _RtcpReceiver(lambda: None))
    rx.owner = leg
    engine._legs[leg.id] = leg
    return leg


class _RecordingEngine:
    def __init__(self) -> None:
        self.configured: list[Any] = []

    def configure(self, leg: Any, config: Any) -> None:
        self.configured.append(config)


def test_engine_port_converts_payload_types_and_shares_equal_ones() -> None:
    engine = _RecordingEngine()
    port = EngineMediaPort(engine)
    first = CallLegConfig(remote=("10.0.0.1", 4000), payload_types={
        8: CallCodec(name="PCMA"), 0: CallCodec(name="PCMU"),
        101: CallCodec(name="telephone-event")}, telephone_event_pt=101, direction="sendonly")
    again = CallLegConfig(remote=("10.0.0.2", 4002), payload_types={
        8: CallCodec(name="PCMA"), 0: CallCodec(name="PCMU"),
        101: CallCodec(name="telephone-event")}, telephone_event_pt=101)
    other = CallLegConfig(remote=None, payload_types={
        0: CallCodec(name="PCMU"), 8: CallCodec(name="PCMA"),
        101: CallCodec(name="TELEPHONE-EVENT", clock_rate=16000)})
    for config in (first, again, other):
        port.configure(object(), config)  # type: ignore[arg-type]
    a, b, c = engine.configured
    assert a == LegConfig(remote=("10.0.0.1", 4000), payload_types={
        8: Codec(name="PCMA"), 0: Codec(name="PCMU"), 101: Codec(name="telephone-event")},
        telephone_event_pt=101, direction="sendonly")
    assert list(a.payload_types) == [8, 0, 101]          # SDP order kept
    assert b.payload_types is a.payload_types and b.remote == ("10.0.0.2", 4002)
    assert list(c.payload_types) == [0, 8, 101]
    assert c.payload_types[101] == Codec(name="TELEPHONE-EVENT", clock_rate=16000)
    assert c.telephone_event_pt is None and c.direction == "sendrecv"


_NAMES = st.sampled_from(["PCMU", "pcmu", "PCMA", "Pcma", "telephone-event",
                          "TELEPHONE-EVENT", "opus", "G722", "L16"])
_PAYLOAD_TYPES = st.dictionaries(
    st.integers(0, 127),
    st.builds(lambda name, rate: Codec(name=name, clock_rate=rate), _NAMES,
              st.sampled_from([8000, 16000, 48000])), max_size=5)


@settings(max_examples=200, deadline=None)
@given(_PAYLOAD_TYPES, st.one_of(st.none(), st.integers(0, 127)))
def test_configure_derives_rate_and_silence_as_before(
        payload_types: dict[int, Codec], te_pt: int | None) -> None:
    engine = MediaEngine(host="127.0.0.1", port_min=40000, port_max=40001)
    leg = make_leg(engine)
    engine.configure(leg, LegConfig(remote=("10.0.0.1", 4000), payload_types=payload_types,
                                    telephone_event_pt=te_pt))
    rate = next((c.clock_rate for pt, c in payload_types.items()
                 if pt != te_pt and c.name.lower() != "telephone-event"), 8000)
    silence = {pt: _SILENCE[c.name.upper()] for pt, c in payload_types.items()
               if c.name.upper() in _SILENCE}
    assert leg._rx.rate == leg._sender.rate == rate
    assert leg._rx.silence == silence
    assert leg._rx.te_pt == (-1 if te_pt is None else te_pt)


def test_digit_gate_table_is_built_once_per_digit_set() -> None:
    engine = MediaEngine(host="127.0.0.1", port_min=40000, port_max=40003)
    a, b = make_leg(engine, "a"), make_leg(engine, "b")
    for first in ("*", "*#1", ""):
        engine.set_digit_gate(a, first)
        engine.set_digit_gate(b, first)
        expected = bytearray(256)
        for code in range(len(DIGITS)):
            expected[code] = 2
        for digit in first:
            expected[event_code(digit)] = 1
        assert a._rx.gate == bytes(expected)
        assert b._rx.gate is a._rx.gate
    engine.set_digit_gate(a, None)
    assert a._rx.gate is None and not a._rx.holding


class _Tap:
    def on_audio(self, leg_id: str, pcm: Any, now: float) -> None:
        pass

    def on_telephone_event(self, *args: Any) -> None:
        pass

    def on_tick_end(self, now: float) -> None:
        pass


def test_tick_end_hook_lives_while_any_leg_has_the_tap() -> None:
    engine = MediaEngine(host="127.0.0.1", port_min=40000, port_max=40003)
    a, b = make_leg(engine, "a"), make_leg(engine, "b")
    tap = _Tap()
    engine.add_tap(a, tap)
    engine.add_tap(a, tap)          # twice on one leg: counted once
    engine.add_tap(b, tap)
    assert list(engine._tick_ends) == [id(tap)]
    engine.remove_tap(a, tap)
    assert list(engine._tick_ends) == [id(tap)]
    engine.remove_tap(b, tap)
    assert engine._tick_ends == {} and engine._tap_uses == {}
    engine.add_tap(b, tap)          # a first leg again: the hook comes back
    assert list(engine._tick_ends) == [id(tap)]


def test_untapping_clears_what_was_buffered_and_untapped_legs_stay_clear() -> None:
    engine = MediaEngine(host="127.0.0.1", port_min=40000, port_max=40001)
    leg = make_leg(engine)
    engine.configure(leg, LegConfig(remote=("10.0.0.1", 4000), payload_types={
        0: Codec(name="PCMU"), 8: Codec(name="PCMA"), 101: Codec(name="telephone-event")},
        telephone_event_pt=101))
    rx = leg._rx
    assert rx.tap_bufs is None
    tap = _Tap()
    engine.add_tap(leg, tap)
    assert rx.tap_bufs == {0: rx.ulaw, 8: rx.alaw}
    rx.ulaw.append(b"\xff")
    rx.alaw.append(b"\xd5")
    rx.events.append((b"", 1, 2, False, 0.0))
    engine.remove_tap(leg, tap)
    assert rx.tap_bufs is None and not rx.ulaw and not rx.alaw and not rx.events
    engine.configure(leg, LegConfig(remote=("10.0.0.1", 4000),
                                    payload_types={0: Codec(name="PCMU")}))
    assert rx.tap_bufs is None


def test_sender_numbers_are_random_and_in_range() -> None:
    senders = [_Sender() for _ in range(200)]
    assert all(0 <= s.ssrc < 1 << 32 and 0 <= s.last_seq < 1 << 16 and 0 <= s.last_ts < 1 << 32
               for s in senders)
    assert len({s.ssrc for s in senders}) > 190
    assert len({s.last_seq for s in senders}) > 150
    assert max(s.last_ts for s in senders) >= 1 << 31   # the top bit is used too
    assert max(s.ssrc for s in senders) >= 1 << 31


@settings(max_examples=200, deadline=None)
@given(_PAYLOAD_TYPES, _PAYLOAD_TYPES, st.one_of(st.none(), st.integers(0, 127)),
       st.one_of(st.none(), st.integers(0, 127)))
def test_pt_map_kept_per_pair_of_mappings_agrees_with_the_table(
        src_pts: dict[int, Codec], dst_pts: dict[int, Codec], src_te: int | None,
        dst_te: int | None) -> None:
    from switch.media.engine import _pt_map, _pt_table
    src = LegConfig(remote=None, payload_types=src_pts, telephone_event_pt=src_te)
    for dst_mapping in (dst_pts, src_pts):          # another mapping, the same one
        dst = LegConfig(remote=None, payload_types=dst_mapping, telephone_event_pt=dst_te)
        expected = _pt_table(src, dst) if dst_mapping else None
        assert _pt_map(src, dst) == expected
        assert _pt_map(src, dst) == expected        # kept
        # the same mappings, another telephone-event PT: not the kept table
        other = LegConfig(remote=None, payload_types=dst_mapping,
                          telephone_event_pt=None if dst_te is not None else 101)
        assert _pt_map(src, other) == (_pt_table(src, other) if dst_mapping else None)


@settings(max_examples=100, deadline=None)
@given(_PAYLOAD_TYPES, _PAYLOAD_TYPES, st.booleans())
def test_tap_buffers_follow_the_g711_payload_types(
        first: dict[int, Codec], second: dict[int, Codec], tap_first: bool) -> None:
    engine = MediaEngine(host="127.0.0.1", port_min=40000, port_max=40001)
    leg = make_leg(engine)
    tap = _Tap()
    if tap_first:
        engine.add_tap(leg, tap)
    for payload_types in (first, second, first):     # reconfigured, mappings seen before
        engine.configure(leg, LegConfig(remote=("10.0.0.1", 4000), payload_types=payload_types))
        engine.add_tap(leg, tap)
        rx = leg._rx
        expected = {pt: rx.alaw if c.name.upper() == "PCMA" else rx.ulaw
                    for pt, c in payload_types.items() if c.name.upper() in _SILENCE}
        assert rx.tap_bufs == expected
        assert all(rx.tap_bufs[pt] is buf for pt, buf in expected.items())
