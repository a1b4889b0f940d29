"""RTP relay load test: N bridged calls, G.711 both ways, for D seconds.

Three processes:

* the engine (``MediaEngine`` on uvloop), pinned to one core, opens 2N legs,
  configures them towards the load generator and bridges them in pairs;
* the load generator, pinned to the other core: every leg's "phone" sends a
  172-octet PCMU packet every 20 ms (legs spread evenly over the 20 ms, as
  real phones are), and counts what the engine relays back, per side;
* this parent, which wires them and prints the figures.

Phones share a few sockets per side (the engine sends each leg's stream from
the leg's own port to the address it latched, which may be shared).  Packets
sent in the measured window carry a 1 in their first payload octet; only
those are counted at the receiver, so warm-up and in-flight packets do not
blur the loss figure; what has not come back 0.5 s after the end counts
as lost (an engine that falls behind shows as loss and as a growing delay).
The delay is send-to-receive through the engine (both on CLOCK_MONOTONIC),
sampled on one packet in 16.  CPU is the engine process's user + system time over the
measured window, as % of one core (``resource.getrusage``); "gen" is the load
generator's, so one can see whether it kept up ("gen late": send slots it
started more than 20 ms late).  "drops e/g" are the datagrams the kernel
dropped on the engine's / the generator's sockets (full receive buffer,
/proc/net/udp); "cpu busy" is each core's total load over the window, all
processes: well above the engine's / generator's figure means other work
shared the core and the run is not clean.

    .venv/bin/python bench/bench_media.py [--calls 100,250,500,750] [--duration 10]
        [--engine-cpu 0] [--gen-cpu 1] [--loop uvloop|asyncio] [--tap]

Prints one line per call count and the largest count with 0 loss.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import resource
import select
import socket
import struct
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from switch.media import Codec, LegConfig, MediaEngine

PACKET_INTERVAL = 0.02
SLOTS = 10                      # the 20 ms are cut into this many send slots
SOCKETS_PER_SIDE = 8
WARMUP = 1.0
DRAIN = 0.5
PAYLOAD = 160


def _udp_drops(ports: set[int]) -> int:
    """Datagrams the kernel dropped on our sockets (full receive buffer): /proc/net/udp."""
    drops = 0
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) in ports:
                drops += int(fields[-1])
    return drops


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max, in milliseconds."""
    if not samples:
        return (0.0, 0.0, 0.0)
    ordered = sorted(samples)
    return (1000 * ordered[len(ordered) // 2], 1000 * ordered[int(len(ordered) * 0.99)],
            1000 * ordered[-1])


def _cpu_busy() -> list[tuple[int, int]]:
    """(busy, total) jiffies of every CPU, from /proc/stat."""
    result = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + values[4]
                result.append((sum(values) - idle, sum(values)))
    return result


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _user_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


# --- engine process ---

class _CountingTap:
    """Stands in for DTMF detection / recording: receives every leg's decoded audio."""

    def __init__(self) -> None:
        self.samples = 0

    def on_audio(self, leg_id: str, pcm: Any, now: float) -> None:
        self.samples += len(pcm)

    def on_telephone_event(self, leg_id: str, payload: bytes, ssrc: int, timestamp: int,
                           marker: bool, now: float) -> None:
        pass


def engine_main(conn: Connection, calls: int, port_min: int, cpu: int | None,
                loop_kind: str, tap: bool) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if loop_kind == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(_engine(conn, calls, port_min, tap))


async def _engine(conn: Connection, calls: int, port_min: int, tap: bool) -> None:
    loop = asyncio.get_running_loop()
    engine = MediaEngine(host="127.0.0.1", port_min=port_min,
                         port_max=port_min + 4 * calls + 400)
    await engine.start()
    phones: dict[str, list[tuple[str, int]]] = conn.recv()
    pcmu = {0: Codec(name="PCMU"), 101: Codec(name="telephone-event")}
    legs = []
    counting_tap = _CountingTap()
    for i in range(calls):
        pair = []
        for side in ("a", "b"):
            leg = await engine.open_leg(f"{side}{i}")
            remote = phones[side][i % len(phones[side])]
            engine.configure(leg, LegConfig(remote=remote, payload_types=pcmu,
                                            telephone_event_pt=101))
            if tap:
                engine.add_tap(leg, counting_tap)
            pair.append(leg)
        engine.bridge(pair[0], pair[1])
        legs.append(pair)
    conn.send({"a": [p[0].local_port for p in legs], "b": [p[1].local_port for p in legs]})

    marks: list[tuple[float, float, float, int, int]] = []
    stopped = asyncio.Event()

    def on_message() -> None:
        message = conn.recv()
        if message in ("go", "done"):
            total_in = sum(leg.stats.packets_in for pair in legs for leg in pair)
            total_out = sum(leg.stats.packets_out for pair in legs for leg in pair)
            marks.append((time.monotonic(), _cpu_seconds(), _user_seconds(), total_in,
                          total_out))
        if message == "done":
            stopped.set()

    loop.add_reader(conn.fileno(), on_message)
    await stopped.wait()
    loop.remove_reader(conn.fileno())
    os.set_blocking(conn.fileno(), True)
    (t0, c0, u0, in0, out0), (t1, c1, u1, in1, out1) = marks
    malformed = sum(leg.stats.malformed + leg.stats.ignored for pair in legs for leg in pair)
    conn.send({"cpu": 100 * (c1 - c0) / (t1 - t0), "user": 100 * (u1 - u0) / (t1 - t0),
               "in": in1 - in0, "out": out1 - out0,
               "dropped_by_engine": malformed, "tapped_samples": counting_tap.samples})
    conn.recv()  # wait for the parent before closing (the generator drains meanwhile)
    await engine.stop()


# --- load generator process ---

def generator_main(conn: Connection, cpu: int | None, duration: float) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sockets: dict[str, list[socket.socket]] = {"a": [], "b": []}
    for side in sockets:
        for _ in range(SOCKETS_PER_SIDE):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            sockets[side].append(sock)
    conn.send({side: [s.getsockname() for s in socks] for side, socks in sockets.items()})
    ports: dict[str, list[int]] = conn.recv()

    # one entry per leg: (socket, destination, packet buffer, [seq, ts])
    streams: list[tuple[socket.socket, tuple[str, int], bytearray, list[int]]] = []
    for side in ("a", "b"):
        for i, port in enumerate(ports[side]):
            packet = bytearray(12 + PAYLOAD)
            packet[0] = 0x80
            struct.pack_into("!I", packet, 8, random.getrandbits(32))
            packet[12:] = b"\x00" + b"\xff" * (PAYLOAD - 1)
            sock = sockets[side][i % SOCKETS_PER_SIDE]
            streams.append((sock, ("127.0.0.1", port), packet,
                            [random.getrandbits(16), random.getrandbits(32)]))
    random.shuffle(streams)
    slots = [streams[k::SLOTS] for k in range(SLOTS)]
    by_fd = {s.fileno(): (side, s) for side, socks in sockets.items() for s in socks}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)

    received = {"a": 0, "b": 0}
    sent = {"a": 0, "b": 0}
    send_errors = 0
    buf = bytearray(2048)
    side_of = {id(s): side for side, socks in sockets.items() for s in socks}
    pack_into = struct.pack_into
    unpack_from = struct.unpack_from
    delays: list[float] = []
    late_slots = 0

    def run(until: float, phase: int, sending: bool) -> None:
        nonlocal send_errors, late_slots
        slot = 0
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= until:
                return
            if sending:
                while next_send <= now:
                    if now - next_send > PACKET_INTERVAL:
                        late_slots += 1
                    for sock, dest, packet, state in slots[slot]:
                        state[0] = (state[0] + 1) & 0xFFFF
                        state[1] = (state[1] + PAYLOAD) & 0xFFFFFFFF
                        pack_into("!HI", packet, 2, state[0], state[1])
                        packet[12] = phase
                        pack_into("!d", packet, 13, now)
                        try:
                            sock.sendto(packet, dest)
                        except OSError:
                            send_errors += 1
                            continue
                        if phase:
                            sent[side_of[id(sock)]] += 1
                    slot = (slot + 1) % SLOTS
                    next_send += PACKET_INTERVAL / SLOTS
            timeout = max(0.0, min(next_send if sending else until, until) - time.monotonic())
            for fd, _ in poller.poll(timeout):
                side, sock = by_fd[fd]
                while True:
                    try:
                        n = sock.recv_into(buf)
                    except BlockingIOError:
                        break
                    if n > 20 and buf[12] == 1:
                        received[side] += 1
                        if received[side] % 16 == 0:
                            delays.append(time.monotonic() - unpack_from("!d", buf, 13)[0])

    run(time.monotonic() + WARMUP, 0, True)
    conn.send("go")
    c0 = _cpu_seconds()
    t0 = time.monotonic()
    run(t0 + duration, 1, True)
    t1 = time.monotonic()
    c1 = _cpu_seconds()
    conn.send("done")
    run(time.monotonic() + DRAIN, 1, False)
    drops = _udp_drops({s.getsockname()[1] for socks in sockets.values() for s in socks})
    conn.send({"sent": sent, "received": received, "send_errors": send_errors, "drops": drops,
               "late_slots": late_slots, "cpu": 100 * (c1 - c0) / (t1 - t0),
               "delay": _percentiles(delays)})


