#!/usr/bin/env python3
"""Flat view of a py-spy ``--format raw`` (collapsed stacks) profile.

Prints the functions with the most *self* samples and, with ``--inclusive``,
the most *inclusive* samples (a function counted once per stack it is on).
``--grep TEXT`` keeps only stacks passing through a frame containing TEXT.
``--areas`` sums samples per area of the engine (SIP parsing, call control,
SDP, media, logs, ...): each sample goes to the innermost frame's area; with
``--exclude TEXT`` stacks through a frame containing TEXT (the in-process
bench's test phones: ``--exclude test_call_e2e``) are counted apart.
``--children TEXT`` breaks the samples of the (outermost) frame containing TEXT
down by its direct callees (``(self)`` for its own), to walk down a hot path.

    .venv/bin/python bench/flat_profile.py /tmp/calls.txt --top 40
    .venv/bin/python bench/flat_profile.py /tmp/calls.txt --inclusive --grep controller
    .venv/bin/python bench/flat_profile.py /tmp/inproc.txt --areas --exclude test_call_e2e
    .venv/bin/python bench/flat_profile.py /tmp/calls.txt --children CallController._fork
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterator

_LINE = re.compile(r" \(([^:)]*):\d+\)")

# (area, pattern on the frame text): first match wins, innermost frame first.
AREAS: tuple[tuple[str, str], ...] = (
    ("logs (structlog, JSON)", r"structlog|switch/logs\.py|orjson|json/"),
    ("DTMF wiring + detector", r"call/dtmf\.py|switch/dtmf/"),
    ("media ports, relay, tick", r"switch/media/|call/media\.py"),
    ("SDP parse/negotiate/rewrite", r"sip/sdp\.py|call/offers\.py"),
    ("SIP parser", r"sip/parser\.py"),
    ("digest auth", r"sip/auth\.py|hmac\.py|hashlib"),
    ("records, events, metrics", r"switch/events\.py|switch/store/|prometheus_client|"
                                 r"switch/metrics\.py|sqlite3|concurrent/futures"),
    ("INVITE session, dialog, timers", r"sip/invite\.py|sip/dialog\.py|sip/session_timer"),
    ("transactions, endpoint", r"sip/transaction\.py|sip/endpoint\.py|sip/core\.py"),
    ("messages, headers, URIs", r"sip/message\.py|sip/headers\.py|sip/uri\.py"),
    ("driver, transports", r"sip/transport/"),
    ("call control", r"call/controller\.py|call/model\.py|call/routing\.py|"
                     r"switch/service\.py"),
    ("dataclass constructors", r"<string>|dataclasses\.py"),
    ("event loop, syscalls (native)", r"asyncio|uvloop|selectors\.py|socket\.py|^$"),
)


def _frame(raw: str) -> str:
    """``func (path/file.py:123)`` -> ``func (file.py)``: lines merged per function."""
    m = re.match(r"(.*) \((.*?):\d+\)$", raw)
    if not m:
        return raw
    name, path = m.groups()
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("path")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--inclusive", action="store_true")
    ap.add_argument("--grep", default=None)
    ap.add_argument("--areas", action="store_true")
    ap.add_argument("--exclude", default=None)
    ap.add_argument("--children", default=None)
    args = ap.parse_args()
    if args.areas:
        return _areas(args.path, args.exclude)
    if args.children:
        return _children(args.path, args.children, args.top)

    self_n: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for raw, n in _stacks(args.path):
        frames = [_frame(f) for f in raw]
        if args.grep and not any(args.grep in f for f in frames):
            continue
        total += n
        self_n[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"{total} samples")
    table = incl if args.inclusive else self_n
    for name, n in table.most_common(args.top):
        print(f"{100 * n / max(total, 1):6.2f}%  {n:7d}  {name}")
    return 0


def _stacks(path: str) -> Iterator[tuple[list[str], int]]:
    """(raw frames, sample count) of each line of a collapsed-stack file."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack and count.isdigit():
                yield stack.split(";"), int(count)


def _children(path: str, text: str, top: int) -> int:
    """Samples through the outermost frame containing ``text``, by its direct callee."""
    callees: Counter[str] = Counter()
    total = grand = 0
    for raw, n in _stacks(path):
        grand += n
        frames = [_frame(f) for f in raw]
        at = next((i for i, f in enumerate(frames) if text in f), None)
        if at is None:
            continue
        total += n
        callees[frames[at + 1] if at + 1 < len(frames) else "(self)"] += n
    print(f"{total} samples through {text!r} ({100 * total / max(grand, 1):.1f}% of {grand})")
    for name, n in callees.most_common(top):
        print(f"{100 * n / max(total, 1):6.1f}%  {100 * n / max(grand, 1):6.2f}% of all"
              f"  {n:7d}  {name}")
    return 0


def _areas(path: str, exclude: str | None) -> int:
    patterns = [(name, re.compile(p)) for name, p in AREAS]
    counts: Counter[str] = Counter()
    total = excluded = 0
    for frames, n in _stacks(path):
        if exclude and any(exclude in f for f in frames):
            excluded += n
            continue
        total += n
        area = "other"
        for frame in reversed(frames):
            hit = next((name for name, rx in patterns if rx.search(frame)), None)
            if hit is not None:
                area = hit
                break
        counts[area] += n
    note = f" ({excluded} more through {exclude!r}, not counted)" if exclude else ""
    print(f"{total} samples{note}")
    for name, n in counts.most_common():
        print(f"{100 * n / max(total, 1):6.1f}%  {n:7d}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
