"""DTMF wired into calls (switch/call/dtmf.py), with a fake media engine and fake time.

The fake engine calls the tap as ``switch.media.MediaEngine`` does: per tapped
leg ``on_telephone_event`` then ``on_audio`` with the tick's samples, then
``on_tick_end(now)`` once per tick.  INFO goes through the real call
controller (the ``World`` of test_call_controller.py).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from structlog.testing import capture_logs
from test_call_controller import REALM, World

from switch.call.dtmf import DtmfWiring
from switch.call.media import Codec, LegConfig
from switch.config import FeaturesConfig, User
from switch.dtmf import telephone_event_packets
from switch.dtmf.tones import DIGITS
from switch.events import EVENT_TYPES, FEATURE_INVOKED
from switch.logs import get_logger
from switch.metrics import Metrics
from switch.sip.message import Headers, Request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dtmf"))
import siggen  # noqa: E402

PCM = npt.NDArray[np.int16]
TE_CONFIG = LegConfig(remote=("10.0.0.1", 4000), payload_types={
    0: Codec(name="PCMU"), 101: Codec(name="telephone-event")}, telephone_event_pt=101)
TICK = 0.02


class FakeEngine:
    """Taps as MediaEngine keeps them; ``tick`` calls them the way its tick does."""

    def __init__(self) -> None:
        self.taps: dict[str, list[Any]] = {}
        self.peers: dict[str, Any] = {}
        self.gates: dict[str, str | None] = {}
        self.holds: dict[str, list[tuple[bool, bool]]] = {}
        """(hold, mute) pushed by the wiring, per leg, in order."""
        self.holding: dict[str, bool] = {}
        self.held: dict[str, set[int]] = {}
        """Event timestamps the gate held, per leg (the relay's rule, ``_gate``)."""
        self.relayed: dict[str, list[int]] = {}
        """Event timestamps relayed as they came, per leg."""
        self.sent: list[tuple[str, str, str | None]] = []

    def bridge(self, a: Any, b: Any) -> None:
        self.peers[a.id], self.peers[b.id] = b, a

    def peer(self, leg: Any) -> Any:
        return self.peers.get(leg.id)

    def set_digit_gate(self, leg: Any, first_digits: str | None) -> None:
        self.gates[leg.id] = first_digits

    def set_digit_hold(self, leg: Any, *, hold: bool, mute: bool = False) -> None:
        self.holds.setdefault(leg.id, []).append((hold, mute))
        self.holding[leg.id] = hold and self.gates.get(leg.id) is not None

    def _gate(self, leg_id: str, payload: bytes, timestamp: int) -> None:
        """switch.media.relay's digit gate for one telephone-event packet."""
        first = self.gates.get(leg_id)
        held = self.held.setdefault(leg_id, set())
        relayed = self.relayed.setdefault(leg_id, [])
        if first is not None and leg_id in self.peers and len(payload) >= 4:
            keypad = payload[0] < 16
            start = keypad and DIGITS[payload[0]] in first
            if timestamp in held or start or (keypad and self.holding.get(leg_id)):
                held.add(timestamp)
                self.holding[leg_id] = True
                return
        if timestamp not in relayed:
            relayed.append(timestamp)

    def held_telephone_event(self, leg: Any, timestamp: int) -> bool:
        return timestamp in self.held.get(leg.id, set())

    def send_digits(self, leg: Any, digits: str, method: str | None = None) -> str:
        self.sent.append((leg.id, digits, method))
        return method or "rfc4733"

    def add_tap(self, leg: Any, tap: Any) -> None:
        taps = self.taps.setdefault(leg.id, [])
        if tap not in taps:
            taps.append(tap)

    def remove_tap(self, leg: Any, tap: Any) -> None:
        taps = self.taps.get(leg.id, [])
        if tap in taps:
            taps.remove(tap)
        if not taps:
            self.taps.pop(leg.id, None)

    def tick(self, now: float, audio: Mapping[str, PCM] | None = None,
             events: Mapping[str, Sequence[tuple[bytes, int, int, bool, float]]] | None = None
             ) -> None:
        called: dict[int, Any] = {}
        for leg_id, taps in list(self.taps.items()):
            for event in (events or {}).get(leg_id, ()):
                self._gate(leg_id, event[0], event[2])
            for tap in taps:
                called[id(tap)] = tap
                for event in (events or {}).get(leg_id, ()):
                    tap.on_telephone_event(leg_id, *event)
                pcm = (audio or {}).get(leg_id)
                if pcm is not None and pcm.size:
                    tap.on_audio(leg_id, pcm, now)
        for tap in called.values():
            tap.on_tick_end(now)


class FakeBus:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def publish(self, type: str, **fields: object) -> None:
        self.events.append((type, fields))

    def digits(self, leg_id: str | None = None) -> str:
        return "".join(str(f["digit"]) for t, f in self.events
                       if t == "dtmf.digit" and (leg_id is None or f["leg_id"] == leg_id))


def make_leg(leg_id: str, extension: str = "1001", mode: str = "auto") -> Any:
    user = User(extension=extension, name="x", password="p", dtmf_mode=mode)
    return SimpleNamespace(id=leg_id, call=SimpleNamespace(id="call-" + leg_id), user=user,
                           party=extension, media=SimpleNamespace(id=leg_id))


class Rig:
    def __init__(self, features: FeaturesConfig | None = None) -> None:
        self.engine = FakeEngine()
        self.bus = FakeBus()
        self.metrics = Metrics(process_metrics=False)
        self.features: list[tuple[str, str, str | None, str]] = []
        self.now = 100.0
        self.wiring = DtmfWiring(features or FeaturesConfig(), engine=self.engine, bus=self.bus,
                                 metrics=self.metrics, log=get_logger("test.dtmf"),
                                 clock=lambda: self.now, feature_hook=self.feature)

    def feature(self, leg: Any, name: str, number: str | None, digits: str) -> None:
        self.features.append((leg.id, name, number, digits))

    def count(self, method: str) -> float:
        value = self.metrics.registry.get_sample_value("switch_dtmf_digits_total",
                                                       {"method": method})
        return value or 0.0

    def play(self, streams: Mapping[str, PCM], *, jitter: str | None = None,
             extra_ticks: int = 10) -> int:
        """Feed each leg's audio 160 samples a tick; ``jitter`` delivers its frames
        in irregular bunches (0, 2, 1, 0, 3 ... frames a tick).  Returns the ticks run."""
        queues = {leg: [s[i:i + 160] for i in range(0, s.size, 160)]
                  for leg, s in streams.items()}
        pattern = [0, 2, 1, 0, 3, 1, 1]
        ticks = 0
        while any(queues.values()) or extra_ticks > 0:
            if not any(queues.values()):
                extra_ticks -= 1
            self.now += TICK
            audio: dict[str, PCM] = {}
            for leg, frames in queues.items():
                take = pattern[ticks % len(pattern)] if leg == jitter else 1
                if frames and take:
                    chunk, queues[leg] = frames[:take], frames[take:]
                    audio[leg] = np.concatenate(chunk)
            self.engine.tick(self.now, audio)
            ticks += 1
        return ticks


def tones(digits: str, seed: int = 1) -> PCM:
    case = siggen.dtmf_case(np.random.default_rng(seed), category="wiring", name=digits,
                            digits=digits, on_ms=70, off_ms=70)
    return case.linear.astype(np.int16)


def te_events(digits: str, start: float, *, ssrc: int = 0x1234, gap: float = 0.2
              ) -> list[tuple[float, tuple[bytes, int, int, bool, float]]]:
    """(arrival time, tap arguments) of RFC 4733 packets of ``digits``, baresip style."""
    out = []
    for k, digit in enumerate(digits):
        t0 = start + k * gap
        timestamp = 8000 * (k + 1)
        for p in telephone_event_packets(digit, 0.1, interval=0.02):
            out.append((t0 + p.offset, (p.payload, ssrc, timestamp, p.marker, t0 + p.offset)))
    return out


def feed_events(rig: Rig, leg_id: str, packets: list[tuple[float, Any]],
                audio: PCM | None = None) -> None:
    """Tick until every packet is delivered (each in the tick after its arrival)."""
    frames = [] if audio is None else [audio[i:i + 160] for i in range(0, audio.size, 160)]
    pending = sorted(packets, key=lambda p: p[0])
    while pending or frames:
        rig.now += TICK
        due = [args for t, args in pending if t <= rig.now]
        pending = [p for p in pending if p[0] > rig.now]
        chunk = {leg_id: frames.pop(0)} if frames else {}
        rig.engine.tick(rig.now, chunk, {leg_id: due})
    for _ in range(10):
        rig.now += TICK
        rig.engine.tick(rig.now)


# --- in-band, batched ----------------------------------------------------------------


def test_inband_three_legs_one_detector_run_per_tick() -> None:
    rig = Rig()
    legs = {"a": "1234", "b": "5*9#", "c": "7780"}
    for leg_id in legs:
        rig.wiring.leg_media_configured(make_leg(leg_id), TE_CONFIG)
    assert set(rig.engine.taps) == set(legs)
    calls: list[tuple[int, ...]] = []
    detector = rig.wiring._detector
    real = detector.process

    def spy(block: Any, now: float) -> Any:
        calls.append(np.asarray(block).shape)
        return real(block, now)

    detector.process = spy  # type: ignore[method-assign]
    streams = {leg: tones(d, seed=i) for i, (leg, d) in enumerate(legs.items())}
    ticks = rig.play(streams, jitter="b")
    for leg_id, digits in legs.items():
        assert rig.bus.digits(leg_id) == digits
    assert len(calls) == ticks == rig.wiring.detector_runs
    assert all(shape[0] == detector.capacity for shape in calls)
    assert rig.count("inband") == 12.0
    (event,) = [f for t, f in rig.bus.events if t == "dtmf.digit" and f["leg_id"] == "c"][:1]
    assert event == {"call_id": "call-c", "digit": "7", "method": "inband", "leg_id": "c",
                     "extension": "1001"}


def test_silent_legs_stop_costing_detector_runs_and_audio_resumes_them() -> None:
    """Signalling-only calls and held calls send no audio: after a short tail of
    zeros (so a tone in progress can end) the detector is not run at all."""
    rig = Rig()
    rig.wiring.leg_media_configured(make_leg("a"), TE_CONFIG)
    for _ in range(50):
        rig.now += TICK
        rig.engine.tick(rig.now)
    idle_runs = rig.wiring.detector_runs
    assert idle_runs <= 12
    rig.play({"a": tones("42")})
    assert rig.bus.digits("a") == "42"
    assert rig.wiring.detector_runs > idle_runs


def test_leg_closed_frees_its_slot_and_tap() -> None:
    rig = Rig()
    a, b = make_leg("a"), make_leg("b")
    rig.wiring.leg_media_configured(a, TE_CONFIG)
    rig.wiring.leg_media_configured(a, TE_CONFIG)          # re-offer: still one tap
    rig.wiring.leg_media_configured(b, TE_CONFIG)
    assert rig.engine.taps["a"] == [rig.wiring]
    silence = np.zeros(160, dtype=np.int16)
    rig.now += TICK
    rig.engine.tick(rig.now, {"a": silence, "b": silence})
    assert rig.wiring._detector.channels == 2
    rig.wiring.leg_media_closed(a)
    assert rig.wiring._detector.channels == 1 and "a" not in rig.engine.taps
    rig.play({"b": tones("42")})
    assert rig.bus.digits() == "42"


def test_signalling_only_legs_take_no_slot_matcher_or_receiver() -> None:
    """Configure makes a small record and the tap: the detector slot comes with the
    first audio, the matcher and collector with the first digit, the RFC 4733
    receiver with the first telephone-event; ticks without audio run nothing."""
    rig = Rig(CODES)
    for leg_id in "ab":
        rig.wiring.leg_media_configured(make_leg(leg_id), TE_CONFIG)
    for _ in range(100):
        rig.now += TICK
        rig.engine.tick(rig.now)
    assert rig.wiring._detector.channels == 0 and rig.wiring.detector_runs == 0
    states = rig.wiring._legs.values()
    assert all(s.slot is None and s.matcher is None and s.collector is None
               and s.receiver is None for s in states)
    assert rig.engine.gates == {"a": "*", "b": "*"}        # the gate is set at configure
    rig.play({"a": tones("4")})
    a, b = rig.wiring._legs["a"], rig.wiring._legs["b"]
    assert a.slot is not None and a.matcher is not None and b.slot is None
    assert rig.bus.digits("a") == "4"


def test_slot_given_back_after_a_silence_and_taken_again_on_audio() -> None:
    rig = Rig()
    rig.wiring.leg_media_configured(make_leg("a"), TE_CONFIG)
    rig.play({"a": tones("1")}, extra_ticks=0)
    assert rig.wiring._detector.channels == 1 and rig.bus.digits("a") == "1"
    runs = rig.wiring.detector_runs
    for _ in range(100):                                    # 2 s without audio
        rig.now += TICK
        rig.engine.tick(rig.now)
    assert rig.wiring._detector.channels == 0 and rig.wiring._legs["a"].slot is None
    assert rig.wiring.detector_runs - runs <= 12             # the tail of zeros only
    rig.play({"a": tones("23", seed=3)})
    assert rig.bus.digits("a") == "123"


def test_burst_keeps_only_the_newest_cushion_and_detection_goes_on() -> None:
    """A burst (a stalled loop) longer than the cushion drops its oldest samples; the
    ring's compactions (every few hundred ms) do not disturb detection."""
    rig = Rig()
    rig.wiring.leg_media_configured(make_leg("a"), TE_CONFIG)
    silence = np.zeros(160, dtype=np.int16)
    for _ in range(40):                                     # compactions on a live row
        rig.now += TICK
        rig.engine.tick(rig.now, {"a": silence})
    seven = tones("7")
    on = np.flatnonzero(seven)
    seven = seven[on[0]:on[-1] + 1]                         # the 70 ms tone alone
    assert seven.size <= 800
    burst = np.concatenate([tones("1"), np.zeros(2400, dtype=np.int16), seven,
                            np.zeros(160, dtype=np.int16)])
    rig.now += TICK
    rig.engine.tick(rig.now, {"a": burst})
    for _ in range(10):
        rig.now += TICK
        rig.engine.tick(rig.now, {"a": silence})
    assert rig.bus.digits("a") == "7"                       # the "1" was older than 100 ms
    rig.play({"a": tones("89", seed=5)})
    assert rig.bus.digits("a") == "789"


# --- RFC 4733 ------------------------------------------------------------------------


def test_rfc4733_sequence_one_report_per_event() -> None:
    rig = Rig()
    rig.wiring.leg_media_configured(make_leg("a", mode="rfc4733"), TE_CONFIG)
    packets = te_events("19#", rig.now + 0.01)
    # a repeated end packet arriving late and an update out of order change nothing
    packets.append((packets[-1][0] + 0.3, packets[-1][1]))
    feed_events(rig, "a", packets)
    assert rig.bus.digits() == "19#"
    assert rig.count("rfc4733") == 3.0 and rig.count("inband") == 0.0


def test_rfc4733_event_never_ended_is_timed_out_on_the_tick() -> None:
    rig = Rig()
    rig.wiring.leg_media_configured(make_leg("a"), TE_CONFIG)
    starts = [p for p in te_events("5", rig.now + 0.01) if not p[1][0][1] & 0x80]
    feed_events(rig, "a", starts)
    state = rig.wiring._legs["a"]
    assert state.receiver is not None and state.receiver.get_timer() is not None
    for _ in range(60):
        rig.now += TICK
        rig.engine.tick(rig.now)
    assert state.receiver.get_timer() is None or state.receiver.get_timer() > rig.now
    assert rig.bus.digits() == "5"
    # a new event after the timeout is a new keypress
    feed_events(rig, "a", te_events("5", rig.now + 0.01, ssrc=0x1234)[:1])
    assert rig.bus.digits() == "5"      # same (ssrc, timestamp): remembered, not resurrected


def test_double_source_inband_and_rfc4733_same_press_one_report() -> None:
    rig = Rig()
    rig.wiring.leg_media_configured(make_leg("a"), TE_CONFIG)
    audio = tones("3")
    tone_start = rig.now + siggen.dtmf_case(np.random.default_rng(1), category="w", name="3",
                                            digits="3", on_ms=70, off_ms=70).tones[0].start / 8000
    packets = [(t, args) for t, args in te_events("3", tone_start)]
    feed_events(rig, "a", packets, audio)
    assert rig.bus.digits() == "3"
    assert rig.count("inband") + rig.count("rfc4733") == 1.0


def test_malformed_telephone_event_is_ignored() -> None:
    rig = Rig()
    rig.wiring.leg_media_configured(make_leg("a"), TE_CONFIG)
    rig.engine.tick(rig.now, None, {"a": [(b"\x01\x02", 1, 1, True, rig.now)]})
    assert rig.bus.digits() == ""


# --- dtmf_mode ---------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "expected"), [
    ("auto", {"inband", "rfc4733"}), ("rfc4733", {"rfc4733"}), ("inband", {"inband"}),
    ("info", set()),
])
def test_dtmf_mode_picks_the_sources(mode: str, expected: set[str]) -> None:
    rig = Rig()
    rig.wiring.leg_media_configured(make_leg("a", mode=mode), TE_CONFIG)
    assert ("a" in rig.engine.taps)           # every leg is tapped: the tick drives its timers
    rig.play({"a": tones("12")})                                   # in-band only
    feed_events(rig, "a", te_events("34", rig.now + 0.01))         # RFC 4733 only
    methods = {str(f["method"]) for t, f in rig.bus.events if t == "dtmf.digit"}
    assert methods == expected
    want = ("12" if "inband" in expected else "") + ("34" if "rfc4733" in expected else "")
    assert rig.bus.digits() == want
    assert (rig.wiring._detector.channels == 1) == ("inband" in expected)


