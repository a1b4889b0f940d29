"""Call records in SQLite: the migration, the store methods, the write-behind writer."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from switch.store.base import CallRecord, PartyRecord
from switch.store.calls import CallRecordWriter
from switch.store.sqlite import MIGRATIONS, SqliteStore


def record(call_id: str = "c1", **kw: object) -> CallRecord:
    fields: dict[str, object] = dict(
        call_id=call_id, caller="1001", dialed="1002", callee="1002", started_at=100.0,
        parties=(PartyRecord(leg_id=f"{call_id}-1", role="caller", extension_or_number="1001"),
                 PartyRecord(leg_id=f"{call_id}-2", role="callee",
                             extension_or_number="1002", status=200)))
    fields.update(kw)
    return CallRecord(**fields)  # type: ignore[arg-type]


def test_migration_adds_calls_table_and_keeps_bindings(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    store.open()
    assert store.schema_version == len(MIGRATIONS) >= 2
    assert store.count_bindings() == 0
    store.save_call_records([record()])
    assert store.load_call_records() == [record()]
    store.close()


def test_records_are_replaced_by_call_id() -> None:
    store = SqliteStore(":memory:")
    store.open()
    store.save_call_records([record(), record("c2", started_at=200.0)])
    store.save_call_records([record(answered_at=101.0, ended_at=160.0, result="answered",
                                    cause="caller_bye")])
    loaded = store.load_call_records()
    assert [r.call_id for r in loaded] == ["c2", "c1"]
    assert loaded[1].result == "answered" and loaded[1].ended_at == 160.0
    assert loaded[1].parties[1].status == 200


async def test_writer_coalesces_and_drains_on_close(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "w.db")
    store.open()
    writer = CallRecordWriter(store, flush_interval=0.01)
    await writer.start()
    writer.save(record())
    writer.save(record(result="busy", ended_at=101.0))
    writer.save(record("c2"))
    await writer.flush()
    assert writer.pending == 0 and writer.written == 2
    assert {r.call_id: r.result for r in store.load_call_records()} == {"c1": "busy", "c2": None}
    writer.save(record("c3"))
    await writer.close()
    assert len(store.load_call_records()) == 3


async def test_writer_retries_a_failed_batch(tmp_path: Path) -> None:
    class Flaky(SqliteStore):
        failures = 1

        def save_call_records(self, records: object) -> None:  # type: ignore[override]
            if self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("database is locked")
            super().save_call_records(records)  # type: ignore[arg-type]

    store = Flaky(tmp_path / "f.db")
    store.open()
    writer = CallRecordWriter(store, flush_interval=0.0)
    await writer.start()
    writer.save(record())
    await asyncio.wait_for(writer.flush(), 5)
    assert writer.failures == 1 and store.load_call_records() == [record()]
    await writer.close()


async def test_snapshots_are_taken_when_the_batch_is(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    writer = CallRecordWriter(store, flush_interval=0.01)
    await writer.start()
    state = {"result": None}
    taken: list[str] = []

    def snapshot() -> CallRecord:
        taken.append("c1")
        return record(result=state["result"])

    def broken() -> CallRecord:
        raise RuntimeError("a bug in one call's record")

    writer.save_snapshot("c1", snapshot)
    writer.save_snapshot("bad", broken)
    writer.save_snapshot("c2", lambda: record("c2"))
    state["result"] = "answered"        # changed after queueing, before the flush
    writer.save_snapshot("c1", snapshot)
    await writer.flush()
    assert taken == ["c1"]              # one record for two saves, made at flush time
    assert writer.failures == 1 and writer.pending == 0
    assert {r.call_id: r.result for r in store.load_call_records()} == {"c1": "answered",
                                                                       "c2": None}
    await writer.close()
