#!/usr/bin/env python3
"""Call throughput through switch, measured with SIPp, against Sippy B2BUA and SIPp itself.

What it does (all on 127.0.0.1, free ports, bounded runs):

1. **Call rate**, 1 s calls: a SIPp caller (``uac_call.xml``: INVITE -> 407 ->
   INVITE with credentials -> 180 -> 200 -> ACK, 1 s, BYE) and a SIPp callee
   (``uas_call.xml``, registered first from its port) on core 1; the server
   under test on core 0 (``taskset``).  Rates step up; a step is clean when
   every call succeeded (**0 failed calls**) and nothing had to be
   retransmitted (no INVITE/BYE unanswered for 500 ms, no 200 unACKed for
   500 ms: the server kept pace -- without this a server that falls behind
   still "succeeds" with SIPp's long timeouts, just later).  The figure is
   the highest clean rate.  Run for:

   - ``switch`` (``python -m switch run``): signalling-only and with RTP
     (``uac_call_rtp.xml`` / ``uas_call_rtp.xml``: each side streams a
     G.711 tone with ``rtp_stream``, relayed through switch's ports);
   - ``sippy``: Sippy B2BUA (PyPI ``sippy``, its ``b2bua`` entry point,
     ``--static_route`` to the SIPp callee, ``SIPLOG_BEND=none``): no digest
     challenge, no RTP relay (no rtpproxy), so signalling-only;
   - ``sipp``: SIPp calling SIPp directly (the generator's own ceiling),
     signalling-only and with RTP (flowing directly between the two SIPps).

2. **Never a 180 after its 200**: the caller scenario waits 100 ms after its
   ACK for a stray 180 of the answered INVITE; the count over every step is
   printed per server (it is not a failure, so that Sippy's known reordering
   is measured instead of hiding its call rate).

3. **Concurrent calls with RTP** through switch: ``-l N`` calls held for a long
   time, each streaming both ways (50 packets/s each way); over the plateau
   the engine's ``switch_rtp_packets_total{direction}`` in/out are sampled:
   relayed without loss means out == in and in == what the SIPps sent.

Prints the table and the ratios switch/Sippy and switch/SIPp.  ``--quick``
keeps the whole run around three minutes.  Numbers go to docs/PERFORMANCE.md
by hand; this script never asserts a figure.

Usage::

    .venv/bin/python bench/bench_calls.py --quick
    .venv/bin/python bench/bench_calls.py                     # 8 s steps, bisects
    .venv/bin/python bench/bench_calls.py --only sippy,sipp   # baselines only
    .venv/bin/python bench/bench_calls.py --concurrent 500,1000 --hold 30
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import stepping  # noqa: E402  (bench/, the script's own directory)
from interop.harness import (  # noqa: E402
    LOOPBACK,
    Engine,
    OutputPump,
    User,
    engine_command,
    free_port,
    metric_value,
    stop_process,
    wait_until,
)
from interop.sipp import (  # noqa: E402
    SippResult,
    SippServer,
    run_sipp,
    write_callers_csv,
)
from interop.tones import TONE_A, TONE_B, sine, write_ulaw_wav  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_BUFFERS = 2000  # calls/s above which SIPp gets 4 MiB socket buffers
CALLER = User("1001", "secret1001", "Caller", ("+14155550101",))
CALLEE = User("1002", "secret1002", "Callee", ("+14155550102",))


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of *pid* (all its threads), in seconds; 0 without a pid."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    retrans: int
    late_180: int
    wall: float
    cpu: float  # server CPU seconds over the step
    note: str = ""

    setup_ms: float = 0.0  # mean INVITE -> 200 as the caller saw it (SIPp RTD 1)

    @property
    def ok(self) -> bool:
        """Every call succeeded (SIPp waits up to 5 s for each answer)."""
        return self.failed == 0 and self.successful == self.calls

    @property
    def strict(self) -> bool:
        """...and nothing was retransmitted: the server kept within 500 ms everywhere."""
        return self.ok and self.retrans == 0

    @property
    def core_pct(self) -> float:
        return 100 * self.cpu / max(1e-9, self.wall)

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000 * self.cpu / max(1, self.successful)


@dataclass
class Outcome:
    target: str
    mode: str  # "signalling" | "rtp"
    steps: list[Step] = field(default_factory=list)
    note: str = ""

    @property
    def best(self) -> Step | None:
        clean = [s for s in self.steps if s.ok]
        return max(clean, key=lambda s: s.rate) if clean else None

    @property
    def best_strict(self) -> Step | None:
        clean = [s for s in self.steps if s.strict]
        return max(clean, key=lambda s: s.rate) if clean else None

    @property
    def capped(self) -> bool:
        """The highest rate tried was still clean: a lower bound, not the limit."""
        return (
            bool(self.steps)
            and self.best is not None
            and self.best.rate == max(s.rate for s in self.steps)
        )

    @property
    def late_180(self) -> int:
        return sum(s.late_180 for s in self.steps)


# --------------------------------------------------------------------------
# servers under test
# --------------------------------------------------------------------------


class Target:
    """A server between the SIPp caller and the SIPp callee (or none)."""

    name = ""
    challenges = False  # sends 407 to the caller

    def __init__(self, work: Path, cpu: int | None, sipp_cpu: int | None) -> None:
        self.work = work
        self.cpu = cpu
        self.sipp_cpu = sipp_cpu
        self.callee_port = free_port()

    @property
    def addr(self) -> tuple[str, int]:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return None

    def start(self) -> None: ...

    def register_callee(self) -> None: ...

    def stop(self) -> None: ...

    def problems(self) -> list[str]:
        return []


class SwitchTarget(Target):
    name = "switch"
    challenges = True

    def __init__(self, work: Path, cpu: int | None, sipp_cpu: int | None, rtp_ports: int) -> None:
        super().__init__(work, cpu, sipp_cpu)
        self.engine = Engine(work / "engine", users=[CALLER, CALLEE], cpu=cpu,
                             rtp_ports=rtp_ports)  # fmt: skip
        # Room for the load: the default max_calls (1000) would refuse calls.
        extra = "[calls]\nmax_calls = 100000\nring_timeout = 60\n"
        self.engine.extra_config = extra
        self.engine.write_config()
        if not _config_ok(self.engine.config_path):
            self.engine.extra_config = ""
            self.engine.write_config()
            print("  (engine config does not know [calls]; running with its defaults)")

    @property
    def addr(self) -> tuple[str, int]:
        return self.engine.sip_addr

    @property
    def pid(self) -> int | None:
        return self.engine.pid if self.engine.running else None

    def start(self) -> None:
        self.engine.start(timeout=60)

    def register_callee(self) -> None:
        users = write_callers_csv(self.work / "callee_reg.csv", [(CALLEE.extension,
                                                                   CALLEE.password)])  # fmt: skip
        reg = run_sipp(self.work, "register", self.addr, users_csv=users,
                       local_port=self.callee_port, tag="callee_reg")  # fmt: skip
        if reg.returncode != 0:
            raise RuntimeError("callee registration failed\n" + reg.describe())

    def stop(self) -> None:
        try:
            self.engine.stop(check=False)
        finally:
            if self.engine.running:
                self.engine.kill()
            # the engine's log, for --keep
            (self.work / "engine.log").write_text("\n".join(self.engine.all_lines()) + "\n")

    def problems(self) -> list[str]:
        return self.engine.problems()

    def rtp_packets(self) -> tuple[float, float]:
        text = self.engine.metrics()
        return (
            metric_value(text, "switch_rtp_packets_total", {"direction": "in"}) or 0.0,
            metric_value(text, "switch_rtp_packets_total", {"direction": "out"}) or 0.0,
        )


def _config_ok(path: Path) -> bool:
    proc = subprocess.run(
        [*engine_command(), "check-config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    return proc.returncode == 0


class SippyTarget(Target):
    name = "sippy"

    def __init__(self, work: Path, cpu: int | None, sipp_cpu: int | None) -> None:
        super().__init__(work, cpu, sipp_cpu)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> list[str] | None:
        exe = Path(sys.executable).with_name("b2bua")
        if exe.exists():
            return [str(exe)]
        if shutil.which("b2bua"):
            return [str(shutil.which("b2bua"))]
        return None

    @property
    def addr(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        cmd = self.binary()
        if cmd is None:
            raise RuntimeError("Sippy B2BUA not installed (pip install sippy)")
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        cmd += [
            f"--sip_address={LOOPBACK}", f"--sip_port={self.port}", "--foreground=on",
            f"--static_route={LOOPBACK}:{self.callee_port}", f"--accept_ips={LOOPBACK}",
            "--auth_enable=off", "--acct_enable=off", "--logfile=/dev/null",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=self.work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, SIPLOG_BEND="none"),
        )  # fmt: skip
        self.out = OutputPump(self.proc.stdout, "sippy")
        # Ready when it answers OPTIONS... it proxies them; wait for the socket instead.
        wait_until(lambda: _udp_bound(self.port), 20, "Sippy B2BUA to bind its SIP port",
                   detail=lambda: self.out.text()[-2000:])  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5)


def _udp_bound(port: int) -> bool:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((LOOPBACK, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


class DirectTarget(Target):
    name = "sipp"

    @property
    def addr(self) -> tuple[str, int]:
        return LOOPBACK, self.callee_port


# --------------------------------------------------------------------------
# one step
# --------------------------------------------------------------------------


def call_step(
    target: Target,
    rtp: bool,
    rate: int,
    seconds: float,
    hold_ms: int,
    runs: Path,
    callers_csv: Path,
) -> Step:
    calls = max(1, int(rate * seconds))
    big = ["-buff_size", "4194304"] if rate > BIG_BUFFERS else []
    uas_extra = ["-max_recv_loops", "10000", "-max_sched_loops", "10000", *big]
    uac_extra = ["-recv_timeout", "5s", "-max_recv_loops", "10000",
                 "-max_sched_loops", "10000", *big]  # fmt: skip
    tag = f"{target.name}_{'rtp' if rtp else 'sig'}_{rate}"
    server = SippServer(
        runs, "uas_call_rtp" if rtp else "uas_call", port=target.callee_port,
        tag=f"{tag}_uas", cpu=target.sipp_cpu, extra=uas_extra,
    )  # fmt: skip
    before = cpu_seconds(target.pid)
    t0 = time.monotonic()
    try:
        result: SippResult = run_sipp(
            runs, "uac_call_rtp" if rtp else "uac_call", target.addr, calls=calls, rate=rate,
            rate_period_ms=1000, max_concurrent=max(200, rate * 6), users_csv=callers_csv,
            service=CALLEE.extension, auth_uri=f"{CALLEE.extension}@{LOOPBACK}:{target.addr[1]}",
            duration_ms=hold_ms, timeout_s=seconds + hold_ms / 1000 + 40, extra=uac_extra,
            cpu=target.sipp_cpu, tag=f"{tag}_uac", wall_timeout=seconds + hold_ms / 1000 + 90,
        )  # fmt: skip
    finally:
        wall = time.monotonic() - t0
        cpu = cpu_seconds(target.pid) - before
        uas = server.stop()
    note = ""
    if result.returncode not in (0, 1):
        note = f"sipp exit {result.returncode}"
    # Overload shows as retransmissions: the caller's INVITE/BYE not answered within
    # 500 ms, or the callee's 200 not ACKed within 500 ms.  (The caller's ACK
    # re-sent for a retransmitted 200 is a consequence, not counted twice.)
    retrans = sum(v for k, v in result.counts.items()
                  if k.endswith(("_INVITE_Retrans", "_BYE_Retrans")))  # fmt: skip
    retrans += sum(v for k, v in uas.counts.items() if k.endswith("_200_Retrans"))
    return Step(rate, calls, result.successful, result.failed, retrans,
                result.late_180s, wall, cpu, note, _rtd_ms(result))  # fmt: skip


def _rtd_ms(result: SippResult) -> float:
    """SIPp's cumulative mean response time 1 (INVITE sent -> 200 received), in ms."""
    value = result.stats.get("ResponseTime1(C)", "")
    parts = value.split(":")
    if len(parts) != 4:
        return 0.0
    h, m, sec, us = (int(p or 0) for p in parts)
    return (h * 3600 + m * 60 + sec) * 1000 + us / 1000