# --- features ------------------------------------------------------------------------------


def test_feature_code_consumed_and_reported() -> None:
    rig = Rig(FeaturesConfig(codes=(("blind_transfer", "*1{number}#"),
                                    ("warm_transfer_cancel", "*4")), inter_digit_timeout=3))
    rig.wiring.leg_media_configured(make_leg("a"), TE_CONFIG)
    feed_events(rig, "a", te_events("5*1200#", rig.now + 0.01))
    assert rig.bus.digits() == "5*1200#"            # every keypress is still a dtmf.digit
    assert rig.features == [("a", "blind_transfer", "200", "*1200#")]
    assert rig.wiring._legs["a"].matcher.held == ""
    feed_events(rig, "a", te_events("*4", rig.now + 0.01, ssrc=0x99))
    assert rig.features[-1] == ("a", "warm_transfer_cancel", None, "*4")


def test_feature_inter_digit_timeout_runs_on_the_tick() -> None:
    rig = Rig(FeaturesConfig(codes=(("blind_transfer", "*1{number}#"),), inter_digit_timeout=2))
    rig.wiring.leg_media_configured(make_leg("a", mode="rfc4733"), TE_CONFIG)
    feed_events(rig, "a", te_events("*12", rig.now + 0.01))
    matcher = rig.wiring._legs["a"].matcher
    assert matcher.held == "*12"
    for _ in range(int(2.5 / TICK)):
        rig.now += TICK
        rig.engine.tick(rig.now)
    assert matcher.held == "" and rig.features == []
    feed_events(rig, "a", te_events("#", rig.now + 0.01, ssrc=7))
    assert rig.features == []                         # "*12" then "#" is no code


