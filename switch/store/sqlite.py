"""SQLite implementation of ``Store`` (stdlib ``sqlite3``).

WAL journal with ``synchronous=NORMAL``: a commit is an append to the WAL
without an fsync (durable against a process crash, at most the last
transactions lost on power failure), and readers never block the writer.

The schema is versioned with ``PRAGMA user_version``: ``MIGRATIONS[i]`` takes
the database from version ``i`` to ``i + 1``, each in its own transaction.
A database newer than this code is refused rather than guessed at.

All methods hold one lock, so the connection may be opened on the loop
thread and then used from the write-behind worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from switch.sip.location import Binding, Source
from switch.store.base import BindingKey, CallRecord, PartyRecord, StoreError

__all__ = ["MIGRATIONS", "SqliteStore"]

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: registrations (RFC 3261 §10.3 bindings, RFC 5626 instance/reg-id, RFC 3327 Path).
    (
        """
        CREATE TABLE bindings (
            aor              TEXT    NOT NULL,
            key              TEXT    NOT NULL,
            contact          TEXT    NOT NULL,
            expires          INTEGER NOT NULL,
            expires_at_wall  REAL    NOT NULL,
            updated_at_wall  REAL    NOT NULL,
            call_id          TEXT    NOT NULL,
            cseq             INTEGER NOT NULL,
            source_transport TEXT    NOT NULL,
            source_host      TEXT    NOT NULL,
            source_port      INTEGER NOT NULL,
            q                REAL,
            user_agent       TEXT,
            instance_id      TEXT,
            reg_id           INTEGER,
            path             TEXT    NOT NULL DEFAULT '[]',
            PRIMARY KEY (aor, key)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX bindings_expiry ON bindings (expires_at_wall)",
    ),
    # 2: call detail records (issue 3: start, answer, end, parties, result, cause).
    (
        """
        CREATE TABLE calls (
            call_id      TEXT PRIMARY KEY,
            caller       TEXT NOT NULL,
            dialed       TEXT NOT NULL,
            callee       TEXT,
            started_at   REAL NOT NULL,
            answered_at  REAL,
            ended_at     REAL,
            result       TEXT,
            cause        TEXT,
            parties      TEXT NOT NULL DEFAULT '[]'
        )
        """,
        "CREATE INDEX calls_started ON calls (started_at)",
    ),
)

_COLUMNS: Final = ("aor", "key", "contact", "expires", "expires_at_wall", "updated_at_wall",
                   "call_id", "cseq", "source_transport", "source_host", "source_port", "q",
                   "user_agent", "instance_id", "reg_id", "path")
_UPSERT: Final = (f"INSERT OR REPLACE INTO bindings ({', '.join(_COLUMNS)}) "
                  f"VALUES ({', '.join('?' for _ in _COLUMNS)})")
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM bindings WHERE expires_at_wall > ?"
_CALL_COLUMNS: Final = ("call_id", "caller", "dialed", "callee", "started_at", "answered_at",
                        "ended_at", "result", "cause", "parties")
_CALL_UPSERT: Final = (f"INSERT OR REPLACE INTO calls ({', '.join(_CALL_COLUMNS)}) "
                       f"VALUES ({', '.join('?' for _ in _CALL_COLUMNS)})")
_CALL_SELECT: Final = (f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls "
                       f"ORDER BY started_at DESC LIMIT ?")

Row = tuple[object, ...]


def _to_row(b: Binding) -> Row:
    return (b.aor, b.key, b.contact, b.expires, b.expires_at_wall, b.updated_at_wall,
            b.call_id, b.cseq, b.source.transport, b.source.host, b.source.port, b.q,
            b.user_agent, b.instance_id, b.reg_id, json.dumps(list(b.path)))


