"""Write-behind persistence of registrations (the asyncio side of the store).

Theory of operation
-------------------
The registrar produces binding events on the event loop; writing each one
synchronously would stall the loop during a registration storm (hundreds of
phones re-registering after a power cut).  ``BindingWriter`` instead keeps a
dict of pending changes keyed by ``(aor, key)`` -- last write wins, so a
binding refreshed ten times before a flush is written once, and a binding
added then removed is just deleted -- and a single task moves them to the
store in batches: one transaction per batch, on one worker thread (SQLite
connections are single-writer anyway).

A batch (at most ``max_batch`` rows, so no single transaction holds the
worker -- and the GIL it shares with the loop -- for long) is taken when
``flush_interval`` (50 ms) has passed since the loop last found work, at once
when ``max_batch`` changes are pending, or when ``flush()``/``close()`` wait.

Bookkeeping for ``flush()``: every change gets a sequence number; a pending
entry keeps the number of its *oldest* uncommitted change (and its place in
the queue) while its value is replaced by the newest.  Batches are taken
from the front, so after a commit every change numbered below the first
pending entry is on disk, and ``flush()`` returns when every change enqueued
before the call is.  ``close()`` drains everything and stops the worker.

A failed batch is put back (newer changes for the same key win) and retried
with back-off, so a transient error (disk full, locked file) loses nothing;
only a crash of the process loses the last ≤ 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, TypeVar

from switch.logs import get_logger
from switch.sip.location import Binding
from switch.sip.registrar import (
    BindingAdded,
    BindingEvent,
    BindingExpired,
    BindingRefreshed,
    BindingRemoved,
)
from switch.store.base import BindingKey, Store, StoreError

__all__ = ["BindingWriter", "WriterStats"]

_log = get_logger("switch.store")
_RETRY_MIN: Final = 0.05
_RETRY_MAX: Final = 2.0
_T = TypeVar("_T")


@dataclass(slots=True, kw_only=True)
class WriterStats:
    enqueued: int = 0       # changes handed to the writer
    written: int = 0        # rows written (after coalescing)
    batches: int = 0        # committed transactions
    failures: int = 0       # failed batch attempts


class BindingWriter:
    """Coalescing write-behind queue in front of a ``Store`` (one worker thread)."""

    def __init__(self, store: Store, *, flush_interval: float = 0.05,
                 max_batch: int = 1000) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.stats = WriterStats()
        # (aor, key) -> (seq of the oldest uncommitted change, binding to save or None
        # to delete); insertion order = seq order.
        self._pending: dict[BindingKey, tuple[int, Binding | None]] = {}
        self._seq = 0           # changes enqueued so far
        self._done = 0          # every change up to this one is committed
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._has_work = asyncio.Event()
        self._urgent = asyncio.Event()
        self._inflight = 0       # changes in the batch being written
        self._closing = False
        self._closed = False

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Open the store (on the worker thread) and start the flush task."""
        if self._task is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="switch-store")
        await self._run_in_worker(self.store.open)
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name="switch-store-writer")

    async def load_bindings(self, now_wall: float) -> list[Binding]:
        """The persisted, unexpired bindings (for ``Registrar.restore`` at start-up)."""
        return await self._run_in_worker(lambda: self.store.load_bindings(now_wall))

    async def close(self, *, close_store: bool = False, timeout: float | None = None) -> None:
        """Drain every pending change, stop the worker (and close the store if asked).

        With ``timeout``, give up draining after that many seconds (the store
        keeps failing): the changes still pending are logged as lost and
        ``StoreError`` is raised after the worker has been stopped.
        """
        if self._closed:
            return
        self._closing = True
        try:
            try:
                await asyncio.wait_for(self.flush(), timeout)
            except TimeoutError:
                lost = len(self._pending) + self._inflight
                _log.error("store.close_incomplete", lost=lost)
                raise StoreError(f"store did not drain; {lost} binding changes lost") from None
        finally:
            self._closed = True
            task = self._task
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if close_store:
                await self._run_in_worker(self.store.close)
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    # --- enqueueing (never blocks) -----------------------------------------------

    @property
    def pending(self) -> int:
        """Changes not yet committed (queued or in the batch being written)."""
        return len(self._pending) + self._inflight

    def save(self, binding: Binding) -> None:
        self._enqueue((binding.aor, binding.key), binding)

    def delete(self, aor: str, key: str) -> None:
        self._enqueue((aor, key), None)

    def apply(self, events: Iterable[BindingEvent]) -> None:
        """Persist the registrar's events: added/refreshed saved, removed/expired deleted."""
        for event in events:
            if isinstance(event, (BindingAdded, BindingRefreshed)):
                self.save(event.binding)
            elif isinstance(event, (BindingRemoved, BindingExpired)):
                self.delete(event.binding.aor, event.binding.key)

    def _enqueue(self, key: BindingKey, value: Binding | None) -> None:
        if self._closed:
            raise StoreError("binding writer is closed")
        self._seq += 1
        self.stats.enqueued += 1
        pending = self._pending
        queued = pending.get(key)
        # Last write wins, but the entry keeps its place and oldest sequence number.
        pending[key] = (queued[0] if queued is not None else self._seq, value)
        self._has_work.set()
        if len(pending) >= self.max_batch:
            self._urgent.set()

    # --- flushing ----------------------------------------------------------------

    async def flush(self) -> None:
        """Return when every change enqueued before this call is committed."""
        target = self._seq
        if self._done >= target:
            return
        if self._task is None:
            raise StoreError("binding writer is not started")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._urgent.set()
        self._has_work.set()
        await future

    async def _run(self) -> None:
        retry = _RETRY_MIN
        while True:
            await self._has_work.wait()
            if not self._pending:
                self._has_work.clear()
                continue
            if not (self._urgent.is_set() or self._closing or self._waiters):
                # Give a burst time to coalesce (or to fill a batch).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self.flush_interval)
            batch = self._take_batch()
            if len(self._pending) < self.max_batch:
                self._urgent.clear()
            self._inflight = len(batch)
            try:
                await self._run_in_worker(functools.partial(self._write, batch))
            except Exception as exc:   # noqa: BLE001 - a storage failure must not stop the writer
                self.stats.failures += 1
                _log.error("store.write_failed", error=str(exc), error_type=type(exc).__name__,
                           pending=len(batch), retry_in=retry)
                self._put_back(batch)
                self._inflight = 0
                await asyncio.sleep(retry)
                retry = min(retry * 2, _RETRY_MAX)
                continue
            self._inflight = 0
            retry = _RETRY_MIN
            self.stats.batches += 1
            self.stats.written += len(batch)
            if self._pending:
                self._done = next(iter(self._pending.values()))[0] - 1
            else:
                self._done = self._seq
                self._has_work.clear()
            self._wake_waiters()

    def _take_batch(self) -> dict[BindingKey, tuple[int, Binding | None]]:
        pending = self._pending
        if len(pending) <= self.max_batch:
            self._pending = {}
            return pending
        keys = list(itertools.islice(pending, self.max_batch))
        return {key: pending.pop(key) for key in keys}

    def _put_back(self, batch: dict[BindingKey, tuple[int, Binding | None]]) -> None:
        """Requeue a failed batch in front: older numbers, newer values win."""
        newer = self._pending
        merged: dict[BindingKey, tuple[int, Binding | None]] = {}
        for key, (seq, value) in batch.items():
            later = newer.pop(key, None)
            merged[key] = (seq, later[1] if later is not None else value)
        merged.update(newer)
        self._pending = merged
        self._has_work.set()

    def _wake_waiters(self) -> None:
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if target <= self._done:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still

    def _write(self, batch: dict[BindingKey, tuple[int, Binding | None]]) -> None:
        """On the worker thread: one transaction for the whole batch."""
        saves = [b for _, b in batch.values() if b is not None]
        deletes = [k for k, (_, b) in batch.items() if b is None]
        self.store.write_bindings(saves, deletes)

    async def _run_in_worker(self, fn: Callable[[], _T]) -> _T:
        if self._executor is None:
            raise StoreError("binding writer is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