# --- INFO through the call controller ------------------------------------------------------


def info(world: World, phone: Any, content_type: str | None, body: bytes) -> int:
    phone.cseq += 1
    final = phone.final
    headers = Headers([
        ("Via", f"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-info{phone.cseq}"),
        ("From", f'"x" <sip:1001@{REALM}>;tag=atag'),
        ("To", final.headers.get("to") or ""),
        ("Call-ID", phone.call_id),
        ("CSeq", f"{phone.cseq} INFO"),
    ])
    if content_type is not None:
        headers.add("Content-Type", content_type)
    request = Request("INFO", "sip:switch@192.0.2.1:5060", headers, body)
    txn = 9000 + phone.cseq
    assert world.controller.receive_in_dialog(txn, request, phone.source)
    (response,) = world.sip.responses[txn]
    return response.status


def controller_world(features: FeaturesConfig | None = None) -> tuple[World, DtmfWiring,
                                                                       FakeEngine]:
    world = World()
    engine = FakeEngine()
    wiring = DtmfWiring(features or FeaturesConfig(), engine=engine, bus=world.bus,
                        metrics=world.metrics, log=get_logger("test.dtmf"),
                        clock=lambda: world.clock.now)
    wiring.attach(world.controller)
    return world, wiring, engine


def test_info_bodies_through_the_controller() -> None:
    world, wiring, engine = controller_world()
    phone, _, _ = world.established()
    (call,) = world.controller.calls
    assert call.caller is not None
    assert set(engine.taps) == set(call.legs)          # both anchored legs tapped
    with capture_logs() as logs:
        assert info(world, phone, "application/dtmf-relay",
                    b"Signal=5\r\nDuration=160\r\n") == 200
        assert info(world, phone, "application/dtmf", b"#") == 200
    assert info(world, phone, "application/dtmf-relay", b"Signal=x\r\n") == 400
    assert info(world, phone, "application/dtmf-relay", b"Duration=100\r\n") == 400
    assert info(world, phone, "application/media_control+xml", b"<x/>") == 200
    assert info(world, phone, None, b"") == 200
    digits = [f for t, f in world.bus.events if t == "dtmf.digit"]
    assert digits == [
        {"call_id": call.id, "digit": "5", "method": "info", "leg_id": call.caller.id,
         "extension": "1001"},
        {"call_id": call.id, "digit": "#", "method": "info", "leg_id": call.caller.id,
         "extension": "1001"},
    ]
    assert world.metrics.registry.get_sample_value("switch_dtmf_digits_total",
                                                   {"method": "info"}) == 2.0
    logged = [entry for entry in logs if entry["event"] == "dtmf.digit"]
    assert [entry["call_id"] for entry in logged] == [call.id, call.id]
    phone.in_dialog("BYE")
    assert engine.taps == {} and wiring.legs == 0


