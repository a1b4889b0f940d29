"""Registration-store write throughput: the batched write-behind writer vs. naive commits.

Run: ``.venv/bin/python bench/bench_store.py [--bindings N] [--updates-per-binding K]``

Prints, for the write-behind ``BindingWriter`` over ``SqliteStore`` (WAL,
synchronous=NORMAL) in a temporary directory:

* rows/s actually committed (unique bindings, after coalescing) and
  updates/s accepted from the registrar side,
* the event loop's worst and 99th-percentile lag while the storm is written
  (a probe task asking for 1 ms sleeps),

and, as the reference, one transaction per binding (what a write-through
registrar would do) on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from switch.sip.location import Binding, Source
from switch.store import BindingWriter, SqliteStore

WALL = 1_700_000_000.0


def make_binding(i: int, cseq: int) -> Binding:
    aor = str(10000 + i)
    return Binding(
        aor=aor,
        key=f"instance:<urn:uuid:{i:08d}-0000-1000-8000-000000000000>|1",
        contact=f"sip:{aor}@10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:5060;ob",
        expires=3600,
        expires_at=3600.0,
        expires_at_wall=WALL + 3600,
        updated_at_wall=WALL,
        call_id=f"{i}@phone",
        cseq=cseq,
        source=Source(transport="udp", host=f"203.0.113.{i & 255}", port=5060 + (i & 1023)),
        q=None,
        user_agent="Yealink SIP-T46S 66.86.0.15",
        instance_id=None,
        reg_id=1,
        path=(),
    )


async def lag_probe(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(0.001)
        lags.append(loop.time() - start - 0.001)


async def bench_writer(path: Path, bindings: int, updates: int) -> None:
    store = SqliteStore(path)
    store.open()
    writer = BindingWriter(store)
    await writer.start()
    stop = asyncio.Event()
    lags: list[float] = []
    probe = asyncio.create_task(lag_probe(stop, lags))
    await asyncio.sleep(0.01)
    total = bindings * updates
    start = time.perf_counter()
    enqueue_time = 0.0
    n = 0
    for round_ in range(updates):
        for i in range(bindings):
            t0 = time.perf_counter()
            writer.save(make_binding(i, 2 + round_))
            enqueue_time += time.perf_counter() - t0
            n += 1
            if n % 200 == 0:
                # A storm arrives as datagrams: yield to the loop between bursts.
                await asyncio.sleep(0)
    await writer.flush()
    elapsed = time.perf_counter() - start
    stop.set()
    await probe
    await writer.close(close_store=True)
    stats = writer.stats
    lags.sort()
    p99 = lags[int(len(lags) * 0.99)] if lags else 0.0
    print(f"write-behind: {total} updates of {bindings} bindings in {elapsed:.2f} s")
    print(
        f"  accepted      {total / elapsed:12,.0f} updates/s "
        f"(enqueue {enqueue_time / total * 1e6:.2f} us each on the loop)"
    )
    print(
        f"  committed     {stats.written / elapsed:12,.0f} rows/s "
        f"({stats.written} rows, {stats.batches} transactions, "
        f"mean {stats.written / max(stats.batches, 1):.0f} rows/transaction)"
    )
    print(
        f"  loop lag      max {max(lags) * 1e3:.1f} ms, p99 {p99 * 1e3:.2f} ms, "
        f"median {statistics.median(lags) * 1e3:.2f} ms ({len(lags)} probes)"
    )


def bench_raw_batch(path: Path, bindings: int) -> None:
    store = SqliteStore(path)
    store.open()
    rows = [make_binding(i, 2) for i in range(bindings)]
    start = time.perf_counter()
    for k in range(0, bindings, 2000):
        store.save_bindings(rows[k : k + 2000])
    elapsed = time.perf_counter() - start
    store.close()
    print(f"store alone, 2000-row transactions: {bindings / elapsed:12,.0f} rows/s")


def bench_per_binding_commit(path: Path, bindings: int) -> None:
    store = SqliteStore(path)
    store.open()
    start = time.perf_counter()
    for i in range(bindings):
        store.save_bindings([make_binding(i, 2)])
    elapsed = time.perf_counter() - start
    store.close()
    print(
        f"reference, one transaction per binding: {bindings / elapsed:12,.0f} rows/s "
        f"(each {elapsed / bindings * 1e6:.0f} us, blocking the caller)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bindings", type=int, default=50_000)
    parser.add_argument("--updates-per-binding", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench_writer(Path(tmp) / "writer.db", args.bindings, args.updates_per_binding))
        bench_raw_batch(Path(tmp) / "raw.db", args.bindings)
        bench_per_binding_commit(Path(tmp) / "naive.db", min(args.bindings, 10_000))


if __name__ == "__main__":
    main()
