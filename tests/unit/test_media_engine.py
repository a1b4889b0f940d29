"""The media engine on real UDP sockets on 127.0.0.1 (docs/MEDIA-API.md).

Ports: each test gets a range it checked it can bind (``free_range``); the
engine skips pairs that another process takes meanwhile.  No timing
thresholds: tests wait for a packet or a counter (with a generous overall
limit against hangs), and prove that something was dropped by sending a
marker packet after it and checking the marker is the first to arrive.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from switch.dtmf.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from switch.media import (
    Codec,
    LegConfig,
    MediaEngine,
    MediaEvent,
    MediaLeg,
    MediaTimedOut,
    MediaUnavailable,
    PlaybackFinished,
    RemoteLatched,
)
from switch.media.rtp import RtpPacket, build_rtp, parse_rtp
from switch.metrics import Metrics

PCMU = Codec(name="PCMU")
PCMA = Codec(name="PCMA")
TEL = Codec(name="telephone-event")
WAIT = 5.0  # against hangs only; nothing asserts how fast


def free_range(pairs: int) -> tuple[int, int]:
    """An even-aligned range of ``pairs`` RTP/RTCP pairs that all bind right now."""
    for _ in range(200):
        base = random.randrange(30000, 60000, 2)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + 2 * pairs):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base, base + 2 * pairs - 1
    raise RuntimeError("no free port range found")


class Phone(asyncio.DatagramProtocol):
    """A UDP peer on an OS-chosen port that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.ssrc = random.getrandbits(32)

    @classmethod
    async def open(cls) -> Phone:
        loop = asyncio.get_running_loop()
        _, phone = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        return phone

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send_raw(self, data: bytes, leg: MediaLeg, rtcp: bool = False) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", leg.rtcp_port if rtcp else leg.local_port))

    def send(self, leg: MediaLeg, payload: bytes = b"\xff" * 160, *, pt: int = 0,
             marker: bool = False, **extra: Any) -> RtpPacket:
        """The next 20 ms packet of this phone's stream."""
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF
        data = build_rtp(payload_type=pt, sequence=self.seq, timestamp=self.ts, ssrc=self.ssrc,
                         payload=payload, marker=marker, **extra)
        self.send_raw(data, leg)
        return parse_rtp(data)

    async def recv(self) -> tuple[RtpPacket, tuple[str, int]]:
        data, addr = await asyncio.wait_for(self.queue.get(), WAIT)
        return parse_rtp(data), addr

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.002)


@pytest.fixture
async def events() -> list[MediaEvent]:
    return []


@pytest.fixture
async def engine(events: list[MediaEvent]) -> AsyncIterator[MediaEngine]:
    lo, hi = free_range(8)
    eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi, on_event=events.append,
                      relatch_packets=5, metrics=Metrics(process_metrics=False))
    await eng.start()
    yield eng
    await eng.stop()


@pytest.fixture
async def phones() -> AsyncIterator[list[Phone]]:
    opened = [await Phone.open() for _ in range(4)]
    yield opened
    for phone in opened:
        phone.close()


def config(phone: Phone | None, *, direction: str = "sendrecv",
           payload_types: dict[int, Codec] | None = None, te: int | None = 101) -> LegConfig:
    pts = payload_types if payload_types is not None else {0: PCMU, 8: PCMA, 101: TEL}
    return LegConfig(remote=phone.addr if phone else None, payload_types=pts,
                     telephone_event_pt=te, direction=direction)


async def bridged_pair(engine: MediaEngine, pa: Phone, pb: Phone) -> tuple[MediaLeg, MediaLeg]:
    a = await engine.open_leg("a")
    b = await engine.open_leg("b")
    engine.configure(a, config(pa))
    engine.configure(b, config(pb))
    engine.bridge(a, b)
    return a, b


# --- ports ---

async def test_port_pairs_even_and_exhaustion() -> None:
    lo, hi = free_range(2)
    eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi)
    await eng.start()
    legs = [await eng.open_leg("x"), await eng.open_leg("y")]
    assert sorted(leg.local_port for leg in legs) == [lo, lo + 2]
    assert all(leg.local_port % 2 == 0 and leg.rtcp_port == leg.local_port + 1 for leg in legs)
    with pytest.raises(MediaUnavailable):
        await eng.open_leg("z")
    # reuse after close: the pool gets the pair back once the sockets are closed
    eng.close_leg(legs[0])
    again = await eng.open_leg("z")
    assert again.local_port == legs[0].local_port
    await eng.stop()