def _from_row(row: tuple[Any, ...]) -> Binding:
    (aor, key, contact, expires, expires_at_wall, updated_at_wall, call_id, cseq,
     transport, host, port, q, user_agent, instance_id, reg_id, path) = row
    return Binding(
        aor=aor, key=key, contact=contact, expires=int(expires),
        # expires_at belongs to the engine's monotonic clock; LocationService.restore
        # rebases it from the wall-clock value.
        expires_at=float(expires_at_wall), expires_at_wall=float(expires_at_wall),
        updated_at_wall=float(updated_at_wall), call_id=call_id, cseq=int(cseq),
        source=Source(transport=transport, host=host, port=int(port)),
        q=None if q is None else float(q), user_agent=user_agent, instance_id=instance_id,
        reg_id=None if reg_id is None else int(reg_id),
        path=tuple(str(p) for p in json.loads(path)))


def _call_to_row(r: CallRecord) -> Row:
    parties = [{"leg_id": p.leg_id, "role": p.role,
                "extension_or_number": p.extension_or_number, "status": p.status}
               for p in r.parties]
    return (r.call_id, r.caller, r.dialed, r.callee, r.started_at, r.answered_at, r.ended_at,
            r.result, r.cause, json.dumps(parties))


def _call_from_row(row: tuple[Any, ...]) -> CallRecord:
    (call_id, caller, dialed, callee, started_at, answered_at, ended_at, result, cause,
     parties) = row
    return CallRecord(
        call_id=call_id, caller=caller, dialed=dialed, callee=callee,
        started_at=float(started_at),
        answered_at=None if answered_at is None else float(answered_at),
        ended_at=None if ended_at is None else float(ended_at), result=result, cause=cause,
        parties=tuple(PartyRecord(leg_id=p["leg_id"], role=p["role"],
                                  extension_or_number=p["extension_or_number"],
                                  status=p.get("status"))
                      for p in json.loads(parties)))


class SqliteStore:
    """``Store`` on one SQLite file (``":memory:"`` for tests)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._conn is not None:
                return
            try:
                # isolation_level=None: we issue BEGIN/COMMIT ourselves.
                conn = sqlite3.connect(str(self.path), isolation_level=None,
                                       check_same_thread=False)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=5000")
                self._migrate(conn)
            except sqlite3.Error as exc:
                conn.close()
                raise StoreError(f"cannot use {self.path}: {exc}") from exc
            except StoreError:
                conn.close()
                raise
            self._conn = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._connection().execute("PRAGMA user_version").fetchone()[0])

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StoreError(f"database schema version {version} is newer than this "
                             f"engine's ({len(MIGRATIONS)})")
        for target in range(version + 1, len(MIGRATIONS) + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target - 1]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; an SQLite error rolls it back and
        becomes ``StoreError("cannot <what>: ...")``."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"cannot {what}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is not open")
        return self._conn

    # --- bindings --------------------------------------------------------------

    def load_bindings(self, now_wall: float) -> list[Binding]:
        with self._transaction("load bindings") as conn:
            conn.execute("DELETE FROM bindings WHERE expires_at_wall <= ?", (now_wall,))
            rows = conn.execute(_SELECT, (now_wall,)).fetchall()
        return [_from_row(row) for row in rows]

    def save_bindings(self, batch: Sequence[Binding]) -> None:
        self.write_bindings(batch, ())

    def delete_bindings(self, batch: Sequence[BindingKey]) -> None:
        self.write_bindings((), batch)

    def write_bindings(self, saves: Sequence[Binding], deletes: Sequence[BindingKey]) -> None:
        if not saves and not deletes:
            return
        rows = [_to_row(b) for b in saves]
        with self._transaction("write bindings") as conn:
            if deletes:
                conn.executemany("DELETE FROM bindings WHERE aor = ? AND key = ?", deletes)
            if rows:
                conn.executemany(_UPSERT, rows)

    def count_bindings(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT count(*) FROM bindings")
                       .fetchone()[0])

    # --- call records ------------------------------------------------------------

    def save_call_records(self, records: Sequence[CallRecord]) -> None:
        if not records:
            return
        rows = [_call_to_row(r) for r in records]
        with self._transaction("write call records") as conn:
            conn.executemany(_CALL_UPSERT, rows)

    def load_call_records(self, *, limit: int = 100) -> list[CallRecord]:
        with self._lock:
            rows = self._connection().execute(_CALL_SELECT, (limit,)).fetchall()
        return [_call_from_row(row) for row in rows]