def step_rates(run_one: Callable[[int], Step], rates: list[int], label: str,
               refine: int) -> list[Step]:  # fmt: skip
    def show(step: Step, extra: str) -> None:
        print(
            f"  {label:<22} {step.rate:>6}/s  {'ok' if step.ok else 'FAIL':<4} "
            f"calls={step.calls} ok={step.successful} failed={step.failed} "
            f"retrans={step.retrans} late180={step.late_180} setup={step.setup_ms:.0f}ms "
            f"wall={step.wall:.1f}s "
            f"server-cpu={step.cpu:.1f}s "
            f"({step.core_pct:.0f}% core) {step.note}{extra}",
            flush=True,
        )

    return stepping.step_rates(run_one, rates, refine=refine, show=show, min_gap=20)


# --------------------------------------------------------------------------
# concurrency with RTP
# --------------------------------------------------------------------------


@dataclass
class ConcurrencyResult:
    calls: int
    successful: int
    failed: int
    plateau_s: float
    pkts_in: float
    pkts_out: float
    expected: float  # packets the SIPps sent during the plateau
    cpu_pct: float

    @property
    def relay_loss(self) -> float:
        return 1 - self.pkts_out / self.pkts_in if self.pkts_in else 1.0

    @property
    def ingress_loss(self) -> float:
        return 1 - self.pkts_in / self.expected if self.expected else 1.0


