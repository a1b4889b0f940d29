"""Storage: SqliteStore schema/round trip and the BindingWriter write-behind queue."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from switch.sip.location import Binding, LocationService, Source
from switch.sip.registrar import BindingAdded, BindingExpired, BindingRefreshed, BindingRemoved
from switch.store import BindingKey, BindingWriter, SqliteStore, StoreError
from switch.store.sqlite import MIGRATIONS

WALL = 1_700_000_000.0
SRC = Source(transport="udp", host="192.0.2.10", port=5062)


def binding(aor: str = "1001", key: str = "uri:sip:1001@h", *, expires: int = 600,
            wall: float = WALL, **kw: object) -> Binding:
    fields: dict[str, object] = dict(
        aor=aor, key=key, contact=key.removeprefix("uri:"), expires=expires,
        expires_at=100.0 + expires, expires_at_wall=wall + expires, updated_at_wall=wall,
        call_id="c1@h", cseq=2, source=SRC)
    fields.update(kw)
    return Binding(**fields)  # type: ignore[arg-type]


def comparable(b: Binding) -> Binding:
    """Drop the monotonic-clock fields the store does not keep."""
    return dataclasses.replace(b, expires_at=0.0, seq=0)


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "switch.db")
    s.open()
    yield s  # type: ignore[misc]
    s.close()


# --- SqliteStore ------------------------------------------------------------------

def test_round_trip_all_fields(store: SqliteStore) -> None:
    full = binding(q=0.5, user_agent="Phone/1 \u00e9", instance_id="<urn:uuid:1>", reg_id=2,
                   path=("<sip:edge1;lr>", "<sip:edge2;lr>"),
                   source=Source(transport="tcp", host="2001:db8::1", port=40000))
    bare = binding(key="uri:sip:1001@other")
    store.save_bindings([full, bare])
    loaded = {b.key: b for b in store.load_bindings(WALL)}
    assert comparable(loaded[full.key]) == comparable(full)
    assert comparable(loaded[bare.key]) == comparable(bare)


def test_save_replaces_by_key_and_delete(store: SqliteStore) -> None:
    store.save_bindings([binding(cseq=2)])
    store.save_bindings([binding(cseq=3)])
    [only] = store.load_bindings(WALL)
    assert only.cseq == 3
    store.delete_bindings([("1001", "uri:sip:1001@h"), ("nobody", "x")])
    assert store.load_bindings(WALL) == []


def test_load_skips_and_purges_expired(store: SqliteStore) -> None:
    store.save_bindings([binding(key="uri:a", expires=60), binding(key="uri:b", expires=600)])
    assert [b.key for b in store.load_bindings(WALL + 60)] == ["uri:b"]
    assert store.count_bindings() == 1


def test_restart_keeps_bindings(tmp_path: Path) -> None:
    path = tmp_path / "switch.db"
    first = SqliteStore(path)
    first.open()
    first.save_bindings([binding(key=f"uri:{i}") for i in range(5)])
    first.close()
    second = SqliteStore(path)
    second.open()
    assert sorted(b.key for b in second.load_bindings(WALL)) == [f"uri:{i}" for i in range(5)]
    second.close()


def test_schema_is_versioned_and_wal(store: SqliteStore, tmp_path: Path) -> None:
    assert store.schema_version == len(MIGRATIONS)
    store.open()    # idempotent
    conn = sqlite3.connect(tmp_path / "switch.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(path).open()


def test_unopenable_path_is_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        SqliteStore(tmp_path / "missing-dir" / "x.db").open()


def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "x.db")
    with pytest.raises(StoreError):
        s.save_bindings([binding()])


# --- BindingWriter ------------------------------------------------------------------

async def started(store: SqliteStore, **kw: object) -> BindingWriter:
    writer = BindingWriter(store, **kw)  # type: ignore[arg-type]
    await writer.start()
    return writer


async def test_writer_coalesces_per_key(store: SqliteStore) -> None:
    writer = await started(store, flush_interval=60.0)
    for cseq in range(2, 102):
        writer.save(binding(cseq=cseq))
    writer.save(binding(key="uri:gone"))
    writer.delete("1001", "uri:gone")
    assert writer.pending == 2
    await writer.flush()
    assert writer.stats.enqueued == 102
    assert writer.stats.written == 2
    assert writer.stats.batches == 1
    [only] = store.load_bindings(WALL)
    assert only.cseq == 101
    await writer.close()


async def test_writer_applies_registrar_events(store: SqliteStore) -> None:
    writer = await started(store)
    a, b, c = binding(key="uri:a"), binding(key="uri:b"), binding(key="uri:c")
    writer.apply([BindingAdded(binding=a), BindingAdded(binding=b), BindingAdded(binding=c)])
    writer.apply([BindingRefreshed(binding=dataclasses.replace(a, cseq=9), previous=a),
                  BindingRemoved(binding=b, reason="unregistered"),
                  BindingExpired(binding=c)])
    await writer.flush()
    [only] = store.load_bindings(WALL)
    assert (only.key, only.cseq) == ("uri:a", 9)
    await writer.close()


async def test_close_drains_everything(tmp_path: Path) -> None:
    path = tmp_path / "switch.db"
    s = SqliteStore(path)
    s.open()
    writer = await started(s, flush_interval=60.0)
    for i in range(500):
        writer.save(binding(key=f"uri:{i}"))
    await writer.close(close_store=True)          # no explicit flush
    with pytest.raises(StoreError):
        writer.save(binding())
    reopened = SqliteStore(path)
    reopened.open()
    assert reopened.count_bindings() == 500
    reopened.close()


async def test_full_batch_is_written_without_waiting_for_the_interval(
        store: SqliteStore) -> None:
    writer = await started(store, flush_interval=3600.0, max_batch=10)
    for i in range(10):
        writer.save(binding(key=f"uri:{i}"))
    for _ in range(2000):
        if writer.stats.batches:
            break
        await asyncio.sleep(0.001)
    assert writer.stats.batches == 1
    await writer.close()


async def test_flush_with_nothing_pending_returns() -> None:
    writer = BindingWriter(SqliteStore(":memory:"))
    await writer.start()
    await writer.flush()
    await writer.close(close_store=True)


class FlakyStore(SqliteStore):
    """Fails the first ``failures`` writes."""

    def __init__(self, path: Path | str, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def write_bindings(self, saves: Sequence[Binding], deletes: Sequence[BindingKey]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("disk full (simulated)")
        super().write_bindings(saves, deletes)


async def test_failed_batch_is_retried_and_newer_changes_win(tmp_path: Path) -> None:
    flaky = FlakyStore(tmp_path / "x.db", failures=2)
    writer = BindingWriter(flaky, flush_interval=0.001)
    await writer.start()
    writer.save(binding(key="uri:a", cseq=2))
    writer.save(binding(key="uri:b"))
    await asyncio.sleep(0.01)      # let the first attempt fail
    writer.save(binding(key="uri:a", cseq=3))
    await writer.flush()
    assert writer.stats.failures == 2
    loaded = {b.key: b.cseq for b in flaky.load_bindings(WALL)}
    assert loaded == {"uri:a": 3, "uri:b": 2}
    await writer.close(close_store=True)


async def test_close_gives_up_after_timeout_on_a_dead_store(tmp_path: Path) -> None:
    dead = FlakyStore(tmp_path / "x.db", failures=10**9)
    writer = BindingWriter(dead, flush_interval=0.001)
    await writer.start()
    writer.save(binding())
    with pytest.raises(StoreError, match="1 binding changes lost"):
        await writer.close(close_store=True, timeout=0.2)


async def test_storm_of_10000_updates_is_persisted_and_the_loop_keeps_running(
        tmp_path: Path) -> None:
    path = tmp_path / "storm.db"
    store = SqliteStore(path)
    store.open()
    writer = await started(store)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    location = LocationService()
    for i in range(10_000):
        aor = f"{1000 + i % 2000}"
        b = binding(aor=aor, key=f"uri:sip:{aor}@10.0.{i % 7}.1", cseq=i + 2)
        location.put(b)
        writer.save(b)
        if i % 500 == 0:
            await asyncio.sleep(0)
    await writer.flush()
    stop.set()
    await ticking
    assert ticks > 0
    await writer.close(close_store=True)

    reopened = SqliteStore(path)
    reopened.open()
    loaded = {(b.aor, b.key): b.cseq for b in reopened.load_bindings(WALL)}
    reopened.close()
    assert loaded == {(b.aor, b.key): b.cseq for b in location}
    assert len(loaded) == len(location)


async def test_bindings_survive_restart_through_registrar_restore(tmp_path: Path) -> None:
    from test_registrar import C1, C2, Phone, make_registrar

    path = tmp_path / "switch.db"
    store = SqliteStore(path)
    store.open()
    writer = await started(store)
    reg = make_registrar()
    result = Phone(reg).register([C1, C2], 600, now=0.0)
    writer.apply(result.events)
    await writer.close(close_store=True)

    store2 = SqliteStore(path)
    store2.open()
    writer2 = await started(store2)
    reg2 = make_registrar()
    # Restarted 100 s later; the monotonic clock now reads 7.
    assert reg2.restore(await writer2.load_bindings(WALL + 100), 7.0, WALL + 100) == 2
    assert sorted((b.contact, b.remaining(7.0)) for b in reg2.lookup("1001", 7.0)) == [
        ("sip:1001@192.0.2.10:5062", 500), ("sip:1001@192.0.2.10:5064;transport=tcp", 500)]
    await writer2.close(close_store=True)


async def test_flush_is_exact_across_capped_batches(store: SqliteStore) -> None:
    writer = await started(store, flush_interval=3600.0, max_batch=3)
    for i in range(10):
        writer.save(binding(key=f"uri:{i}"))
    writer.save(binding(key="uri:0", cseq=50))     # supersedes the oldest queued change
    await writer.flush()
    loaded = {b.key: b.cseq for b in store.load_bindings(WALL)}
    assert len(loaded) == 10 and loaded["uri:0"] == 50
    assert writer.stats.batches == 4 and writer.stats.written == 10
    await writer.close()
