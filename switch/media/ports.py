"""The RTP port pool: even RTP ports, RTCP on RTP + 1 (RFC 3550 §11).

Sans I/O: the pool only hands out and takes back numbers.  The engine binds
them; a pair it cannot bind (another process has it) goes back to the end of
the queue and the engine tries the next one.  Ports come back at the end of
the queue too, so a just-closed port is reused last (late packets of the
previous call do not reach the next one).  Most closed legs' pairs do not
come back here at once: the engine keeps their sockets bound and hands them
to a later leg after a quarantine (engine.py "Recycled port pairs"); they
return to the pool when the engine closes them.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from switch.media.errors import MediaUnavailable

__all__ = ["PortPool"]


class PortPool:
    """Even ports ``p`` of ``[port_min, port_max]`` with ``p + 1`` also in the range."""

    def __init__(self, port_min: int, port_max: int) -> None:
        if not 0 < port_min <= port_max <= 65535:
            raise ValueError(f"bad RTP port range {port_min}-{port_max}")
        first = port_min + (port_min & 1)
        self.port_min = port_min
        self.port_max = port_max
        self._free: deque[int] = deque(range(first, port_max, 2))
        self._all = frozenset(self._free)
        self.capacity: Final = len(self._all)
        """How many RTP/RTCP pairs the range holds."""

    def __len__(self) -> int:
        return len(self._free)

    def take(self) -> int:
        """The next free RTP port; ``MediaUnavailable`` when none is left."""
        if not self._free:
            raise MediaUnavailable(
                f"no free RTP port pair in {self.port_min}-{self.port_max}")
        return self._free.popleft()

    def give(self, port: int) -> None:
        """Return a port taken from this pool (to the end of the queue)."""
        if port not in self._all:
            raise ValueError(f"port {port} is not from this pool")
        self._free.append(port)
