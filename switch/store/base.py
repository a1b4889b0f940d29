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
from typing import Protocol

from switch.sip.location import Binding

__all__ = ["BindingKey", "Store", "StoreError"]

BindingKey = tuple[str, str]
"""``(aor, key)``: the identity of a binding (``Binding.aor``, ``Binding.key``)."""


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
