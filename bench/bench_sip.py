#!/usr/bin/env python3
"""SIP signalling throughput of the engine, measured with SIPp, against SIPp itself.

What it does (all on 127.0.0.1, free ports, bounded runs):

1. Starts the engine (``python -m switch run``) pinned to core 0 with
   ``taskset -c 0``, with a generated config of N users.
2. (a) OPTIONS: SIPp UAC on core 1 sends OPTIONS at fixed rates, stepping
   up; the highest rate with 0 failed calls and 0 retransmissions wins.
   (b) REGISTER with digest auth (REGISTER -> 401 -> REGISTER+auth -> 200)
   over many distinct users (``-inf users.csv``), stepped the same way.
3. Runs the same steps against SIPp answering itself (a SIPp UAS scenario
   on core 0: ``uas_options.xml``, and ``uas_register.xml`` which verifies
   the digest) -- the generator's and a C responder's ceiling on this box.
4. Prints, per test and target: the highest clean rate, the responder's CPU
   (utime+stime from /proc/PID/stat over the run) per 1000 transactions and
   as % of one core at that rate, and the ratio engine/SIPp.

``--quick`` keeps the whole run under two minutes.  Numbers go to
docs/PERFORMANCE.md by hand; this script never asserts a figure.

Usage::

    .venv/bin/python bench/bench_sip.py --quick
    .venv/bin/python bench/bench_sip.py --transport tcp --duration 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import stepping  # noqa: E402  (bench/, the script's own directory)
from interop.harness import Engine, default_users  # noqa: E402
from interop.sipp import SippServer, run_sipp, write_users_csv  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_BUFFERS = 2000  # calls/s above which SIPp gets 4 MiB socket buffers


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # after the ")" the fields start at index 3 (state); utime=14, stime=15 (1-based)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Step:
    rate: int
    ok: bool
    calls: int
    successful: int
    failed: int
    retrans: int
    wall: float
    cpu: float  # responder CPU seconds over the run

    @property
    def cpu_per_1k(self) -> float:
        return 1000 * self.cpu / max(1, self.successful)

    @property
    def core_pct(self) -> float:
        return 100 * self.cpu / max(1e-9, self.wall)


@dataclass
class Outcome:
    test: str
    target: str
    steps: list[Step]

    @property
    def best(self) -> Step | None:
        clean = [s for s in self.steps if s.ok]
        return max(clean, key=lambda s: s.rate) if clean else None


def step_rates(
    run_one: Callable[[int], Step], rates: list[int], label: str, refine: int = 0
) -> list[Step]:
    def show(step: Step, extra: str) -> None:
        print(
            f"  {label:<28} {step.rate:>6}/s  {'ok' if step.ok else 'FAIL':<4} "
            f"ok={step.successful} failed={step.failed} retrans={step.retrans} "
            f"cpu={step.cpu:.2f}s ({step.core_pct:.0f}% core){extra}",
            flush=True,
        )

    return stepping.step_rates(run_one, rates, refine=refine, show=show, min_gap=50)


def sipp_step(
    workdir: Path,
    scenario: str,
    target: tuple[str, int],
    responder_pid: int,
    rate: int,
    duration: float,
    transport: str,
    users_csv: Path | None,
    sipp_cpu: int | None,
) -> Step:
    calls = max(1, int(rate * duration))
    extra = ["-recv_timeout", "5s", "-max_recv_loops", "10000", "-max_sched_loops", "10000"]
    if rate > BIG_BUFFERS:
        extra += ["-buff_size", "4194304"]
    if transport == "tcp":
        extra += ["-max_socket", "1"]
    before = cpu_seconds(responder_pid)
    t0 = time.monotonic()
    result = run_sipp(
        workdir, scenario, target, transport=transport, calls=calls, rate=rate,
        rate_period_ms=1000, users_csv=users_csv, timeout_s=duration + 30, extra=extra,
        cpu=sipp_cpu, tag=f"{scenario}_{rate}", wall_timeout=duration + 60,
    )  # fmt: skip
    wall = time.monotonic() - t0
    cpu = cpu_seconds(responder_pid) - before
    ok = (
        result.returncode == 0
        and result.failed == 0
        and result.retransmissions == 0
        and result.successful == calls
    )
    return Step(
        rate, ok, calls, result.successful, result.failed, result.retransmissions, wall, cpu
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short steps, < 2 minutes in all")
    ap.add_argument("--duration", type=float, default=None, help="seconds per rate step")
    ap.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    ap.add_argument("--users", type=int, default=None, help="users in the config (REGISTER test)")
    ap.add_argument("--options-rates", default=None, help="comma-separated OPTIONS rates")
    ap.add_argument("--register-rates", default=None, help="comma-separated REGISTER rates")
    ap.add_argument(
        "--refine",
        type=int,
        default=None,
        help="bisection steps after the first failing rate (default 0 quick, 2 full)",
    )
    ap.add_argument("--skip-baseline", action="store_true", help="do not measure SIPp vs SIPp")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    duration = args.duration or (3.0 if args.quick else 10.0)
    refine = args.refine if args.refine is not None else (0 if args.quick else 2)
    users = args.users or (300 if args.quick else 1000)
    if args.options_rates:
        options_rates = [int(r) for r in args.options_rates.split(",")]
    elif args.quick:
        options_rates = [500, 1000, 2000, 4000]
    else:
        options_rates = [500, 1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000]
    if args.register_rates:
        register_rates = [int(r) for r in args.register_rates.split(",")]
    elif args.quick:
        register_rates = [200, 500, 1000, 2000]
    else:
        register_rates = [200, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000]

    have_taskset = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    engine_cpu = 0 if have_taskset else None
    sipp_cpu = 1 if have_taskset else None

    work = Path(tempfile.mkdtemp(prefix="bench_sip_"))
    print(f"bench_sip: transport={args.transport} step={duration:g}s users={users} "
          f"pinning={'engine@0 sipp@1' if have_taskset else 'none'} work={work}")  # fmt: skip
    user_list = default_users(users)
    csv = write_users_csv(work / "users.csv", [(u.extension, u.password) for u in user_list])
    outcomes: list[Outcome] = []
    t_start = time.monotonic()

    engine = Engine(work / "engine", users=user_list, cpu=engine_cpu)
    try:
        engine.start(timeout=60)
        print(f"engine pid {engine.pid} sip {engine.sip_addr}")
        for test, scenario, rates, inf in (
            ("OPTIONS", "options", options_rates, None),
            ("REGISTER+auth", "register", register_rates, csv),
        ):
            steps = step_rates(
                lambda r, s=scenario, i=inf: sipp_step(
                    work / "engine_runs",
                    s,
                    engine.sip_addr,
                    engine.pid,
                    r,
                    duration,
                    args.transport,
                    i,
                    sipp_cpu,
                ),  # fmt: skip
                rates,
                f"{test} -> switch",
                refine,
            )
            outcomes.append(Outcome(test, "switch", steps))
        problems = engine.problems()
        if problems:
            print(f"engine logged {len(problems)} problem line(s), first: {problems[0]}")
    finally:
        try:
            engine.stop(check=False)
        finally:
            if engine.running:
                engine.kill()

    if not args.skip_baseline:
        for test, uas, scenario, rates, inf in (
            ("OPTIONS", "uas_options", "options", options_rates, None),
            ("REGISTER+auth", "uas_register", "register", register_rates, csv),
        ):
            server = SippServer(
                work / f"baseline_{uas}", uas, transport=args.transport, cpu=engine_cpu,
                extra=["-max_recv_loops", "10000", "-buff_size", "4194304"],
            )  # fmt: skip
            try:
                steps = step_rates(
                    lambda r, s=scenario, i=inf, srv=server, u=uas: sipp_step(
                        work / f"baseline_runs_{u}",
                        s,
                        srv.addr,
                        srv.pid,
                        r,
                        duration,
                        args.transport,
                        i,
                        sipp_cpu,
                    ),  # fmt: skip
                    rates,
                    f"{test} -> sipp-uas",
                    refine,
                )
            finally:
                server.stop()
            outcomes.append(Outcome(test, "sipp-uas", steps))

    print()
    print(f"{'test':<15} {'responder':<10} {'max clean calls/s':>18} {'CPU ms/1k calls':>16} "
          f"{'core % @max':>12}")  # fmt: skip
    print("-" * 76)
    by_key = {(o.test, o.target): o for o in outcomes}
    for o in outcomes:
        best = o.best
        top = o.steps[-1].rate if o.steps else 0
        capped = " (cap)" if best is not None and best.rate == top and o.steps[-1].ok else ""
        if best is None:
            print(f"{o.test:<15} {o.target:<10} {'none':>18}")
            continue
        print(f"{o.test:<15} {o.target:<10} {f'{best.rate}/s{capped}':>18} "
              f"{1000 * best.cpu_per_1k:>16.1f} {best.core_pct:>11.0f}%")  # fmt: skip
    print()
    for test in ("OPTIONS", "REGISTER+auth"):
        eng, base = by_key.get((test, "switch")), by_key.get((test, "sipp-uas"))
        if eng and base and eng.best and base.best:
            rate_ratio = eng.best.rate / base.best.rate
            # CPU per transaction at the highest rate both handled cleanly
            clean_base = {b.rate for b in base.steps if b.ok}
            common = max((s.rate for s in eng.steps if s.ok and s.rate in clean_base),
                         default=None)
            both_capped = eng.steps[-1].ok and base.steps[-1].ok
            line = f"{test}: switch/sipp max-rate ratio {rate_ratio:.2f}"
            if both_capped:
                line += " (both still clean at the top step: not a limit)"
            if common is not None:
                e = next(s for s in eng.steps if s.rate == common)
                b = next(s for s in base.steps if s.rate == common)
                line += (f"; CPU per call at {common}/s: switch {1000 * e.cpu_per_1k:.1f} ms/1k, "
                         f"sipp {1000 * b.cpu_per_1k:.1f} ms/1k "
                         f"(x{e.cpu_per_1k / max(1e-9, b.cpu_per_1k):.1f})")  # fmt: skip
            print(line)
    print("\n(cap) = the highest rate tried was still clean; raise the steps to find the limit.")
    print("A REGISTER+auth call is two transactions (401 challenge, then 200).")
    print(f"total {time.monotonic() - t_start:.0f}s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
