"""The storage interface (DESIGN.md "Storage and scale").

``Store`` is what the engine persists through: SQLite by default
(``switch.store.sqlite``), PostgreSQL or Redis later behind the same methods.
Methods are *blocking* and must be called from one thread at a time: the
asyncio side never calls them on the event loop during operation, it goes
through ``switch.store.writer.BindingWriter``, which runs them on its own
worker thread.  ``open``/``close`` may be called from the loop thread at
start-up and shutdown (they are quick).

New record kinds (call records, recordings, voicemail index) add methods
here and a migration in the implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from switch.sip.location import Binding

__all__ = ["BindingKey", "CallRecord", "PartyRecord", "Store", "StoreError"]

BindingKey = tuple[str, str]
"""``(aor, key)``: the identity of a binding (``Binding.aor``, ``Binding.key``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PartyRecord:
    """One leg of a call as recorded: who, which leg, how it ended."""

    leg_id: str
    role: str                   # "caller" | "callee"
    extension_or_number: str
    status: int | None = None   # final SIP status of the leg's INVITE, when known


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """A call detail record; saved when the call starts and again when it changes."""

    call_id: str
    caller: str                 # the caller's extension (its user record, not its claim)
    dialed: str                 # the Request-URI user part as dialed
    callee: str | None          # the extension the call was routed to
    started_at: float           # Unix time
    answered_at: float | None = None
    ended_at: float | None = None
    result: str | None = None   # answered | busy | no_answer | failed | cancelled
    cause: str | None = None    # why it ended (caller_bye, ring_timeout, status:486 ...)
    parties: tuple[PartyRecord, ...] = ()


class StoreError(Exception):
    """The store cannot do what was asked (unreadable file, newer schema, closed)."""


class Store(Protocol):
    def open(self) -> None:
        """Create/migrate the schema; idempotent."""

    def close(self) -> None:
        """Release the connection; idempotent."""

    def load_bindings(self, now_wall: float) -> list[Binding]:
        """Bindings not expired at Unix time ``now_wall`` (expired ones are purged)."""

    def save_bindings(self, batch: Sequence[Binding]) -> None:
        """Insert or replace, by (aor, key), in one transaction."""

    def delete_bindings(self, batch: Sequence[BindingKey]) -> None:
        """Delete by (aor, key), in one transaction; unknown keys are ignored."""

    def write_bindings(self, saves: Sequence[Binding], deletes: Sequence[BindingKey]) -> None:
        """Saves and deletes in one transaction (the write-behind flush)."""

    def save_call_records(self, records: Sequence[CallRecord]) -> None:
        """Insert or replace, by call id, in one transaction."""

    def load_call_records(self, *, limit: int = 100) -> list[CallRecord]:
        """The most recently started calls first."""
