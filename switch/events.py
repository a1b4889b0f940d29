"""In-process event bus behind ``GET /api/v1/events`` (CONTRACT.md "HTTP").

``EventBus.publish(type, **fields)`` stamps the event with ``type`` and
``time`` (ISO 8601 UTC) and offers it to every subscriber's bounded
``asyncio.Queue`` with ``put_nowait``.  Publishing never awaits and never
blocks: the engine must not slow down because a dashboard is slow.  A
subscriber whose queue is full is dropped on the spot (logged, counted);
its iterator then ends and ``Subscription.dropped`` tells the consumer why.

Call it from the event-loop thread only (asyncio queues are not thread-safe).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Self

from switch.logs import get_logger

if TYPE_CHECKING:
    from switch.metrics import Metrics

__all__ = [
    "CALL_ANSWERED",
    "CALL_CREATED",
    "CALL_ENDED",
    "DTMF_DIGIT",
    "EVENT_TYPES",
    "FEATURE_INVOKED",
    "RECORDING_STARTED",
    "RECORDING_STOPPED",
    "REGISTRATION_ADDED",
    "REGISTRATION_REMOVED",
    "TRANSFER_STATE",
    "VOICEMAIL_DEPOSITED",
    "Event",
    "EventBus",
    "Subscription",
]

REGISTRATION_ADDED: Final = "registration.added"
REGISTRATION_REMOVED: Final = "registration.removed"
CALL_CREATED: Final = "call.created"
CALL_ANSWERED: Final = "call.answered"
CALL_ENDED: Final = "call.ended"
DTMF_DIGIT: Final = "dtmf.digit"  # digit, method (inband|rfc4733|info), leg_id, extension
FEATURE_INVOKED: Final = "feature.invoked"  # leg_id, extension, feature, number, digits
TRANSFER_STATE: Final = "transfer.state"  # transfer_id, kind, state
RECORDING_STARTED: Final = "recording.started"
RECORDING_STOPPED: Final = "recording.stopped"  # path
VOICEMAIL_DEPOSITED: Final = "voicemail.deposited"

# A type outside this set is a programming error (a typo would otherwise
# silently never reach any dashboard).  Add new types here.
EVENT_TYPES: Final = frozenset({
    REGISTRATION_ADDED, REGISTRATION_REMOVED, CALL_CREATED, CALL_ANSWERED, CALL_ENDED,
    DTMF_DIGIT, FEATURE_INVOKED, TRANSFER_STATE, RECORDING_STARTED, RECORDING_STOPPED,
    VOICEMAIL_DEPOSITED,
})
_RESERVED: Final = frozenset({"type", "time"})

_log = get_logger("switch.events")


_iso_second = -1
_iso_prefix = ""


def _utc_now_iso() -> str:
    """Now as ``2024-05-01T12:00:00.123Z`` (what ``datetime.now(UTC).isoformat(
    timespec="milliseconds")`` writes, with ``Z``), the date-time part formatted
    once per second: one clock read per event instead of four calls."""
    global _iso_second, _iso_prefix
    now = time.time_ns()  # integer: the milliseconds are floored as datetime floors them
    second = now // 1_000_000_000
    if second != _iso_second:
        _iso_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _iso_second = second
    return f"{_iso_prefix}.{now // 1_000_000 % 1000:03d}Z"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    type: str
    time: str
    fields: Mapping[str, object] = field(default_factory=dict)

    @property
    def call_id(self) -> str | None:
        value = self.fields.get("call_id")
        return value if isinstance(value, str) else None

    def as_dict(self) -> dict[str, object]:
        return {"type": self.type, "time": self.time, **self.fields}

    def to_json(self) -> str:
        # default=str: enums, paths and the like become their text form.
        return json.dumps(self.as_dict(), default=str, separators=(",", ":"))


class Subscription:
    """One consumer's bounded queue; iterate with ``async for``."""

    def __init__(self, bus: EventBus, maxsize: int, types: frozenset[str] | None,
                 name: str) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.types = types
        self.name = name
        self.dropped = False
        self.closed = False

    def _offer(self, event: Event) -> bool:
        """False when the queue is full (the bus then drops this subscriber)."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    def _end(self, dropped: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.dropped = dropped
        # Make room for the end marker: queued events are worthless to a
        # consumer that is being disconnected.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def get(self) -> Event | None:
        """The next event, or None once the subscription has ended."""
        if self.closed and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        self._bus._remove(self)
        self._end(dropped=False)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out of engine events to bounded subscriber queues."""

    def __init__(
        self,
        *,
        queue_size: int = 1000,
        metrics: Metrics | None = None,
        clock: Callable[[], str] = _utc_now_iso,
    ) -> None:
        self._queue_size = queue_size
        self._metrics = metrics
        self._clock = clock
        self._subscribers: list[Subscription] = []

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, *, types: Collection[str] | None = None, maxsize: int | None = None,
                  name: str = "") -> Subscription:
        """A new subscription; ``types`` limits it to those event types."""
        sub = Subscription(self, maxsize or self._queue_size,
                           frozenset(types) if types is not None else None, name)
        self._subscribers.append(sub)
        self._gauge()
        return sub

    def wants(self, type: str) -> bool:
        """Whether any subscriber takes ``type`` events: a publisher whose fields cost
        something to build (a call's parties) skips ``publish`` when none does."""
        return any(sub.types is None or type in sub.types for sub in self._subscribers)

    def publish(self, type: str, **fields: object) -> Event:
        """Stamp and fan out one event; returns it.  Never blocks."""
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r} (add it to switch.events.EVENT_TYPES)")
        if "type" in fields or "time" in fields:  # _RESERVED
            raise ValueError(f"event field(s) {sorted(_RESERVED.intersection(fields))} "
                             "are reserved")
        event = Event(type=type, time=self._clock(), fields=fields)
        if self._subscribers:
            slow: list[Subscription] = []
            for sub in self._subscribers:
                if sub.types is not None and type not in sub.types:
                    continue
                if not sub._offer(event):
                    slow.append(sub)
            for sub in slow:
                self._drop(sub)
        return event

    def close(self) -> None:
        """End every subscription (shutdown)."""
        for sub in list(self._subscribers):
            sub.close()

    def _drop(self, sub: Subscription) -> None:
        self._remove(sub)
        sub._end(dropped=True)
        if self._metrics is not None:
            self._metrics.event_subscribers_dropped.inc()
        _log.warning("events.subscriber_dropped", subscriber=sub.name,
                     reason="queue full", queue_size=self._queue_size)

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
            self._gauge()

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.event_subscribers.set(len(self._subscribers))