def test_info_feature_code_published_by_the_controller() -> None:
    world, _, _ = controller_world()
    phone, _, _ = world.established()
    (call,) = world.controller.calls
    for digit in "*21003#":
        assert info(world, phone, "application/dtmf-relay", f"Signal={digit}".encode()) == 200
        world.clock.advance(0.3)
    (invoked,) = [f for t, f in world.bus.events if t == FEATURE_INVOKED]
    assert FEATURE_INVOKED in EVENT_TYPES          # the real bus accepts it
    assert call.caller is not None
    assert invoked == {"call_id": call.id, "leg_id": call.caller.id, "extension": "1001",
                       "feature": "warm_transfer", "number": "1003", "digits": "*21003#"}


def test_info_ignored_for_a_user_in_rfc4733_mode() -> None:
    world, wiring, _ = controller_world()
    phone, _, _ = world.established()
    (call,) = world.controller.calls
    assert call.caller is not None
    wiring._legs[call.caller.id].mode = "rfc4733"
    assert info(world, phone, "application/dtmf", b"1") == 200
    assert [t for t, _ in world.bus.events if t == "dtmf.digit"] == []


# --- feature-code digits are not passed on; released ones are regenerated -----------------

CODES = FeaturesConfig(codes=(("blind_transfer", "*1{number}#"), ("warm_transfer_cancel", "*4")),
                       inter_digit_timeout=2)


