"""The location service: AOR -> contact bindings (RFC 3261 §10.3, §16.5).

Theory of operation
-------------------
A ``Binding`` is one registered contact of one address-of-record (here an
extension).  Bindings are keyed within their AOR by ``Binding.key``:

* ``instance:<+sip.instance>|<reg-id>`` when the Contact carries an
  ``+sip.instance`` (RFC 5626 §6 / RFC 5627): a rebooted phone that comes back
  with a new Contact URI (new NAT port) replaces its old binding instead of
  adding a second one;
* ``uri:<canonical contact URI>`` otherwise, the URI comparison of RFC 3261
  §19.1.4 reduced to a canonical string (scheme and host lower-cased,
  parameters lower-cased and sorted).

Two clocks: ``expires_at`` is in the domain of the ``now`` the core is driven
with (a monotonic clock), ``expires_at_wall``/``updated_at_wall`` are Unix
time, for the store and the API.  ``restore`` rebases stored bindings onto the
current ``now`` after a restart.

Expiry uses a min-heap of ``(expires_at, seq, aor, key)`` with lazy deletion:
a refresh pushes a new entry and the stale one is skipped when popped (its
``seq`` no longer matches the live binding).  The heap is rebuilt when dead
entries outnumber live ones, so a registration storm cannot grow it without
bound.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Final

__all__ = ["Binding", "LocationService", "Source"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """Where a request came from: the address to reach a phone behind NAT (RFC 3581)."""

    transport: str      # "udp", "tcp", "tls", "ws", "wss" (lower case)
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") \
            else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    aor: str                        # the extension (To user part)
    key: str                        # identity within the AOR, see module docstring
    contact: str                    # Contact URI as registered
    expires: int                    # the interval granted, seconds
    expires_at: float               # in the ``now`` clock domain
    expires_at_wall: float          # Unix time
    updated_at_wall: float          # Unix time of the last REGISTER that set it
    call_id: str
    cseq: int
    source: Source
    q: float | None = None
    user_agent: str | None = None
    instance_id: str | None = None  # +sip.instance, unquoted (RFC 5626 §4.1)
    reg_id: int | None = None       # reg-id (RFC 5626 §4.2)
    path: tuple[str, ...] = ()      # Path values, in order (RFC 3327 §5.3)
    seq: int = 0                    # internal: heap bookkeeping, not persisted

    def remaining(self, now: float) -> int:
        """Seconds left, rounded up (0 when expired), never above the granted interval."""
        # Rounded first so float noise (now + 3600 - now = 3600.0000001) is not a second.
        return max(0, min(self.expires, math.ceil(round(self.expires_at - now, 6))))

    def rebased(self, now: float, now_wall: float) -> Binding:
        """The same binding with ``expires_at`` recomputed from the wall clock."""
        return replace(self, expires_at=now + (self.expires_at_wall - now_wall))


_COMPACT_FACTOR: Final = 2


class LocationService:
    """In-memory bindings by AOR, with an expiry heap (sans-I/O)."""

    __slots__ = ("_by_aor", "_heap", "_seq", "_count")

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, Binding]] = {}
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def bindings(self, aor: str) -> list[Binding]:
        """Every binding of ``aor``, including any past expiry not yet swept."""
        return list(self._by_aor.get(aor, {}).values())

    def get(self, aor: str, key: str) -> Binding | None:
        return self._by_aor.get(aor, {}).get(key)

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor``, highest q first (RFC 3261 §16.6), then most recent."""
        live = [b for b in self._by_aor.get(aor, {}).values() if b.expires_at > now]
        live.sort(key=lambda b: (-(b.q if b.q is not None else 1.0), -b.updated_at_wall))
        return live

    def all_bindings(self, now: float) -> list[Binding]:
        return [b for aor in self._by_aor.values() for b in aor.values()
                if b.expires_at > now]

    def __iter__(self) -> Iterator[Binding]:
        for aor in self._by_aor.values():
            yield from aor.values()

    def put(self, binding: Binding) -> Binding:
        """Insert or replace by (aor, key); returns the stored binding."""
        self._seq += 1
        stored = replace(binding, seq=self._seq)
        per_aor = self._by_aor.setdefault(binding.aor, {})
        if binding.key not in per_aor:
            self._count += 1
        per_aor[binding.key] = stored
        heapq.heappush(self._heap, (stored.expires_at, stored.seq, stored.aor, stored.key))
        self._maybe_compact()
        return stored

    def remove(self, aor: str, key: str) -> Binding | None:
        per_aor = self._by_aor.get(aor)
        if per_aor is None:
            return None
        removed = per_aor.pop(key, None)
        if removed is not None:
            self._count -= 1
            if not per_aor:
                del self._by_aor[aor]
            self._maybe_compact()
        return removed

    def restore(self, bindings: Iterable[Binding], now: float, now_wall: float) -> list[Binding]:
        """Load stored bindings (after a restart); expired ones are skipped."""
        restored = []
        for binding in bindings:
            rebased = binding.rebased(now, now_wall)
            if rebased.expires_at > now:
                restored.append(self.put(rebased))
        return restored

    def next_expiry(self) -> float | None:
        """When the earliest binding expires (for the driver's timer), or None."""
        while self._heap:
            expires_at, seq, aor, key = self._heap[0]
            live = self._by_aor.get(aor, {}).get(key)
            if live is not None and live.seq == seq:
                return expires_at
            heapq.heappop(self._heap)
        return None

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding whose time is up (``expires_at <= now``)."""
        expired: list[Binding] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, aor, key = heapq.heappop(heap)
            per_aor = self._by_aor.get(aor)
            live = per_aor.get(key) if per_aor is not None else None
            if live is None or live.seq != seq:
                continue            # refreshed or removed since this entry was pushed
            assert per_aor is not None
            del per_aor[key]
            self._count -= 1
            if not per_aor:
                del self._by_aor[aor]
            expired.append(live)
        return expired

    def _maybe_compact(self) -> None:
        if len(self._heap) > _COMPACT_FACTOR * self._count + 64:
            self._heap = [(b.expires_at, b.seq, b.aor, b.key) for b in self]
            heapq.heapify(self._heap)
