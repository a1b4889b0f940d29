"""Write-behind persistence of call records (the asyncio side of the store).

Same shape as ``BindingWriter`` (see its docstring), smaller: call control
hands a ``CallRecord`` to ``save`` whenever a call starts, is answered or
ends; records are coalesced by call id (the latest wins, so a short call is
written once) and a single task moves them to the store in batches, one
transaction per batch, on its own worker thread.  ``save`` never blocks the
loop.  ``save_snapshot`` queues a function that makes the record instead: it
is called once, on the loop, when the batch is taken, so a call that changes
three times between two flushes costs one record, not three.  A batch is
taken 250 ms after the first change (``flush_interval``): a record is in the
database a quarter of a second after its call changed, and a short call's
start, answer and end are usually one row write.  A failed batch
is put back (newer records for the same call win) and retried with back-off;
``close`` drains everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeAlias

from switch.logs import get_logger
from switch.store.base import CallRecord, Store, StoreError

__all__ = ["CallRecordWriter"]

_log = get_logger("switch.store")
_RETRY_MIN: Final = 0.05
_RETRY_MAX: Final = 2.0

Snapshot: TypeAlias = Callable[[], CallRecord]


class CallRecordWriter:
    def __init__(self, store: Store, *, flush_interval: float = 0.25,
                 max_batch: int = 500) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.written = 0
        self.failures = 0
        self._pending: dict[str, CallRecord | Snapshot] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._closed = False

    async def start(self) -> None:
        if self._task is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="switch-cdr")
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name="switch-cdr-writer")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def save(self, record: CallRecord) -> None:
        """Queue ``record`` (replacing any queued one for the same call); never blocks."""
        self._queue(record.call_id, record)

    def save_snapshot(self, call_id: str, snapshot: Snapshot) -> None:
        """Queue ``snapshot()`` (replacing anything queued for ``call_id``): it is called
        when the next batch is taken, and its record is what gets written."""
        self._queue(call_id, snapshot)

    def _queue(self, call_id: str, item: CallRecord | Snapshot) -> None:
        if self._closed:
            raise StoreError("call record writer is closed")
        self._pending[call_id] = item
        if self._wake is not None and self._idle is not None:
            self._idle.clear()
            self._wake.set()

    async def flush(self) -> None:
        """Return when everything queued so far is committed."""
        if self._idle is None or self._wake is None:
            return
        self._wake.set()
        await self._idle.wait()

    async def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            _log.error("store.close_incomplete", lost=len(self._pending), kind="call_records")
        finally:
            self._closed = True
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    async def _run(self) -> None:
        assert self._wake is not None and self._idle is not None
        loop = asyncio.get_running_loop()
        retry = _RETRY_MIN
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                self._idle.set()
                continue
            await asyncio.sleep(self.flush_interval)     # let a burst coalesce
            batch = self._take()
            try:
                await loop.run_in_executor(
                    self._executor, functools.partial(self.store.save_call_records, batch))
            except Exception as exc:   # noqa: BLE001 - a storage failure must not stop the writer
                self.failures += 1
                _log.error("store.write_failed", kind="call_records", error=str(exc),
                           pending=len(batch), retry_in=retry)
                for record in batch:
                    self._pending.setdefault(record.call_id, record)   # newer ones win
                await asyncio.sleep(retry)
                retry = min(retry * 2, _RETRY_MAX)
                self._wake.set()
                continue
            retry = _RETRY_MIN
            self.written += len(batch)
            if self._pending:
                self._wake.set()
            else:
                self._idle.set()

    def _take(self) -> list[CallRecord]:
        """Up to ``max_batch`` queued records, out of the queue; snapshots are taken now."""
        batch: list[CallRecord] = []
        pending = self._pending
        for call_id in list(pending)[:self.max_batch]:
            item = pending.pop(call_id)
            if isinstance(item, CallRecord):
                batch.append(item)
                continue
            try:
                batch.append(item())
            except Exception as exc:   # noqa: BLE001 - one bad snapshot must not stop the rest
                self.failures += 1
                _log.error("store.snapshot_failed", kind="call_records", call_id=call_id,
                           error=str(exc))
        return batch