# --- parent ---

def free_port_base(span: int) -> int:
    for _ in range(100):
        base = random.randrange(20000, 60000 - span, 2)
        socks = []
        try:
            for port in range(base, base + span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def run_one(calls: int, duration: float, engine_cpu: int | None, gen_cpu: int | None,
            loop_kind: str, tap: bool) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    eng_parent, eng_child = ctx.Pipe()
    gen_parent, gen_child = ctx.Pipe()
    base = free_port_base(4 * calls + 400)
    engine = ctx.Process(target=engine_main,
                         args=(eng_child, calls, base, engine_cpu, loop_kind, tap))
    generator = ctx.Process(target=generator_main, args=(gen_child, gen_cpu, duration))
    engine.start()
    generator.start()
    children = (engine, generator)

    def recv(conn: Connection, timeout: float = 60.0) -> Any:
        child = engine if conn is eng_parent else generator
        deadline = time.monotonic() + timeout
        while not conn.poll(0.2):
            if time.monotonic() > deadline or not child.is_alive():
                for child in children:
                    child.kill()
                codes = [c.exitcode for c in children]
                raise RuntimeError(f"bench child failed or timed out ({calls} calls): {codes}")
        return conn.recv()

    try:
        eng_parent.send(recv(gen_parent))           # phone addresses -> engine
        gen_parent.send(recv(eng_parent))           # leg ports -> generator
        assert recv(gen_parent) == "go"
        eng_parent.send("go")
        busy0 = _cpu_busy()
        assert recv(gen_parent, duration + 60) == "done"
        busy1 = _cpu_busy()
        eng_parent.send("done")
        engine_report = recv(eng_parent)
        gen_report = recv(gen_parent)
        engine_report["drops"] = _udp_drops(set(range(base, base + 4 * calls + 401)))
        eng_parent.send("exit")
    finally:
        engine.join(30)
        generator.join(30)
    sent, received = gen_report["sent"], gen_report["received"]
    # what side a sends arrives at side b, and the other way round
    loss_to_b = 1 - received["b"] / sent["a"] if sent["a"] else 0.0
    loss_to_a = 1 - received["a"] / sent["b"] if sent["b"] else 0.0
    busy = [100 * (b1 - b0) / max(1, t1 - t0) for (b0, t0), (b1, t1) in zip(busy0, busy1,
                                                                          strict=True)]
    return {"calls": calls, "engine": engine_report, "gen": gen_report, "busy": busy,
            "loss_to_a": loss_to_a, "loss_to_b": loss_to_b,
            "pps_in": engine_report["in"] / duration, "pps_out": engine_report["out"] / duration}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="100,250,500,750")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--engine-cpu", type=int, default=0)
    parser.add_argument("--gen-cpu", type=int, default=1)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--tap", action="store_true",
                        help="tap every leg (G.711 decoded on the tick, as DTMF detection needs)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.calls.split(",")]
    print(f"bench_media: {args.duration:g} s per run, engine on cpu {args.engine_cpu} "
          f"({args.loop}), generator on cpu {args.gen_cpu}, 20 ms PCMU both ways"
          + (", every leg tapped" if args.tap else ""))
    print(f"{'calls':>6} {'legs':>5} {'pps in':>8} {'pps out':>8} {'loss a->b':>10} "
          f"{'loss b->a':>10} {'engine cpu (usr)':>16} {'gen cpu':>8} {'drops e/g':>10} "
          f"{'gen late':>8} {'delay p50/p99/max ms':>21} {'cpu busy (all procs)':>20}")
    best = 0
    for calls in counts:
        r = run_one(calls, args.duration, args.engine_cpu, args.gen_cpu, args.loop, args.tap)
        e, g = r["engine"], r["gen"]
        print(f"{calls:>6} {2 * calls:>5} {r['pps_in']:>8.0f} {r['pps_out']:>8.0f} "
              f"{100 * r['loss_to_b']:>9.3f}% {100 * r['loss_to_a']:>9.3f}% "
              f"{e['cpu']:>8.1f}% ({e['user']:4.1f}%) {g['cpu']:>7.1f}% "
              f"{e['drops']:>5}/{g['drops']:<4} "
              f"{g['late_slots']:>8} "
              f"{'/'.join(f'{d:.1f}' for d in g['delay']):>21} "
              + " ".join(f"cpu{i} {b:5.1f}%" for i, b in enumerate(r["busy"])), flush=True)
        if r["loss_to_a"] <= 0 and r["loss_to_b"] <= 0 and g["send_errors"] == 0:
            best = max(best, calls)
    print(f"max calls with 0 loss: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
