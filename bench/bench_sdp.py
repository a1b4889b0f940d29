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
"""

from __future__ import annotations

import argparse
import cProfile
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


def one_call(sess_id: int = 1234) -> tuple[bytes, bytes]:
    """The SDP work of one call: returns the two bodies the engine sends."""
    caller_origin = OriginState.create(sess_id=sess_id, address=MEDIA_HOST)
    offer = parse_sdp(OFFER)                                           # _route
    anchor_offer(offer, address=MEDIA_HOST, port=0)
    fork_origin = OriginState.create(sess_id=sess_id + 1, address=MEDIA_HOST)  # _fork
    relayed, index = anchor_offer(offer, address=MEDIA_HOST, port=20000)
    fork_origin, relayed = fork_origin.stamp(relayed)
    to_callee = relayed.encode()
    answer = parse_sdp(ANSWER)                                         # _answer_received
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
    args = parser.parse_args()
    one_call()
    best = min(_timed(args.calls) for _ in range(args.repeat))
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(1000):
        one_call()
    profile.disable()
    stats = pstats.Stats(profile)
    print(f"{best * 1e6:.1f} µs per call (best of {args.repeat} x {args.calls}), "
          f"{stats.total_calls / 1000:.0f} function calls per call")   # type: ignore[attr-defined]
    if args.profile:
        stats.sort_stats("tottime").print_stats(30)


def _timed(calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        one_call()
    return (time.perf_counter() - start) / calls


if __name__ == "__main__":
    main()