def bridged_rig(features: FeaturesConfig = CODES, *, mode_a: str = "auto",
                mode_b: str = "auto", config_b: LegConfig = TE_CONFIG) -> Rig:
    rig = Rig(features)
    a, b = make_leg("a", mode=mode_a), make_leg("b", "1002", mode=mode_b)
    rig.wiring.leg_media_configured(a, TE_CONFIG)
    rig.wiring.leg_media_configured(b, config_b)
    rig.engine.bridge(a.media, b.media)
    return rig


def test_rfc4733_code_digits_held_and_released_digits_regenerated() -> None:
    rig = bridged_rig()
    assert rig.engine.gates == {"a": "*", "b": "*"}       # what a code may begin with
    packets = te_events("5*1200#", rig.now + 0.01)
    feed_events(rig, "a", packets)
    assert rig.features == [("a", "blind_transfer", "200", "*1200#")]
    assert rig.engine.relayed["a"] == [8000]               # only "5" went through as it came
    assert rig.engine.sent == []                           # the code's digits reach no one
    assert rig.engine.holds["a"][-1] == (False, False)
    assert (True, False) in rig.engine.holds["a"]          # held while the code was typed
    # "*7" is no code: both were held, both are regenerated, once, in order
    feed_events(rig, "a", te_events("*7", rig.now + 0.01, ssrc=0x99))
    assert rig.engine.sent == [("b", "*", "rfc4733"), ("b", "7", "rfc4733")]
    assert rig.engine.holds["a"][-1] == (False, False)
    assert rig.bus.digits("a") == "5*1200#*7"              # every keypress still reported


