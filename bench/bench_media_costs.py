#!/usr/bin/env python3
"""The media side's fixed costs, in one process, no load generator: CPU time per unit.

Deterministic enough to compare two commits on a shared machine (run each a
few times, alternating, and take the median): what a call costs the media
engine besides the packets themselves.

* ``open/close``: one leg opened and closed on 127.0.0.1 (uvloop), as a call's
  leg is: port pair bound + asyncio endpoints + close, or a recycled pair
  (``MediaEngine`` keeps closed legs' sockets for ``port_quarantine`` seconds
  of quiet, engine.py "Recycled port pairs"); µs per leg.
* ``relay``: ``_RtpReceiver.datagram_received`` for one in-order PCMU packet
  of a bridged leg, the transport's ``sendto`` a no-op: the Python part of the
  per-packet path (the syscalls are not in it); ns per packet.
* ``taps``: the engine's tick over N tapped legs that each buffered one
  20 ms PCMU packet (batched decode, ``on_audio`` per leg to a no-op tap);
  µs per tick.
* ``call``: what a signalling-only call asks of the media side, as the call
  controller asks it: two legs opened through ``EngineMediaPort``, each
  configured (call-control ``LegConfig``: PCMU + telephone-event) with
  ``DtmfWiring`` observing (tap, digit gate), bridged, unbridged, closed; µs
  and Python function calls (cProfile) per call, sockets recycled as in a
  steady load.
* ``wiring``: ``DtmfWiring`` (in-band on, no feature codes) with N legs each
  delivering 20 ms of audio a tick, fake time: ``on_audio`` per leg and the
  batched detector; µs per tick.  And the same N legs silent (a signalling-only
  load): µs per tick.

Usage::

    .venv/bin/python bench/bench_media_costs.py [--legs 1000] [--repeat 5] [--only call]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from switch.app import tune_gc  # noqa: E402
from switch.call.dtmf import DtmfWiring  # noqa: E402
from switch.call.media import Codec as CallCodec  # noqa: E402
from switch.call.media import EngineMediaPort  # noqa: E402
from switch.call.media import LegConfig as CallLegConfig  # noqa: E402
from switch.config import FeaturesConfig, User  # noqa: E402
from switch.logs import get_logger  # noqa: E402
from switch.media import Codec, LegConfig, MediaEngine, MediaLeg  # noqa: E402
from switch.media.relay import _RtcpReceiver, _RtpReceiver, _Sender  # noqa: E402
from switch.media.rtp import HEADER  # noqa: E402
from switch.metrics import Metrics  # noqa: E402

CONFIG = LegConfig(remote=("127.0.0.1", 9), payload_types={
    0: Codec(name="PCMU"), 101: Codec(name="telephone-event")}, telephone_event_pt=101)


class _NoTransport:
    def sendto(self, data: Any, addr: Any = None) -> None:
        pass


class _NoTap:
    def on_audio(self, leg_id: str, pcm: Any, now: float) -> None:
        pass

    def on_telephone_event(self, *args: Any) -> None:
        pass

    def on_tick_end(self, now: float) -> None:
        pass


class _Bus:
    def publish(self, type: str, **fields: object) -> None:
        pass


def open_close(legs: int) -> float:
    async def run() -> float:
        engine = MediaEngine(host="127.0.0.1", port_min=42000, port_max=42000 + 4 * legs + 3)
        await engine.start()
        warm = [await engine.open_leg(f"w{i}") for i in range(legs)]
        for leg in warm:
            engine.close_leg(leg)
        await asyncio.sleep(1.1)            # past the quarantine, if the engine has one
        t0 = time.process_time()
        for i in range(legs):
            leg = await engine.open_leg(f"x{i}")
            engine.configure(leg, CONFIG)
            engine.close_leg(leg)
        await asyncio.sleep(0)              # the closes' callbacks
        cpu = time.process_time() - t0
        await engine.stop()
        return 1e6 * cpu / legs

    try:
        import uvloop
        return uvloop.run(run())
    except ImportError:
        return asyncio.run(run())


def call(calls: int, profile: bool = False) -> float:
    """µs per call (``profile``: Python function calls per call instead)."""
    async def run() -> float:
        engine = MediaEngine(host="127.0.0.1", port_min=42000, port_max=42000 + 8 * calls + 7,
                             port_quarantine=0.0)
        await engine.start()
        port = EngineMediaPort(engine)
        wired = DtmfWiring(FeaturesConfig(), engine=engine, bus=_Bus(),
                           metrics=Metrics(process_metrics=False), log=get_logger("bench"),
                           clock=time.monotonic)
        user = User(extension="1", name="bench", password="p")

        async def one(i: int) -> None:
            legs = []
            for side in ("a", "b"):
                media = await port.open_leg(f"{side}{i}")
                leg = SimpleNamespace(id=media.id, call=SimpleNamespace(id=f"c{i}"), user=user,
                                      party="1", media=media)
                config = CallLegConfig(remote=("127.0.0.1", 4000 + 2 * len(legs)), payload_types={
                    0: CallCodec(name="PCMU"), 101: CallCodec(name="telephone-event")},
                    telephone_event_pt=101)
                port.configure(media, config)
                wired.leg_media_configured(leg, config)  # type: ignore[arg-type]
                legs.append(leg)
            port.bridge(legs[0].media, legs[1].media)
            port.unbridge(legs[0].media)
            for leg in legs:
                wired.leg_media_closed(leg)  # type: ignore[arg-type]
                port.close_leg(leg.media)
            await asyncio.sleep(0)           # the closes' callbacks

        for i in range(min(calls, 50)):      # warm: spare pairs to recycle
            await one(i)
        tune_gc()                            # as the engine runs (app.py)
        profiler = cProfile.Profile() if profile else None
        t0 = time.process_time()
        if profiler is not None:
            profiler.enable()
        for i in range(calls):
            await one(calls + i)
        if profiler is not None:
            profiler.disable()
        cpu = time.process_time() - t0
        await engine.stop()
        if profiler is not None:
            return pstats.Stats(profiler).total_calls / calls  # type: ignore[attr-defined,no-any-return]
        return 1e6 * cpu / calls

    try:
        import uvloop
        return uvloop.run(run())
    except ImportError:
        return asyncio.run(run())


def relay(packets: int = 100_000) -> float:
    out = _Sender()
    out.transport = _NoTransport()  # type: ignore[assignment]
    out.addr = ("127.0.0.1", 4000)
    rx = _RtpReceiver(_Sender(), 50, lambda addr: None, lambda: None)
    rx.out = out
    addr = ("127.0.0.1", 5000)
    data = [HEADER.pack(0x80, 0, (i + 1) & 0xFFFF, (160 * i) & 0xFFFFFFFF, 0x1234) + b"\xff" * 160
            for i in range(packets)]
    received = rx.datagram_received
    t0 = time.perf_counter()
    for packet in data:
        received(packet, addr)
    return 1e9 * (time.perf_counter() - t0) / packets


def taps(legs: int, ticks: int = 50) -> float:
    engine = MediaEngine(host="127.0.0.1", port_min=42000, port_max=42001)
    pending = getattr(engine, "_pending", None)
    tap = _NoTap()
    made = []
    for i in range(legs):
        sender = _Sender()
        extra = [pending] if pending is not None else []
        rx = _RtpReceiver(sender, 50, lambda addr: None, lambda: None, *extra)
        leg = MediaLeg(f"l{i}", "127.0.0.1", 42000, rx, sender, _RtcpReceiver(lambda: None))
        if pending is not None:
            rx.owner = leg
        engine._legs[leg.id] = leg
        engine.configure(leg, CONFIG)
        engine.add_tap(leg, tap)
        made.append(leg)
    payload = b"\x55" * 160
    total = 0.0
    for _ in range(ticks):
        for leg in made:                    # what the relay does on a leg's packet
            rx = leg._rx
            rx.ulaw.append(payload)
            if pending is not None and not rx.queued:
                rx.queued = True
                pending.append(leg)
        t0 = time.process_time()
        engine._run_taps(1.0)
        total += time.process_time() - t0
    return 1e6 * total / ticks


def wiring(legs: int, audio: bool, ticks: int = 100) -> float:
    wired = DtmfWiring(FeaturesConfig(), engine=None, bus=_Bus(),
                       metrics=Metrics(process_metrics=False), log=get_logger("bench"),
                       clock=time.monotonic)
    config = CallLegConfig(remote=("10.0.0.1", 4000), payload_types={
        0: CallCodec(name="PCMU"), 101: CallCodec(name="telephone-event")},
        telephone_event_pt=101)
    user = User(extension="1", name="bench", password="p")
    ids = [f"l{i}" for i in range(legs)]
    for leg_id in ids:
        wired.leg_media_configured(SimpleNamespace(id=leg_id, call=SimpleNamespace(id="c"),
                                                   user=user, party="1", media=None), config)
    rng = np.random.default_rng(1)
    pcm = [(rng.standard_normal(160) * 300).astype(np.int16) for _ in ids]
    now = 100.0

    def tick() -> None:
        nonlocal now
        now += 0.02
        if audio:
            for leg_id, samples in zip(ids, pcm, strict=True):
                wired.on_audio(leg_id, samples, now)
        wired.on_tick_end(now)

    for _ in range(20):
        tick()
    t0 = time.process_time()
    for _ in range(ticks):
        tick()
    return 1e6 * (time.process_time() - t0) / ticks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--legs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (median shown)")
    ap.add_argument("--only", choices=["call"], help="only the per-call figure")
    args = ap.parse_args()
    n = args.legs

    def median(fn: Any, *fn_args: Any) -> float:
        return statistics.median(fn(*fn_args) for _ in range(args.repeat))

    print(f"call (2 legs, dtmf wiring):  {median(call, min(n, 500)):8.1f} µs, "
          f"{call(200, True):.0f} function calls")
    if args.only:
        return 0
    print(f"open/close one leg:          {median(open_close, min(n, 500)):8.1f} µs")
    print(f"relay, Python part:          {median(relay):8.0f} ns per packet")
    print(f"engine taps, {n} legs:     {median(taps, n):8.0f} µs per tick")
    print(f"dtmf wiring, {n} legs:     {median(wiring, n, True):8.0f} µs per tick (audio)")
    print(f"dtmf wiring, {n} legs:     {median(wiring, n, False):8.0f} µs per tick (silent)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