async def test_closed_pairs_reused_only_once_quiet(phones: list[Phone]) -> None:
    """A closed leg's sockets stay bound for the next leg (no bind per leg), but only
    after ``port_quarantine`` seconds without a stray packet of the previous call."""
    pa, pb, pc, pd = phones
    lo, hi = free_range(3)
    eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi, port_quarantine=0.2)
    await eng.start()
    a = await eng.open_leg("a")
    eng.configure(a, config(pa))
    pa.send(a)
    await until(lambda: a.stats.packets_in == 1)
    eng.close_leg(a)
    assert eng.free_ports == 3                          # a's pair counts as free
    b = await eng.open_leg("b")                         # a's pair is in quarantine
    assert b.local_port != a.local_port
    eng.close_leg(b)
    for _ in range(8):                                  # pa missed the BYE: strays on a's pair
        pa.send(a)
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.05)
    c = await eng.open_leg("c")                         # b's pair: quiet long enough
    assert c.local_port == b.local_port
    await asyncio.sleep(0.25)
    d = await eng.open_leg("d")                         # a's pair, quiet now
    assert d.local_port == a.local_port
    eng.configure(c, config(pc))
    eng.configure(d, config(pd))
    eng.bridge(c, d)
    pd.send(d, b"to c")
    got, _ = await pc.recv()                            # the recycled sockets relay
    assert got.payload == b"to c" and a.stats.packets_in == 1
    await eng.stop()
    assert eng.free_ports == 3
    for port in range(lo, hi + 1):                      # stop closed the spares too
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", port))
        sock.close()


async def test_recycled_pair_never_relays_the_previous_calls_stray_packets(
        phones: list[Phone], events: list[MediaEvent]) -> None:
    """Even taken early (the pool is dry), a recycled pair refuses the streams its
    previous leg received: a stray of the old call neither latches nor is relayed."""
    pa, pb, pc, pd = phones
    lo, hi = free_range(2)
    eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi, on_event=events.append,
                      port_quarantine=3600)
    await eng.start()
    a, b = await bridged_pair(eng, pa, pb)
    pa.send(a)
    await pb.recv()
    eng.close_leg(a)
    eng.close_leg(b)
    c = await eng.open_leg("c")                         # quarantine cut short: pool dry
    d = await eng.open_leg("d")
    assert {c.local_port, d.local_port} == {a.local_port, b.local_port}
    old = c if c.local_port == a.local_port else d
    new = d if old is c else c
    phone_old, phone_new = (pc, pd) if old is c else (pd, pc)
    eng.configure(old, config(phone_old))
    eng.configure(new, config(phone_new))
    eng.bridge(old, new)
    pa.send(old, b"stray")                              # the old call's phone, old SSRC
    pa.send(old, b"stray")
    await until(lambda: old.stats.ignored == 2)
    assert not old.latched and old.stats.packets_in == 0
    phone_old.send(old, b"new call")
    got, _ = await phone_new.recv()                     # the first to arrive: no stray
    assert got.payload == b"new call"
    assert not [e for e in events if isinstance(e, RemoteLatched)]
    await eng.stop()