def test_held_digits_released_by_the_inter_digit_timeout_on_the_tick() -> None:
    rig = bridged_rig()
    feed_events(rig, "a", te_events("*1", rig.now + 0.01))
    assert rig.engine.sent == [] and rig.wiring._legs["a"].matcher.held == "*1"
    for _ in range(int(2.5 / TICK)):
        rig.now += TICK
        rig.engine.tick(rig.now)
    assert rig.engine.sent == [("b", "*", "rfc4733"), ("b", "1", "rfc4733")]
    assert rig.engine.holds["a"][-1] == (False, False)


def test_released_digits_follow_the_receiving_legs_mode() -> None:
    no_te = LegConfig(remote=("10.0.0.2", 4000), payload_types={0: Codec(name="PCMU")})
    rig = bridged_rig(mode_b="inband")
    feed_events(rig, "a", te_events("*9", rig.now + 0.01))
    assert rig.engine.sent == [("b", "*", "inband"), ("b", "9", "inband")]
    rig = bridged_rig(config_b=no_te)                      # auto, no telephone-event: tones
    feed_events(rig, "a", te_events("*9", rig.now + 0.01))
    assert rig.engine.sent == [("b", "*", "inband"), ("b", "9", "inband")]


def test_no_peer_nothing_passed_on() -> None:
    rig = Rig(CODES)
    rig.wiring.leg_media_configured(make_leg("a"), TE_CONFIG)
    feed_events(rig, "a", te_events("*9", rig.now + 0.01))
    assert rig.engine.sent == [] and rig.bus.digits() == "*9"


