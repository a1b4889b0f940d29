#!/usr/bin/env python3
"""Where the engine's time goes under a steady call load: py-spy on ``switch run``.

Starts the engine as ``bench_calls.py`` does (core 0), registers a SIPp callee,
runs SIPp calls at one fixed rate (core 1) and records the engine with
``py-spy record`` for the whole step.  Prints the step's outcome and the
engine CPU per call, and writes the profile (speedscope JSON or a flat
``--format raw`` collapsed-stack file) for reading with ``bench/flat_profile.py``.

Usage::

    .venv/bin/python bench/profile_calls.py --rate 300 --duration 10 --out /tmp/calls.txt
    .venv/bin/python bench/flat_profile.py /tmp/calls.txt | head -40

With ``--cprofile FILE`` the engine runs under cProfile instead (about 2.7x
slower, so use a low rate) and the functions are printed per call: how many
times each runs per call and its own time per call.  The call counts do not
depend on the machine's load, which makes them the measure to compare a change
by when other work shares the cores::

    .venv/bin/python bench/profile_calls.py --rate 150 --duration 10 --cprofile /tmp/engine.pstats

With ``--callgrind`` the engine runs under valgrind's callgrind with
instrumentation switched on only for the calls (after start-up and the
callee's registration) and the figure printed is **instructions per call**:
the same for the same code whatever else the machine is doing (CPU seconds
move by 10-30 % on this shared 2-vCPU machine).  Slow: use ~5 calls/s::

    .venv/bin/python bench/profile_calls.py --rate 5 --duration 20 --callgrind /tmp/cg.out

Needs ``py-spy`` in the venv (``.venv/bin/pip install py-spy``); it is a
development tool, not a test dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_calls import CALLER, SwitchTarget, call_step  # noqa: E402
from interop.sipp import write_callers_csv  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--rate", type=int, default=300, help="calls/s")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of new calls")
    ap.add_argument("--hold-ms", type=int, default=1000)
    ap.add_argument("--rtp", action="store_true", help="calls stream RTP both ways")
    ap.add_argument("--out", default="/tmp/switch_calls_profile.txt", help="collapsed stacks")
    ap.add_argument("--no-profile", action="store_true", help="only measure")
    ap.add_argument("--extra-config", default="", help="TOML appended to the engine config")
    ap.add_argument("--cprofile", default=None, metavar="FILE",
                    help="run the engine under cProfile, dump to FILE, print per-call counts")
    ap.add_argument("--top", type=int, default=50, help="rows of the --cprofile tables")
    ap.add_argument("--callgrind", default=None, metavar="FILE",
                    help="run the engine under callgrind, print instructions per call")
    args = ap.parse_args()
    if args.callgrind:
        args.no_profile = True
        os.environ["SWITCH_ENGINE_CMD"] = (
            f"valgrind --tool=callgrind --instr-atstart=no "
            f"--callgrind-out-file={Path(args.callgrind).resolve()} {sys.executable} -m switch")
    if args.cprofile:
        args.no_profile = True
        os.environ["SWITCH_ENGINE_CMD"] = (f"{sys.executable} -m cProfile -o "
                                           f"{Path(args.cprofile).resolve()} -m switch")

    pyspy = Path(sys.executable).with_name("py-spy")
    if not args.no_profile and not pyspy.exists():
        print(f"py-spy not found at {pyspy}: .venv/bin/pip install py-spy")
        return 2
    work = Path(tempfile.mkdtemp(prefix="profile_calls_"))
    callers = write_callers_csv(work / "callers.csv", [(CALLER.extension, CALLER.password)])
    if args.rtp:
        from interop.tones import TONE_A, TONE_B, sine, write_ulaw_wav

        write_ulaw_wav(work / "runs" / "caller.wav", sine(TONE_A, 10))
        write_ulaw_wav(work / "runs" / "callee.wav", sine(TONE_B, 10))
    target = SwitchTarget(work, 0, 1, rtp_ports=20000)
    if args.extra_config:
        target.engine.extra_config += args.extra_config + "\n"
        target.engine.write_config()
    spy: subprocess.Popen[bytes] | None = None
    try:
        target.start()
        target.register_callee()
        if args.callgrind:
            subprocess.run(["callgrind_control", "-i", "on", str(target.pid)], check=True,
                           stdout=subprocess.DEVNULL)
        if not args.no_profile:
            spy = subprocess.Popen(
                [str(pyspy), "record", "--pid", str(target.pid), "--rate", "250",
                 "--format", "raw", "--output", args.out, "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        step = call_step(target, args.rtp, args.rate, args.duration, args.hold_ms,
                         work / "runs", callers)  # fmt: skip
        print(f"rate {step.rate}/s: calls {step.calls} ok {step.successful} "
              f"failed {step.failed} retrans {step.retrans} "
              f"cpu {step.cpu_ms_per_call:.2f} ms/call ({step.core_pct:.0f}% of a core) "
              f"setup {step.setup_ms:.1f} ms")  # fmt: skip
        problems = target.problems()
        if problems:
            print(f"engine logged {len(problems)} problem line(s); first: {problems[0][:300]}")
    finally:
        if spy is not None:
            spy.send_signal(2)
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
        target.stop()
        events: Counter[str] = Counter()
        for line in (work / "engine.log").read_text().splitlines():
            try:
                events[json.loads(line).get("event", "?")] += 1
            except ValueError:
                events["(not json)"] += 1
        top = ", ".join(f"{k} {v}" for k, v in events.most_common(12))
        print("engine log lines by event:", top)
        shutil.rmtree(work, ignore_errors=True)
    if spy is not None:
        print(f"profile: {args.out}")
    if args.cprofile:
        per_call(args.cprofile, step.calls, args.top)
    if args.callgrind:
        instructions(args.callgrind, step.calls)
    return 0


def instructions(path: str, calls: int) -> None:
    """The ``summary:``/``totals:`` event count of a callgrind output, per call."""
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            total = max(total, int(line.split()[1]))
    print(f"callgrind: {total:,} instructions for {calls} calls: "
          f"{total / max(calls, 1) / 1e6:.3f} M instructions per call")


def per_call(path: str, calls: int, top: int) -> None:
    """The cProfile dump as costs per call: totals, then by own time, then by count."""
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    n = max(calls, 1)

    def name(key: tuple[str, int, str]) -> str:
        return f"{key[0].rsplit('/', 1)[-1]}:{key[2]}"

    own = {k: v for k, v in stats.items() if not name(k).endswith(":stop")}
    print(f"per call ({calls} calls, shutdown left out): "
          f"{sum(v[1] for v in own.values()) / n:.0f} function calls, "
          f"{1e3 * sum(v[2] for v in own.values()) / n:.2f} ms own time under cProfile")
    for title, index in (("own time", 2), ("calls", 1)):
        print(f"--- top {top} by {title} per call")
        for key, value in sorted(own.items(), key=lambda kv: -kv[1][index])[:top]:
            callers = sorted(value[4].items(), key=lambda kv: -kv[1][1])[:3]
            via = ", ".join(f"{name(k)} {c[1] / n:.0f}" for k, c in callers)
            print(f"{value[1] / n:8.1f} calls {1e6 * value[2] / n:8.1f} us  {name(key)}"
                  f"  <- {via}")


if __name__ == "__main__":
    raise SystemExit(main())
