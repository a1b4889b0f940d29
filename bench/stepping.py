"""Rate stepping shared by the benchmarks: step up until a rate fails, then bisect.

A step is any object with ``rate`` and ``ok``.  The figure a benchmark reports
is the highest clean rate; bisection narrows the gap between the last clean
rate and the first failing one until it is within ``max(min_gap, 10 %)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar


class RateStep(Protocol):
    @property
    def rate(self) -> int: ...

    @property
    def ok(self) -> bool: ...


StepT = TypeVar("StepT", bound=RateStep)


def step_rates(run_one: Callable[[int], StepT], rates: list[int], *, refine: int,
               show: Callable[[StepT, str], None], min_gap: int) -> list[StepT]:
    steps: list[StepT] = []
    for rate in rates:
        step = run_one(rate)
        steps.append(step)
        show(step, "")
        if not step.ok:
            break
    for _ in range(refine):
        good = [s.rate for s in steps if s.ok]
        bad = [s.rate for s in steps if not s.ok]
        if not good or not bad:
            break
        lo, hi = max(good), min(bad)
        if hi - lo < max(min_gap, lo // 10):
            break
        step = run_one((lo + hi) // 2)
        steps.append(step)
        show(step, " (refine)")
    return steps