def test_no_feature_codes_no_gate_no_hold_nothing_regenerated() -> None:
    rig = bridged_rig(FeaturesConfig(codes=()))
    feed_events(rig, "a", te_events("*12#", rig.now + 0.01))
    rig.play({"a": tones("*4")})
    assert rig.bus.digits("a") == "*12#*4"
    assert rig.engine.gates == {} and rig.engine.holds == {} and rig.engine.sent == []
    assert rig.engine.relayed["a"] == [8000, 16000, 24000, 32000]


def test_inband_code_muted_until_its_tone_ends_and_released_tones_regenerated() -> None:
    rig = bridged_rig(mode_a="inband")
    rig.play({"a": tones("5*4")})
    assert rig.features == [("a", "warm_transfer_cancel", None, "*4")]
    mutes = [mute for _, mute in rig.engine.holds["a"]]
    assert mutes == [True, False]       # muted from the "*" on, until the "4" tone ended
    assert rig.engine.sent == []                           # "5" went through in the audio
    rig.play({"a": tones("*7", seed=3)})
    assert rig.engine.sent == [("b", "*", "rfc4733"), ("b", "7", "rfc4733")]
    assert rig.engine.holds["a"][-1] == (False, False)
    assert rig.bus.digits("a") == "5*4*7"


def test_info_digits_relayed_as_info_or_regenerated_and_codes_consumed() -> None:
    world, wiring, engine = controller_world(CODES)
    phone, _, _ = world.established()
    (call,) = world.controller.calls
    caller, callee = call.caller, call.peer(call.caller)  # type: ignore[arg-type]
    assert caller is not None and callee is not None
    engine.bridge(caller.media, callee.media)
    wiring._legs[callee.id].mode = "info"
    for digit in "7*4*9":
        assert info(world, phone, "application/dtmf-relay",
                    f"Signal={digit}\r\nDuration=250".encode()) == 200
        world.clock.advance(0.3)
    relayed = [s.request for s in world.sent("INFO")]
    assert [r.body for r in relayed] == [b"Signal=7\r\nDuration=250\r\n",
                                         b"Signal=*\r\nDuration=250\r\n",
                                         b"Signal=9\r\nDuration=250\r\n"]
    assert {r.headers.get("content-type") for r in relayed} == {"application/dtmf-relay"}
    assert {r.headers.get("call-id") for r in relayed} == {
        callee.session.invite.headers.get("call-id")}      # in the callee's dialog
    assert [f for t, f in world.bus.events if t == FEATURE_INVOKED][0]["feature"] == \
        "warm_transfer_cancel"
    # a callee in auto mode with telephone-event negotiated gets RFC 4733
    wiring._legs[callee.id].mode = "auto"
    wiring._legs[callee.id].te_pt = 101
    assert info(world, phone, "application/dtmf", b"3") == 200
    assert engine.sent == [(callee.id, "3", "rfc4733")]
    # auto without telephone-event: INFO again, with the body type it came in
    wiring._legs[callee.id].te_pt = None
    assert info(world, phone, "application/dtmf", b"6") == 200
    last = world.sent("INFO")[-1].request
    assert last.body == b"6" and last.headers.get("content-type") == "application/dtmf"
