#!/usr/bin/env python3
"""Engine CPU per call, in one process: the SIP service and two test phones on 127.0.0.1.

The service (``SwitchSipService``: transports, transactions, digest, call
control, media relay ports, call records) runs on the loop with the two small
UDP phones of ``tests/unit/test_call_e2e.py``; ``--calls`` calls are made,
``--parallel`` at a time (INVITE -> 407 -> INVITE -> 180/200 -> ACK -> BYE).
With ``--profile`` the run is under cProfile and the engine's entry points
(datagrams in, timers, media ticks) are shown with the functions costing most,
the phones' own work left out; without it the figure is process CPU per call,
phones included (they do a similar amount of SIP work: roughly, half is theirs).

Deterministic and free of SIPp, so a change to the call path can be compared
before/after on a busy machine (CPU time, not throughput)::

    .venv/bin/python bench/bench_call_inproc.py --calls 2000 --parallel 50
    .venv/bin/python bench/bench_call_inproc.py --calls 1000 --parallel 50 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))
sys.path.insert(0, str(ROOT))

from test_call_e2e import Phone  # noqa: E402

from switch.app import _loop_factory, tune_gc  # noqa: E402
from switch.config import CallsConfig, Config, MediaConfig, SipConfig, User  # noqa: E402
from switch.events import EventBus  # noqa: E402
from switch.logs import configure_logging, get_logger  # noqa: E402
from switch.metrics import Metrics  # noqa: E402
from switch.service import SwitchSipService  # noqa: E402
from switch.store.sqlite import SqliteStore  # noqa: E402

REALM = "switch.local"


async def one_call(alice: Phone, bob: Phone, lock: asyncio.Lock) -> None:
    # The phones match responses by method, not Call-ID: one call in flight per pair.
    async with lock:
        outgoing = await alice.call(bob.user.extension)
        await bob.answer()
        await outgoing.established()
        alice.send(outgoing.request("BYE"))
        await bob.answer_bye()
        await alice.response("BYE")


async def run(calls: int, parallel: int, workdir: Path) -> tuple[float, float]:
    callers = [User(extension=str(3000 + i), name=f"Caller {i}", password=f"pw{i}")
               for i in range(parallel)]
    callees = [User(extension=str(5000 + i), name=f"Callee {i}", password=f"pw{i}")
               for i in range(parallel)]
    config = Config(data_dir=workdir, sip=SipConfig(host="127.0.0.1", port=0, realm=REALM),
                    media=MediaConfig(host="127.0.0.1", rtp_port_min=30000,
                                      rtp_port_max=39999),
                    calls=CallsConfig(max_calls=100000), users=(*callers, *callees))
    store = SqliteStore(workdir / "switch.db")
    store.open()
    metrics = Metrics(process_metrics=False)
    svc = SwitchSipService(config, store, EventBus(metrics=metrics), metrics,
                           get_logger("bench"))
    await svc.start()
    tune_gc()  # as `switch run` does once started
    bound = svc.driver.bound
    assert bound is not None
    pairs = []
    for caller, callee in zip(callers, callees, strict=True):
        alice, bob = Phone(caller, bound), Phone(callee, bound)
        for phone in (alice, bob):
            await phone.start()
        await alice.register()
        await bob.register()
        pairs.append((alice, bob, asyncio.Lock()))
    t0, c0 = time.monotonic(), time.process_time()
    done = 0
    while done < calls:
        batch = min(parallel, calls - done)
        await asyncio.gather(*(one_call(*pairs[i]) for i in range(batch)))
        done += batch
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    while svc.calls.list_calls():   # (outside the measured window)
        await asyncio.sleep(0.2)
    for alice, bob, _ in pairs:
        alice.close()
        bob.close()
    await svc.stop()
    store.close()
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=50)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=45)
    args = ap.parse_args()
    configure_logging("json", "info", stream=io.StringIO(), cache=True, background=True)
    factory, loop_name = _loop_factory()  # uvloop when installed, as `switch run`
    with tempfile.TemporaryDirectory(prefix="bench_inproc_") as tmp, \
            asyncio.Runner(loop_factory=factory) as runner:
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            wall, cpu = runner.run(run(args.calls, args.parallel, Path(tmp)))
            prof.disable()
        else:
            wall, cpu = runner.run(run(args.calls, args.parallel, Path(tmp)))
    print(f"{args.calls} calls, {args.parallel} in parallel ({loop_name}): {wall:.2f} s wall, "
          f"{1e3 * cpu / args.calls:.3f} ms CPU per call (engine + both phones), "
          f"{args.calls / wall:.0f} calls/s")
    if args.profile:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("cumulative").print_stats(r"switch/(?!.*test_call_e2e)", args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(r"/switch/", args.top)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