async def test_pair_recycled_again_quarantines_its_latest_call(
        phones: list[Phone]) -> None:
    """A pair's spare object is quarantined afresh on its next close: the streams of
    the call just ended are refused, not those of the one before, and it is quiet
    from that close on."""
    pa, pb, pc, pd = phones
    lo, hi = free_range(2)
    eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi, port_quarantine=3600)
    await eng.start()
    a, b = await bridged_pair(eng, pa, pb)
    eng.close_leg(a)
    eng.close_leg(b)
    first = {spare.port: spare for spare in eng._spares}
    c = await eng.open_leg("c")                         # forced: the pool is dry
    d = await eng.open_leg("d")
    eng.configure(c, config(pc))
    eng.configure(d, config(pd))
    eng.bridge(c, d)
    pc.send(c, b"second call")
    await pd.recv()
    assert c.latched
    eng.close_leg(c)
    eng.close_leg(d)
    spares = {spare.port: spare for spare in eng._spares}
    assert spares == first and all(spares[p] is first[p] for p in first)   # reused
    quarantine = spares[c.local_port].rtp_quarantine
    assert {ssrc_source[0] for ssrc_source in quarantine.stale} == {pc.addr}
    assert quarantine.quiet_since == spares[c.local_port].closed_at
    assert all(s.open == 2 and not s.closing for s in spares.values())
    e = await eng.open_leg("e")
    f = await eng.open_leg("f")
    old = e if e.local_port == c.local_port else f
    new = f if old is e else e
    eng.configure(old, config(pa))
    eng.configure(new, config(pb))
    eng.bridge(old, new)
    pc.send(old, b"stray")                              # the second call's phone
    await until(lambda: old.stats.ignored == 1)
    pa.send(old, b"third call")
    got, _ = await pb.recv()
    assert got.payload == b"third call"
    await eng.stop()
    assert eng.free_ports == 2


async def test_open_leg_now_takes_a_ready_recycled_pair_only() -> None:
    from switch.call.media import EngineMediaPort
    from switch.media.errors import MediaError
    lo, hi = free_range(2)
    eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi, port_quarantine=0)
    await eng.start()
    assert eng.open_leg_now("a") is None                # nothing recycled yet
    a = await eng.open_leg("a")
    with pytest.raises(MediaError):
        eng.open_leg_now("a")
    eng.close_leg(a)
    b = eng.open_leg_now("b")
    assert b is not None and b.local_port == a.local_port and eng.legs == 1
    eng.close_leg(b)
    port = EngineMediaPort(eng)
    c = await port.open_leg("c")                        # through the port: the same pair
    assert c.local_port == a.local_port
    d = await port.open_leg("d")                        # none ready: bound from the pool
    assert d.local_port != a.local_port and eng.legs == 2
    await eng.stop()


async def test_recycled_pair_closed_under_us_goes_back_to_the_pool(
        phones: list[Phone]) -> None:
    lo, hi = free_range(1)
    eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi, port_quarantine=0)
    await eng.start()
    a = await eng.open_leg("a")
    eng.close_leg(a)
    (spare,) = eng._spares
    spare.rtp.close()                                   # as a socket error would
    await until(lambda: not eng._releasing and not eng._spares)
    assert eng.free_ports == 1
    b = await eng.open_leg("b")                         # bound afresh
    eng.configure(b, config(phones[0]))
    phones[0].send(b)
    await until(lambda: b.stats.packets_in == 1)
    await eng.stop()


async def test_ports_in_use_are_skipped() -> None:
    lo, hi = free_range(2)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", lo + 1))  # the RTCP port of the first pair
    try:
        eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi)
        leg = await eng.open_leg("x")
        assert leg.local_port == lo + 2
        with pytest.raises(MediaUnavailable):
            await eng.open_leg("y")
        await eng.stop()
    finally:
        squatter.close()


async def test_stop_releases_every_port() -> None:
    lo, hi = free_range(3)
    eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi)
    await eng.start()
    for name in "abc":
        await eng.open_leg(name)
    assert eng.free_ports == 0
    await eng.stop()
    assert eng.free_ports == 3 and eng.legs == 0
    for port in range(lo, hi + 1):  # and the OS agrees
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", port))
        sock.close()


# --- relay ---

