#!/usr/bin/env python3
"""Flat view of a py-spy ``--format raw`` (collapsed stacks) profile.

Prints the functions with the most *self* samples and, with ``--inclusive``,
the most *inclusive* samples (a function counted once per stack it is on).
``--grep TEXT`` keeps only stacks passing through a frame containing TEXT.

    .venv/bin/python bench/flat_profile.py /tmp/calls.txt --top 40
    .venv/bin/python bench/flat_profile.py /tmp/calls.txt --inclusive --grep controller
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_LINE = re.compile(r" \(([^:)]*):\d+\)")


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
    args = ap.parse_args()

    self_n: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    with open(args.path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [_frame(f) for f in stack.split(";")]
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


if __name__ == "__main__":
    raise SystemExit(main())
