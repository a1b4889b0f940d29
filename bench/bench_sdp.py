"""SDP handling of one bridged call, as the call controller does it, in isolation.

Per call the controller parses the caller's offer, checks it (``anchor_offer``
with port 0, in ``_route``), anchors it for the callee's leg, stamps and
encodes it (``_fork``); then parses the callee's answer, anchors it for the
caller, stamps and encodes it and configures the media of both legs
(``_complete_exchange``, ``_configure``).  The bodies are those of the SIPp
scenarios the call benchmarks run (tests/interop/scenarios/uac_call.xml,
uas_call.xml).

Usage::

    .venv/bin/python bench/bench_sdp.py            # µs per call, function calls per call
    .venv/bin/python bench/bench_sdp.py --profile  # and the top functions under cProfile
    .venv/bin/python bench/bench_sdp.py --vary     # o= versions and ports new every call,
                                                   # as real phones send them (SIPp does not)
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import time

from switch.call.offers import anchor_answer, anchor_offer, leg_config
from switch.sip.sdp import OriginState, parse_sdp

MEDIA_HOST = "127.0.0.1"

OFFER = (b"v=0\r\no=sipp 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
         b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n")
ANSWER = (b"v=0\r\no=sipp 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
          b"m=audio 6002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
          b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n")


def _varied(body: bytes, n: int) -> bytes:
    """``body`` with the o= sess-id and version and the m= port a phone's next call has."""
    for fixed in (b"sipp 1 1", b"sipp 2 2"):
        body = body.replace(fixed, b"sipp %d %d" % (n, n))
    for port in (b"audio 6000", b"audio 6002"):
        body = body.replace(port, b"audio %d" % (10000 + n % 5000 * 2))
    return body


_SERIAL = itertools.count(1)


def one_call(sess_id: int = 1234, vary: bool = False) -> tuple[bytes, bytes]:
    """The SDP work of one call: returns the two bodies the engine sends."""
    caller_origin = OriginState.create(sess_id=sess_id, address=MEDIA_HOST)
    serial = next(_SERIAL)       # never the same o= twice, as a phone's bodies
    offer_body, answer_body = (_varied(OFFER, serial), _varied(ANSWER, serial)) if vary \
        else (OFFER, ANSWER)
    offer = parse_sdp(offer_body)                                      # _route
    anchor_offer(offer, address=MEDIA_HOST, port=0)
    fork_origin = OriginState.create(sess_id=sess_id + 1, address=MEDIA_HOST)  # _fork
    relayed, index = anchor_offer(offer, address=MEDIA_HOST, port=20000)
    fork_origin, relayed = fork_origin.stamp(relayed)
    to_callee = relayed.encode()
    answer = parse_sdp(answer_body)                                      # _answer_received
    back = anchor_answer(answer, offer, index, address=MEDIA_HOST, port=20002)
    caller_origin, back = caller_origin.stamp(back)
    leg_config(back, offer, index)                                     # _configure(caller)
    leg_config(relayed, answer, index)                                 # _configure(fork)
    return to_callee, back.encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--vary", action="store_true", help="new o= and ports every call")
    args = parser.parse_args()
    one_call()
    best = min(_timed(args.calls, args.vary) for _ in range(args.repeat))
    profile = cProfile.Profile()
    profile.enable()
    for n in range(1000):
        one_call(n, args.vary)
    profile.disable()
    stats = pstats.Stats(profile)
    print(f"{best * 1e6:.1f} µs per call (best of {args.repeat} x {args.calls}), "
          f"{stats.total_calls / 1000:.0f} function calls per call")   # type: ignore[attr-defined]
    if args.profile:
        stats.sort_stats("tottime").print_stats(30)


def _timed(calls: int, vary: bool) -> float:
    start = time.perf_counter()
    for n in range(calls):
        one_call(n, vary)
    return (time.perf_counter() - start) / calls


if __name__ == "__main__":
    main()
