"""Storage: the ``Store`` interface, SQLite implementation, write-behind writer."""

from __future__ import annotations

from switch.store.base import BindingKey, Store, StoreError
from switch.store.sqlite import SqliteStore
from switch.store.writer import BindingWriter, WriterStats

__all__ = ["BindingKey", "BindingWriter", "SqliteStore", "Store", "StoreError", "WriterStats"]
