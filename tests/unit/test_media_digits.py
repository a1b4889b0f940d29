"""The relay's digit gate, in-band muting and regenerated digits (docs/MEDIA-API.md
"Digit gate"), on real UDP sockets on 127.0.0.1 like test_media_engine.py.

No timing thresholds: what was held back is proven by the packet that follows it
(the first to arrive), and regenerated digits are collected until their last end
packet.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import test_media_engine as base
from test_media_engine import PCMA, PCMU, TEL, Phone, bridged_pair, config, until

from switch.dtmf import InbandDetector, InbandToneStarted
from switch.dtmf.g711 import ulaw_decode, ulaw_encode
from switch.dtmf.rfc4733 import parse_payload
from switch.media import MediaEngine, MediaEvent, MediaLeg, PlaybackFinished
from switch.media.rtp import RtpPacket

# the fixtures of test_media_engine.py (free port range, phones on OS-chosen ports)
engine = base.engine
events = base.events
phones = base.phones

TONE = ulaw_encode((np.sin(np.arange(160) * 0.7) * 9000).astype(np.int16)).tobytes()


def te_payload(code: int, *, end: bool = False, duration: int = 0) -> bytes:
    return struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)


class KeyPhone:
    """A phone pressing keys: RFC 4733 packets of one event share a timestamp."""

    def __init__(self, phone: Phone, leg: MediaLeg) -> None:
        self.phone = phone
        self.leg = leg

    def audio(self, payload: bytes = TONE, pt: int = 0) -> RtpPacket:
        return self.phone.send(self.leg, payload, pt=pt)

    def key(self, code: int, pt: int = 101) -> list[RtpPacket]:
        """One short keypress: start (marker), an update, three end packets."""
        phone = self.phone
        phone.ts = (phone.ts + 160) & 0xFFFFFFFF
        ts = phone.ts
        sent = []
        for n, (end, duration) in enumerate([(False, 0), (False, 160), (True, 320),
                                             (True, 320), (True, 320)]):
            phone.ts = (ts - 160) & 0xFFFFFFFF      # send() adds 160: keep the event's
            sent.append(phone.send(self.leg, te_payload(code, end=end, duration=duration),
                                   pt=pt, marker=n == 0))
        phone.ts = (ts + 320) & 0xFFFFFFFF
        return sent


async def recv_all_until(phone: Phone, stop: bytes) -> list[RtpPacket]:
    """Packets ``phone`` receives up to and including the one whose payload is ``stop``."""
    got = []
    while True:
        packet, _ = await phone.recv()
        got.append(packet)
        if packet.payload == stop:
            return got


def consecutive(packets: list[RtpPacket]) -> bool:
    return all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in zip(packets, packets[1:],
                                                                        strict=False))


async def test_gate_holds_a_code_start_digit_and_keeps_the_numbering(
        engine: MediaEngine, phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    a, b = await bridged_pair(engine, pa, pb)
    engine.set_digit_gate(a, "*")
    keys = KeyPhone(pa, a)
    keys.audio(b"before")
    star = keys.key(10)                                  # "*": may start a code
    keys.audio(b"after")
    got = await recv_all_until(pb, b"after")
    assert [p.payload for p in got] == [b"before", b"after"]
    assert consecutive(got)                              # no gap where the event was
    assert engine.held_telephone_event(a, star[0].timestamp)
    # the other direction is untouched
    pb.send(b, b"from b")
    back, _ = await pa.recv()
    assert back.payload == b"from b"
    # the gate set "holding" itself: the next keypad digit is held too ...
    keys.key(5)
    keys.audio(b"held 5")
    assert [p.payload for p in await recv_all_until(pb, b"held 5")] == [b"held 5"]
    # ... until the wiring says no code is in progress
    engine.set_digit_hold(a, hold=False)
    five = keys.key(5)
    keys.audio(b"end")
    got = await recv_all_until(pb, b"end")
    assert [p.payload for p in got] == [p.payload for p in five] + [b"end"]
    assert not engine.held_telephone_event(a, five[0].timestamp)
    assert consecutive(got)


async def test_no_gate_relays_telephone_events_unchanged(engine: MediaEngine,
                                                         phones: list[Phone]) -> None:
    """No feature codes: no gate, every packet relayed as it comes (as before)."""
    pa, pb = phones[:2]
    a, _ = await bridged_pair(engine, pa, pb)
    keys = KeyPhone(pa, a)
    star = keys.key(10)
    keys.audio(b"end")
    got = await recv_all_until(pb, b"end")
    assert [(p.payload, p.marker, p.timestamp - star[0].timestamp) for p in got[:-1]] == [
        (p.payload, p.marker, 0) for p in star]
    assert not engine.held_telephone_event(a, star[0].timestamp)
    engine.set_digit_hold(a, hold=True)                  # no gate: holding has no effect
    keys.key(10)
    keys.audio(b"end 2")
    assert len(await recv_all_until(pb, b"end 2")) == 6


async def test_regenerated_rfc4733_digit_structure(engine: MediaEngine,
                                                   phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    a = await engine.open_leg("a")
    b = await engine.open_leg("b")
    engine.configure(a, config(pa))
    engine.configure(b, config(pb, payload_types={0: PCMU, 96: TEL}, te=96))
    engine.bridge(a, b)
    pa.send(a, b"audio 1")
    first, _ = await pb.recv()
    assert engine.send_digits(b, "7") == "rfc4733"
    packets: list[RtpPacket] = []
    while sum(1 for p in packets if p.payload_type == 96 and p.payload[1] & 0x80) < 3:
        packet, _ = await pb.recv()
        packets.append(packet)
    pa.send(a, b"audio 2")
    packets.append((await pb.recv())[0])
    assert packets[-1].payload == b"audio 2"
    event = [p for p in packets if p.payload_type == 96]
    blocks = [parse_payload(p.payload) for p in event]
    assert {blk.code for blk in blocks} == {7}
    assert [p.marker for p in event] == [True] + [False] * (len(event) - 1)
    assert len({p.timestamp for p in event}) == 1          # one event: one timestamp
    assert [blk.end for blk in blocks] == [False] * (len(event) - 3) + [True] * 3
    durations = [blk.duration for blk in blocks]
    assert durations == sorted(durations) and durations[-1] == 800   # 100 ms
    assert len({blk.duration for blk in blocks[-3:]}) == 1
    assert {p.ssrc for p in packets} == {first.ssrc}
    assert consecutive([first, *packets])                  # one numbering with the relay
    # the event starts where the stream is (the last relayed timestamp + the time since)
    assert 0 <= (event[0].timestamp - first.timestamp) & 0xFFFFFFFF < 1 << 31


async def test_regenerated_digits_in_band_without_telephone_event(
        engine: MediaEngine, phones: list[Phone], events: list[MediaEvent]) -> None:
    pa, pb = phones[:2]
    a = await engine.open_leg("a")
    b = await engine.open_leg("b")
    engine.configure(a, config(pa))
    engine.configure(b, config(pb, payload_types={0: PCMU}, te=None))
    engine.bridge(a, b)
    pa.send(a, b"audio 1")
    first, _ = await pb.recv()
    assert engine.send_digits(b, "59") == "inband"
    # 2 x (100 ms tone + 100 ms silence) = 20 frames, then the relay resumes
    played = [(await pb.recv())[0] for _ in range(20)]
    await until(lambda: b.id not in engine._playing)      # the tick after the last frame
    pa.send(a, b"audio 2")
    after, _ = await pb.recv()
    assert after.payload == b"audio 2" and after.marker
    assert [p.payload_type for p in played] == [0] * 20 and played[0].marker
    assert consecutive([first, *played, after])
    pcm = ulaw_decode(b"".join(p.payload for p in played))
    detector = InbandDetector(capacity=1)
    detector.add_channel()
    found = [e.digit for e in detector.process(np.concatenate((pcm, np.zeros(800, np.int16)))
                                               [None, :], 1.0)
             if isinstance(e, InbandToneStarted)]
    assert found == ["5", "9"]
    assert not [e for e in events if isinstance(e, PlaybackFinished)]    # our own tones


@pytest.mark.parametrize(("pt", "codec", "silence"), [(0, PCMU, 0xFF), (8, PCMA, 0xD5)])
async def test_mute_sends_silence_of_the_codec_with_continuous_numbering(
        engine: MediaEngine, phones: list[Phone], pt: int, codec: object, silence: int) -> None:
    pa, pb = phones[:2]
    a, b = await bridged_pair(engine, pa, pb)
    keys = KeyPhone(pa, a)
    keys.audio(TONE, pt=pt)
    got = [(await pb.recv())[0]]
    engine.set_digit_hold(a, hold=False, mute=True)
    for _ in range(3):
        keys.audio(TONE, pt=pt)
        got.append((await pb.recv())[0])
    engine.set_digit_hold(a, hold=False, mute=False)
    keys.audio(TONE, pt=pt)
    got.append((await pb.recv())[0])
    assert [p.payload for p in got] == [TONE] + [bytes([silence]) * 160] * 3 + [TONE]
    assert consecutive(got)
    assert [(q.timestamp - p.timestamp) & 0xFFFFFFFF for p, q in zip(got, got[1:],
                                                                     strict=False)] == [160] * 4
    assert [p.payload_type for p in got] == [pt] * 5
    # the other direction keeps its audio while a is muted
    engine.set_digit_hold(a, hold=False, mute=True)
    pb.send(b, TONE)
    back, _ = await pa.recv()
    assert back.payload == TONE
    await until(lambda: b.stats.packets_out == 5)
