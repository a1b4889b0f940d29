"""A/B of two versions of the in-band detector in one process, tick by tick.

Both detectors get the benchmark's blocks (bench_dtmf.py's throughput pool,
same channels and offsets), alternating tick by tick (the order swapped
every tick), each ``process`` call timed with ``perf_counter``.  Printed per
channel count: the per-tick minima (each tick's fastest of the rounds,
averaged over the ticks: the figure least disturbed by other load on a
shared machine), and the median of the rounds' means with each round's
ratio.  A and B are directories holding a ``switch`` tree, e.g.:

    git archive 4bab10d switch | tar -x -C /tmp/before
    OPENBLAS_NUM_THREADS=1 taskset -c 0 .venv/bin/python bench/dtmf/ab_ticks.py \\
        /tmp/before . --counts 1,100,1000,10000 --rounds 6
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "dtmf"))
sys.path.insert(0, str(ROOT / "tests" / "dtmf"))

import bench_dtmf  # noqa: E402


def load(tree: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, tree / "switch" / "dtmf" / "inband.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"no switch/dtmf/inband.py under {tree}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path, help="directory holding version A's switch tree")
    parser.add_argument("b", type=Path, help="directory holding version B's switch tree")
    parser.add_argument("--counts", default="1,100,1000,10000")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    modules = {"A": load(args.a, "inband_a"), "B": load(args.b, "inband_b")}
    pool = bench_dtmf.throughput_pool(120)
    tick = 320
    for channels in [int(c) for c in args.counts.split(",")]:
        seconds = 20.0 if channels <= 100 else (4.0 if channels <= 1000 else 2.0)
        n = int(seconds * 8000)
        rng = np.random.default_rng(2)
        offsets = rng.integers(0, pool.size - n, channels)
        index = offsets[:, None] + np.arange(tick)[None, :]
        blocks = [pool[index + p] for p in range(0, n - tick + 1, tick)]
        times = {key: np.zeros((args.rounds, len(blocks))) for key in modules}
        for r in range(args.rounds):
            detectors = {}
            for key, module in modules.items():
                detector = module.InbandDetector(capacity=channels)
                for _ in range(channels):
                    detector.add_channel()
                detectors[key] = detector
            for i, block in enumerate(blocks):
                for key in ("A", "B") if (i + r) % 2 == 0 else ("B", "A"):
                    t0 = time.perf_counter()
                    detectors[key].process(block, (i + 1) * tick / 8000)
                    times[key][r, i] = time.perf_counter() - t0
        a, b = times["A"] * 1e6, times["B"] * 1e6
        min_a, min_b = a.min(axis=0).mean(), b.min(axis=0).mean()
        ratios = b.mean(axis=1) / a.mean(axis=1)
        print(
            f"{channels:6d} channels: per-tick minima A {min_a:9.1f} B {min_b:9.1f} µs/tick,"
            f" B/A {min_b / min_a:.3f}; round means: A {np.median(a.mean(axis=1)):9.1f}"
            f" B {np.median(b.mean(axis=1)):9.1f} µs/tick, B/A median {np.median(ratios):.3f}"
            f" ({' '.join(f'{x:.2f}' for x in ratios)})",
            flush=True,
        )


if __name__ == "__main__":
    main()