def concurrency_run(target: SwitchTarget, n: int, hold_s: float, ramp_rate: int,
                    runs: Path, callers_csv: Path) -> ConcurrencyResult:  # fmt: skip
    """N calls up at once, each streaming both ways; sample the engine's RTP counters."""
    tag = f"conc_{n}"
    uas_extra = ["-max_recv_loops", "10000", "-buff_size", "4194304"]
    server = SippServer(runs, "uas_call_rtp", port=target.callee_port, tag=f"{tag}_uas",
                        cpu=target.sipp_cpu, extra=uas_extra)  # fmt: skip
    ramp = n / ramp_rate
    hold_ms = int((ramp + hold_s) * 1000)
    args = dict(
        calls=n, rate=ramp_rate, rate_period_ms=1000, max_concurrent=n, users_csv=callers_csv,
        service=CALLEE.extension, auth_uri=f"{CALLEE.extension}@{LOOPBACK}:{target.addr[1]}",
        duration_ms=hold_ms, timeout_s=hold_ms / 1000 + 60, cpu=target.sipp_cpu,
        extra=["-recv_timeout", "10s", "-buff_size", "4194304"], tag=f"{tag}_uac",
        wall_timeout=hold_ms / 1000 + 120,
    )  # fmt: skip
    box: dict[str, SippResult] = {}

    import threading

    th = threading.Thread(
        target=lambda: box.setdefault("r", run_sipp(runs, "uac_call_rtp", target.addr, **args)),  # type: ignore[arg-type]
        daemon=True,
    )
    th.start()
    try:
        # plateau: from the end of the ramp (+ 2 s for the last answers) to 2 s before the BYEs
        time.sleep(ramp + 2)
        t1, (in1, out1), c1 = time.monotonic(), target.rtp_packets(), cpu_seconds(target.pid)
        plateau = max(1.0, hold_s - 4)
        time.sleep(plateau)
        t2, (in2, out2), c2 = time.monotonic(), target.rtp_packets(), cpu_seconds(target.pid)
        th.join(hold_ms / 1000 + 150)
    finally:
        server.stop()
    result = box.get("r")
    span = t2 - t1
    return ConcurrencyResult(
        n, result.successful if result else 0, result.failed if result else n, span,
        in2 - in1, out2 - out1, n * 2 * 50 * span, 100 * (c2 - c1) / span,
    )  # fmt: skip


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="coarse steps, ~3 minutes in all")
    ap.add_argument("--duration", type=float, default=None, help="seconds of new calls per step")
    ap.add_argument("--hold-ms", type=int, default=1000, help="call length (default 1 s)")
    ap.add_argument("--rates", default=None, help="signalling rates, comma-separated")
    ap.add_argument("--rtp-rates", default=None, help="rates with RTP, comma-separated")
    ap.add_argument("--refine", type=int, default=None, help="bisection steps (1 quick, 2 full)")
    ap.add_argument("--only", default="switch,sippy,sipp",
                    help="targets: switch, sippy, sipp (comma-separated)")  # fmt: skip
    ap.add_argument("--no-rtp", action="store_true", help="skip the RTP rate runs")
    ap.add_argument(
        "--concurrent",
        default=None,
        help="concurrent RTP call counts through switch (default 500; 0 = skip)",
    )
    ap.add_argument("--hold", type=float, default=None, help="plateau seconds (concurrency)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    seconds = args.duration or (3.0 if args.quick else 8.0)
    refine = args.refine if args.refine is not None else (1 if args.quick else 2)
    if args.rates:
        rates = [int(r) for r in args.rates.split(",")]
    elif args.quick:
        rates = [50, 100, 200, 400, 800, 1600]
    else:
        rates = [50, 100, 200, 300, 500, 700, 1000, 1500, 2000, 2500, 3000, 4000]
    if args.rtp_rates:
        rtp_rates = [int(r) for r in args.rtp_rates.split(",")]
    elif args.quick:
        rtp_rates = [50, 100, 200, 400]
    else:
        rtp_rates = [50, 100, 200, 300, 400, 500, 700, 1000]
    concurrent = (
        [int(c) for c in args.concurrent.split(",") if int(c) > 0]
        if args.concurrent is not None
        else [500]
    )
    hold = args.hold or (12.0 if args.quick else 30.0)
    only = {t.strip() for t in args.only.split(",") if t.strip()}

    have_taskset = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    server_cpu = 0 if have_taskset else None
    sipp_cpu = 1 if have_taskset else None
    work = Path(tempfile.mkdtemp(prefix="bench_calls_"))
    print(f"bench_calls: step={seconds:g}s of new calls, calls of {args.hold_ms} ms, "
          f"pinning={'server@0 sipp@1' if have_taskset else 'none'}, work={work}")  # fmt: skip
    callers_csv = write_callers_csv(work / "callers.csv", [(CALLER.extension, CALLER.password)])
    write_ulaw_wav(work / "runs" / "caller.wav", sine(TONE_A, 10))
    write_ulaw_wav(work / "runs" / "callee.wav", sine(TONE_B, 10))
    t_start = time.monotonic()
    outcomes: list[Outcome] = []
    conc: list[ConcurrencyResult] = []

    def measure(target: Target, modes: list[tuple[str, bool, list[int]]]) -> None:
        try:
            target.start()
            target.register_callee()
            for mode, rtp, rlist in modes:
                steps = step_rates(
                    lambda r, t=target, x=rtp: call_step(t, x, r, seconds, args.hold_ms,
                                                         work / "runs", callers_csv),  # fmt: skip
                    rlist, f"{target.name} {mode}", refine,
                )  # fmt: skip
                outcomes.append(Outcome(target.name, mode, steps))
            if isinstance(target, SwitchTarget) and not args.no_rtp:
                for n in concurrent:
                    r = concurrency_run(target, n, hold, min(200, max(50, n // 5)),
                                        work / "runs", callers_csv)  # fmt: skip
                    conc.append(r)
                    print(f"  switch concurrent RTP  {n:>6} calls: ok={r.successful} "
                          f"failed={r.failed} in={r.pkts_in:.0f} out={r.pkts_out:.0f} "
                          f"expected~{r.expected:.0f} over {r.plateau_s:.1f}s "
                          f"relay-loss={100 * r.relay_loss:.2f}% "
                          f"ingress-loss={100 * r.ingress_loss:.2f}% "
                          f"engine-cpu={r.cpu_pct:.0f}%", flush=True)  # fmt: skip
            problems = target.problems()
            if problems:
                print(f"  {target.name} logged {len(problems)} problem line(s); "
                      f"first: {problems[0][:300]}")  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - one target failing must not hide the others
            print(f"  {target.name}: ERROR {exc}"[:3000], flush=True)
        finally:
            target.stop()

    rtp_modes = [] if args.no_rtp else [("rtp", True, rtp_rates)]
    if "sipp" in only:
        measure(DirectTarget(work, server_cpu, sipp_cpu),
                [("signalling", False, rates), *rtp_modes])  # fmt: skip
    if "sippy" in only:
        measure(SippyTarget(work, server_cpu, sipp_cpu), [("signalling", False, rates)])
    if "switch" in only:
        # Every call anchors media, signalling-only too: two legs, each an RTP/RTCP
        # pair held for the call and then quarantined (port_quarantine, 1 s) before
        # reuse.  Too small a range fails calls with 503 (media_unavailable) long
        # before the engine runs out of CPU.
        hold_s = args.hold_ms / 1000
        in_use = max([*rates, *rtp_rates]) * 2 * (hold_s + 1.5)
        ports = max(4000, 8 * max(concurrent or [0]), 8 * max(rtp_rates), int(2 * in_use))
        measure(SwitchTarget(work, server_cpu, sipp_cpu, rtp_ports=min(ports, 20000)),
                [("signalling", False, rates), *rtp_modes])  # fmt: skip

    print()
    print(f"{'server':<7} {'mode':<11} {'max calls/s, 0 failed':>22} {'+ 0 retrans':>12} "
          f"{'CPU ms/call':>12} {'core %':>7} {'setup ms':>9} {'180 after 200':>14}")  # fmt: skip
    print("-" * 100)
    for o in outcomes:
        best, strict = o.best, o.best_strict
        figure = "none" if best is None else f"{best.rate}/s" + (" (cap)" if o.capped else "")
        sfig = "none" if strict is None else f"{strict.rate}/s"
        server = o.target != "sipp" and best is not None
        cpu = f"{best.cpu_ms_per_call:.2f}" if server and best else "-"
        pct = f"{best.core_pct:.0f}%" if server and best else "-"
        setup = f"{best.setup_ms:.1f}" if best else "-"
        print(f"{o.target:<7} {o.mode:<11} {figure:>22} {sfig:>12} {cpu:>12} {pct:>7} "
              f"{setup:>9} {o.late_180:>14}")  # fmt: skip
    print()
    by = {(o.target, o.mode): o for o in outcomes}
    for mode in ("signalling", "rtp"):
        sw = by.get(("switch", mode))
        for ref in ("sippy", "sipp"):
            other = by.get((ref, mode))
            if sw and other and sw.best and other.best:
                caps = [n for n, o in (("switch", sw), (ref, other)) if o.capped]
                note = f" ({', '.join(caps)} still clean at the top step)" if caps else ""
                line = (f"{mode}: switch / {ref} = {sw.best.rate}/{other.best.rate} = "
                        f"{sw.best.rate / other.best.rate:.2f}{note}")  # fmt: skip
                if sw.best_strict and other.best_strict:
                    line += (f"; without retransmissions {sw.best_strict.rate}/"
                             f"{other.best_strict.rate} = "
                             f"{sw.best_strict.rate / other.best_strict.rate:.2f}")  # fmt: skip
                print(line)
    for r in conc:
        verdict = "relayed without loss" if r.relay_loss <= 0 and r.failed == 0 else "LOSS"
        print(f"concurrent RTP calls through switch: {r.calls} -> {verdict} "
              f"(in {r.pkts_in:.0f}, out {r.pkts_out:.0f}, SIPps sent ~{r.expected:.0f} "
              f"in {r.plateau_s:.1f}s; engine {r.cpu_pct:.0f}% of a core)")  # fmt: skip
    print("\n(cap) = the highest rate tried was still clean: a lower bound.")
    print("CPU ms/call and core % are the server's (core 0) over the step, tail included.")
    print("sippy: no digest challenge and no RTP relay (no rtpproxy): signalling only.")
    print("sipp: SIPp calling SIPp directly, the generator's ceiling on this box.")
    print(f"total {time.monotonic() - t_start:.0f}s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