async def test_relay_both_ways(engine: MediaEngine, phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    a, b = await bridged_pair(engine, pa, pb)
    sent = pa.send(a, b"\x01" * 160)
    got, source = await pb.recv()
    assert source == ("127.0.0.1", b.local_port)  # from the leg's own port (symmetric)
    assert got.payload == sent.payload and got.payload_type == 0
    assert got.ssrc == b.stats.ssrc_out != sent.ssrc
    sent = pb.send(b, b"\x02" * 160)
    got, source = await pa.recv()
    assert source == ("127.0.0.1", a.local_port)
    assert got.payload == sent.payload and got.ssrc == a.stats.ssrc_out
    assert (a.stats.packets_in, a.stats.packets_out) == (1, 1)
    assert (b.stats.packets_in, b.stats.packets_out) == (1, 1)
    assert engine.peer(a) is b and engine.peer(b) is a


async def test_csrc_and_extension_are_relayed_intact(engine: MediaEngine,
                                                     phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    a, _ = await bridged_pair(engine, pa, pb)
    pa.send(a, b"hello", csrcs=(5, 6), extension=(0xBEDE, b"\x10\xaa\x00\x00"), padding=3)
    got, _ = await pb.recv()
    assert got.csrcs == (5, 6) and got.extension == (0xBEDE, b"\x10\xaa\x00\x00")
    assert got.payload == b"hello" and got.padding == 3


async def test_malformed_packets_are_dropped_and_counted(engine: MediaEngine,
                                                         phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    a, _ = await bridged_pair(engine, pa, pb)
    pa.send_raw(b"\x80\x00\x00\x01", a)                                        # short
    pa.send_raw(build_rtp(payload_type=0, sequence=1, timestamp=1, ssrc=1,
                          payload=b"x")[:0] + bytes((0x40,)) + bytes(20), a)  # version 1
    pa.send_raw(bytes((0x8F,)) + bytes(20), a)                                # 15 CSRCs, 20 octets
    await until(lambda: a.stats.malformed == 3)
    sent = pa.send(a, b"ok")
    got, _ = await pb.recv()  # the first packet that reaches b is the valid one
    assert got.payload == sent.payload
    assert a.stats.packets_in == 1


async def test_payload_types_translated_between_legs(engine: MediaEngine,
                                                     phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    a = await engine.open_leg("a")
    b = await engine.open_leg("b")
    engine.configure(a, config(pa, payload_types={0: PCMU, 101: TEL}, te=101))
    engine.configure(b, config(pb, payload_types={0: PCMU, 96: TEL}, te=96))
    engine.bridge(a, b)
    pa.send(a, bytes((1, 0x8A, 0, 160)), pt=101, marker=True)
    got, _ = await pb.recv()
    assert got.payload_type == 96 and got.marker
    pb.send(b, bytes((1, 0x8A, 0, 160)), pt=96)
    got, _ = await pa.recv()
    assert got.payload_type == 101


async def test_rebridge_keeps_the_stream_continuous(engine: MediaEngine,
                                                    phones: list[Phone]) -> None:
    pa, pb, pc = phones[:3]
    a, b = await bridged_pair(engine, pa, pb)
    c = await engine.open_leg("c")
    engine.configure(c, config(pc))
    seen: list[RtpPacket] = []
    for _ in range(5):
        pb.send(b)
        seen.append((await pa.recv())[0])
    engine.bridge(a, c)           # re-bridge a from b to c
    assert engine.peer(b) is None
    pc.seq, pc.ts = 40000, 900000  # an unrelated numbering
    for _ in range(5):
        pc.send(c)
        seen.append((await pa.recv())[0])
    engine.bridge(a, b)           # and back to b, which continues its own numbering
    for _ in range(5):
        pb.send(b)
        seen.append((await pa.recv())[0])
    assert {p.ssrc for p in seen} == {a.stats.ssrc_out}
    for before, after in zip(seen, seen[1:], strict=False):
        assert after.sequence == (before.sequence + 1) & 0xFFFF
        step = (after.timestamp - before.timestamp) & 0xFFFFFFFF
        assert 160 <= step < 8000 * 60  # advances by at least a frame, never backwards
    assert [p.marker for p in seen] == [False] * 5 + [True] + [False] * 4 + [True] + [False] * 4
    # the stream from c into a ... and b's phone got nothing from c
    assert pb.queue.empty()


async def test_unbridge_drops_packets_and_keeps_stats(engine: MediaEngine,
                                                      phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    a, b = await bridged_pair(engine, pa, pb)
    pa.send(a)
    await pb.recv()
    engine.unbridge(a)
    assert engine.peer(a) is None and engine.peer(b) is None
    pa.send(a, b"dropped")
    await until(lambda: a.stats.packets_in == 2)
    engine.bridge(a, b)
    pa.send(a, b"marker")
    got, _ = await pb.recv()
    assert got.payload == b"marker"
    assert a.stats.packets_in == 3 and b.stats.packets_out == 2


async def test_rtcp_is_counted_not_relayed(engine: MediaEngine, phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    a, _ = await bridged_pair(engine, pa, pb)
    receiver_report = bytes((0x80, 201, 0, 1)) + (1234).to_bytes(4, "big")
    pa.send_raw(receiver_report, a, rtcp=True)
    await until(lambda: a.stats.rtcp_in == 1)
    sent = pa.send(a, b"rtp")
    got, _ = await pb.recv()
    assert got.payload == sent.payload


async def test_metrics_flushed_on_the_tick(engine: MediaEngine, phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    a, _ = await bridged_pair(engine, pa, pb)
    for _ in range(3):
        pa.send(a)
        await pb.recv()
    metrics = engine._metrics
    assert metrics is not None

    def value(direction: str) -> float:
        got = metrics.registry.get_sample_value("switch_rtp_packets_total",
                                                {"direction": direction})
        return got or 0.0

    await until(lambda: value("in") == 3 and value("out") == 3)


# --- symmetric RTP ---

async def test_latches_to_the_source_seen(engine: MediaEngine, phones: list[Phone],
                                          events: list[MediaEvent]) -> None:
    sdp_only, pa, pb, spoofer = phones
    a = await engine.open_leg("a")
    b = await engine.open_leg("b")
    engine.configure(a, config(sdp_only))     # SDP says port X ...
    engine.configure(b, config(pb))
    engine.bridge(a, b)
    assert a.remote == sdp_only.addr
    pa.send(a)                                # ... packets come from Y
    await pb.recv()
    assert a.remote == pa.addr and a.latched
    assert RemoteLatched(leg_id="a", address=pa.addr) in events
    sent = pb.send(b, b"reply")
    got, _ = await pa.recv()                  # replies go to Y
    assert got.payload == sent.payload
    assert sdp_only.queue.empty()
    # a third address is ignored after latching: not relayed, not latched
    spoofer.ssrc = pa.ssrc
    spoofer.send(a, b"spoof")
    await until(lambda: a.stats.ignored == 1)
    sent = pa.send(a, b"real")
    got, _ = await pb.recv()
    assert got.payload == b"real"
    assert a.remote == pa.addr


async def test_relatch_only_on_a_sustained_change(engine: MediaEngine,
                                                  phones: list[Phone]) -> None:
    _, pa, pb, moved = phones
    a, b = await bridged_pair(engine, pa, pb)
    pa.send(a)
    await pb.recv()
    # interleaved with the latched source: never 5 in a row, never re-latched
    for _ in range(3):
        for _ in range(4):
            moved.send(a, b"other")
        pa.send(a, b"real")
        got, _ = await pb.recv()
        assert got.payload == b"real"
    assert a.remote == pa.addr and a.stats.ignored == 12
    # the phone's NAT binding changed: the old source went quiet, the new one persists
    for _ in range(5):
        moved.send(a, b"moved")
    got, _ = await pb.recv()
    assert got.payload == b"moved"
    assert a.remote == moved.addr
    pb.send(b, b"to the new address")
    got, _ = await moved.recv()
    assert got.payload == b"to the new address"


# --- inactivity ---

async def test_media_timeout_reported_once(phones: list[Phone]) -> None:
    lo, hi = free_range(2)
    fired: asyncio.Queue[MediaEvent] = asyncio.Queue()
    eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi, inactivity_timeout=0.05,
                      on_event=fired.put_nowait)
    await eng.start()
    a = await eng.open_leg("a")
    eng.configure(a, config(phones[0]))
    event = await asyncio.wait_for(fired.get(), WAIT)
    assert event == MediaTimedOut(leg_id="a")
    eng.check_inactivity(time.monotonic() + 100)   # still silent: not reported again
    assert fired.empty()
    phones[0].send(a)                               # media again, then silence again
    await until(lambda: a.stats.packets_in == 1)
    eng.check_inactivity(time.monotonic() + 100)
    assert fired.get_nowait() == MediaTimedOut(leg_id="a")
    await eng.stop()


@pytest.mark.parametrize("direction", ["recvonly", "inactive", "sendonly"])
async def test_no_timeout_while_held(engine: MediaEngine, phones: list[Phone],
                                     events: list[MediaEvent], direction: str) -> None:
    engine.inactivity_timeout = 1.0
    a = await engine.open_leg("a")
    engine.configure(a, config(phones[0], direction=direction))
    engine.check_inactivity(time.monotonic() + 1000)
    assert not [e for e in events if isinstance(e, MediaTimedOut)]
    # c=0.0.0.0 hold (RFC 3264 §8.4) neither
    engine.configure(a, LegConfig(remote=("0.0.0.0", 4000), payload_types={0: PCMU}))
    engine.check_inactivity(time.monotonic() + 1000)
    assert not [e for e in events if isinstance(e, MediaTimedOut)]
    # taken off hold: the timer runs from the resume
    engine.configure(a, config(phones[0]))
    engine.check_inactivity(time.monotonic() + 1000)
    assert MediaTimedOut(leg_id="a") in events


# --- taps ---

class RecordingTap:
    def __init__(self) -> None:
        self.audio: list[np.ndarray] = []
        self.events: list[tuple[str, bytes, int, int, bool]] = []
        self.tick_ends = 0

    def on_audio(self, leg_id: str, pcm: np.ndarray, now: float) -> None:
        assert pcm.dtype == np.int16
        self.audio.append(pcm.copy())

    def on_telephone_event(self, leg_id: str, payload: bytes, ssrc: int, timestamp: int,
                           marker: bool, now: float) -> None:
        self.events.append((leg_id, payload, ssrc, timestamp, marker))

    def on_tick_end(self, now: float) -> None:
        self.tick_ends += 1

    def samples(self) -> int:
        return sum(len(chunk) for chunk in self.audio)


async def test_taps_get_decoded_audio_and_telephone_events(engine: MediaEngine,
                                                           phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    a, b = await bridged_pair(engine, pa, pb)
    tap, other = RecordingTap(), RecordingTap()
    engine.add_tap(a, tap)
    engine.add_tap(b, other)
    tone = (np.sin(np.arange(480) * 2 * np.pi * 1000 / 8000) * 8000).astype(np.int16)
    codes = ulaw_encode(tone).tobytes()
    for i in range(3):
        pa.send(a, codes[160 * i:160 * (i + 1)])
        await pb.recv()
    event = pa.send(a, bytes((5, 0x8A, 0, 160)), pt=101, marker=True)
    relayed, _ = await pb.recv()                   # relayed like audio ...
    assert relayed.payload == event.payload and relayed.payload_type == 101
    await until(lambda: tap.samples() == 480 and len(tap.events) == 1)   # ... and to the tap
    assert np.array_equal(np.concatenate(tap.audio), ulaw_decode(codes))
    assert tap.events == [("a", event.payload, pa.ssrc, event.timestamp, True)]
    assert other.samples() == 0 and tap.tick_ends >= 1
    engine.remove_tap(a, tap)
    pa.send(a, codes[:160])
    await pb.recv()
    await until(lambda: a.stats.packets_in == 5)
    engine.tick(time.monotonic())
    assert tap.samples() == 480


async def test_tick_visits_only_tapped_legs_that_received_something(
        phones: list[Phone]) -> None:
    """A silent (held, signalling-only) tapped leg costs the tick nothing: the relay
    queues a leg on its first packet of a tick, and the tick looks at those only."""
    lo, hi = free_range(3)
    eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi, tick_interval=3600)
    await eng.start()                                  # no timer tick during the test
    pa, pb, pc = phones[:3]
    a, b = await bridged_pair(eng, pa, pb)
    c = await eng.open_leg("c")
    eng.configure(c, config(pc))
    tap = RecordingTap()
    for leg in (a, b, c):
        eng.add_tap(leg, tap)
    assert eng._pending == []
    for _ in range(3):
        pa.send(a)
        await pb.recv()
    assert eng._pending == [a]                         # once, however many packets
    eng.tick(time.monotonic())
    assert eng._pending == [] and tap.samples() == 480 and tap.tick_ends == 1
    eng.tick(time.monotonic())                         # nothing received: nothing visited
    assert eng._pending == [] and tap.samples() == 480 and tap.tick_ends == 2
    pc.send(c)
    await until(lambda: c.stats.packets_in == 1)
    eng.remove_tap(c, tap)                             # untapped before the tick
    eng.tick(time.monotonic())
    assert tap.samples() == 480 and not c._rx.queued
    await eng.stop()


async def test_pcma_tap_on_a_leg_whose_first_codec_is_pcma(engine: MediaEngine,
                                                           phones: list[Phone]) -> None:
    pa = phones[0]
    a = await engine.open_leg("a")
    engine.configure(a, config(pa, payload_types={8: PCMA}, te=None))
    tap = RecordingTap()
    engine.add_tap(a, tap)
    codes = alaw_encode(np.arange(-800, 800, 10, dtype=np.int16)).tobytes()
    pa.send(a, codes, pt=8)
    await until(lambda: tap.samples() == 160)
    assert np.array_equal(np.concatenate(tap.audio), alaw_decode(codes))


# --- playback ---

async def test_play_packetises_and_then_resumes_relay(phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    lo, hi = free_range(2)
    finished: asyncio.Queue[MediaEvent] = asyncio.Queue()
    eng = MediaEngine(host="127.0.0.1", port_min=lo, port_max=hi, on_event=finished.put_nowait)
    await eng.start()
    a = await eng.open_leg("a")
    b = await eng.open_leg("b")
    eng.configure(a, config(pa))
    eng.configure(b, config(pb, payload_types={8: PCMA, 0: PCMU}))
    eng.bridge(a, b)
    pa.send(a)
    before, _ = await pb.recv()
    greeting = (np.arange(1500) % 200 * 50 - 5000).astype(np.int16)  # 9.4 frames
    eng.play(b, greeting)
    played = [(await pb.recv())[0] for _ in range(10)]
    assert await asyncio.wait_for(finished.get(), WAIT) == PlaybackFinished(leg_id="b")
    assert [p.payload_type for p in played] == [8] * 10        # b's first codec: PCMA
    assert [p.marker for p in played] == [True] + [False] * 9
    assert {p.ssrc for p in played} == {before.ssrc}
    for prev, nxt in zip([before, *played], played, strict=False):
        assert nxt.sequence == (prev.sequence + 1) & 0xFFFF
    assert [(q.timestamp - p.timestamp) & 0xFFFFFFFF
            for p, q in zip(played, played[1:], strict=False)] == [160] * 9
    padded = np.zeros(1600, dtype=np.int16)
    padded[:1500] = greeting
    assert b"".join(p.payload for p in played) == alaw_encode(padded).tobytes()
    # the relay resumes, continuing the numbering
    pa.send(a)
    after, _ = await pb.recv()
    assert after.sequence == (played[-1].sequence + 1) & 0xFFFF and after.marker
    await eng.stop()


async def test_play_from_a_generator_and_stop_playing(engine: MediaEngine,
                                                      phones: list[Phone],
                                                      events: list[MediaEvent]) -> None:
    pa, pb = phones[:2]
    a, b = await bridged_pair(engine, pa, pb)

    def music() -> Any:
        while True:
            yield np.full(100, 1000, dtype=np.int16)   # frames of any length

    engine.play(a, music())
    first = [(await pa.recv())[0] for _ in range(3)]
    assert first[0].marker and first[0].payload == ulaw_encode(np.full(160, 1000)).tobytes()
    pb.send(b, b"not relayed while playing")
    await until(lambda: b.stats.packets_in == 1)
    engine.stop_playing(a)
    assert not [e for e in events if isinstance(e, PlaybackFinished)]
    # drain what the player sent before it stopped, then the relay is back
    pb.send(b, b"relayed")
    while True:
        got, _ = await pa.recv()
        if got.payload_type != 0 or got.payload != first[0].payload:
            break
    assert got.payload == b"relayed" and got.marker


async def test_close_leg_unbridges_and_returns_ports(engine: MediaEngine,
                                                     phones: list[Phone]) -> None:
    pa, pb = phones[:2]
    a, b = await bridged_pair(engine, pa, pb)
    free = engine.free_ports
    engine.close_leg(b)
    assert engine.peer(a) is None and b.closed
    await until(lambda: engine.free_ports == free + 1)
    assert b.stats.packets_in == 0
