"""Micro-benchmark: OPTIONS transactions through the whole sans-I/O endpoint.

Each iteration is one UDP OPTIONS datagram (distinct branch) through
``Endpoint.receive`` → ``RequestReceived`` → a trivial TU answering 200 with
``make_response`` → ``Endpoint.respond`` → ``datagrams_to_send()`` → ``get_timer()``; the
transactions then sit in Completed (Timer J) as they would on the wire, and
a final ``handle_timer`` past Timer J terminates them all (timed apart).

    .venv/bin/python bench/bench_endpoint.py [-n 50000] [--profile]

Prints µs per transaction and transactions per second; ``--profile`` adds the
top of a cProfile run (cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

from switch.sip.endpoint import Endpoint, RequestReceived, Source
from switch.sip.message import make_response

TEMPLATE = (
    "OPTIONS sip:switch@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-bench-{n}\r\n"
    "Max-Forwards: 70\r\n"
    "From: sipp <sip:sipp@127.0.0.1:5061>;tag={n}SIPpTag00\r\n"
    "To: sut <sip:switch@127.0.0.1:5060>\r\n"
    "Call-ID: {n}-bench@127.0.0.1\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Contact: <sip:sipp@127.0.0.1:5061>\r\n"
    "Accept: application/sdp\r\n"
    "User-Agent: bench\r\n"
    "Content-Length: 0\r\n\r\n"
)


def make_datagrams(n: int) -> list[bytes]:
    return [TEMPLATE.format(n=i).encode() for i in range(n)]


def run(datagrams: list[bytes]) -> tuple[float, float, int]:
    endpoint = Endpoint()
    source = Source(
        transport="udp", host="127.0.0.1", port=5061, local_host="127.0.0.1", local_port=5060
    )
    receive = endpoint.receive
    next_event = endpoint.next_event
    respond = endpoint.respond
    drain = endpoint.datagrams_to_send
    get_timer = endpoint.get_timer
    sent = 0
    now = 1000.0
    start = time.perf_counter()
    for data in datagrams:
        now += 0.00001
        receive(data, source, now)
        event = next_event()
        while event is not None:
            if isinstance(event, RequestReceived):
                respond(
                    event.transaction_id, make_response(event.request, 200, to_tag="bench"), now
                )
            event = next_event()
        sent += len(drain())
        get_timer()  # as the driver does, to re-arm its one timer handle
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    endpoint.handle_timer(now + 3600.0)
    expiry = time.perf_counter() - start
    assert endpoint.transaction_count == 0, endpoint.transaction_count
    return elapsed, expiry, sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=50_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    datagrams = make_datagrams(args.n)
    run(make_datagrams(2000))  # warm-up
    elapsed, expiry, sent = run(datagrams)
    assert sent == args.n, sent
    out = sys.stdout
    out.write(
        f"{args.n} OPTIONS transactions: {elapsed / args.n * 1e6:.2f} µs each "
        f"({args.n / elapsed:,.0f}/s on one core); Timer J expiry "
        f"{expiry / args.n * 1e6:.2f} µs each\n"
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(datagrams)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(18)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
