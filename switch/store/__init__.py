"""Storage: the ``Store`` interface, SQLite implementation, write-behind writer."""

from __future__ import annotations

from switch.store.base import BindingKey, CallRecord, PartyRecord, Store, StoreError
from switch.store.calls import CallRecordWriter
from switch.store.sqlite import SqliteStore
from switch.store.writer import BindingWriter, WriterStats

__all__ = ["BindingKey", "BindingWriter", "CallRecord", "CallRecordWriter", "PartyRecord",
           "SqliteStore", "Store", "StoreError", "WriterStats"]
