"""Event bus (switch.events): stamping, fan-out, bounded queues, slow consumers."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.events import CALL_CREATED, DTMF_DIGIT, EVENT_TYPES, Event, EventBus, Subscription
from switch.metrics import Metrics

CONTRACT_TYPES = {
    "registration.added", "registration.removed", "call.created", "call.answered",
    "call.ended", "dtmf.digit", "transfer.state", "recording.started", "recording.stopped",
    "voicemail.deposited",
}


def test_contract_types_are_known() -> None:
    assert CONTRACT_TYPES <= EVENT_TYPES


async def test_publish_stamps_type_and_iso_utc_time() -> None:
    bus = EventBus()
    with bus.subscribe() as sub:
        event = bus.publish(CALL_CREATED, call_id="c1", parties=["1001", "1002"])
        got = await sub.get()
    assert got is event
    data = json.loads(event.to_json())
    assert data["type"] == "call.created"
    assert data["call_id"] == "c1"
    assert data["parties"] == ["1001", "1002"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["time"])
    assert event.call_id == "c1"


def test_unknown_type_and_reserved_fields_are_refused() -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="unknown event type"):
        bus.publish("call.exploded")
    with pytest.raises(ValueError, match="reserved"):
        bus.publish(CALL_CREATED, time="yesterday")


def test_publish_without_subscribers_is_fine() -> None:
    EventBus().publish(CALL_CREATED, call_id="c1")


async def test_fan_out_and_type_filter() -> None:
    bus = EventBus(clock=lambda: "T")
    everything = bus.subscribe()
    digits = bus.subscribe(types=[DTMF_DIGIT])
    bus.publish(CALL_CREATED, call_id="c1")
    bus.publish(DTMF_DIGIT, call_id="c1", digit="5", method="inband", leg_id="l1",
                extension="1001")
    assert (await everything.get()).type == CALL_CREATED  # type: ignore[union-attr]
    assert (await everything.get()).type == DTMF_DIGIT  # type: ignore[union-attr]
    only = await digits.get()
    assert only is not None
    assert only.as_dict() == {"type": "dtmf.digit", "time": "T", "call_id": "c1", "digit": "5",
                              "method": "inband", "leg_id": "l1", "extension": "1001"}


async def test_slow_subscriber_is_dropped_without_blocking_others() -> None:
    metrics = Metrics()
    bus = EventBus(queue_size=3, metrics=metrics)
    slow = bus.subscribe(name="slow")
    fast = bus.subscribe(maxsize=100, name="fast")
    for i in range(10):
        bus.publish(CALL_CREATED, call_id=f"c{i}")  # never awaits, never raises
    assert slow.dropped
    assert bus.subscriber_count == 1
    assert [e.fields["call_id"] async for e in _take(fast, 10)] == [f"c{i}" for i in range(10)]
    # The slow one's stream simply ends; its backlog is discarded.
    assert [e async for e in slow] == []
    assert metrics.event_subscribers_dropped._value.get() == 1
    assert metrics.event_subscribers._value.get() == 1


async def _take(sub: Subscription, n: int) -> AsyncIterator[Event]:
    for _ in range(n):
        event = await sub.get()
        assert event is not None
        yield event


async def test_close_ends_iteration() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish(CALL_CREATED, call_id="c1")
    bus.close()
    assert [e async for e in sub] == []
    assert not sub.dropped
    assert bus.subscriber_count == 0
    sub.close()  # idempotent


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))  # to 2100
def test_event_time_is_what_datetime_isoformat_writes(now_ns: int) -> None:
    import switch.events as events

    expected = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=now_ns // 1000)
                ).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    original = events.time.time_ns
    events.time.time_ns = lambda: now_ns  # type: ignore[assignment]
    try:
        assert events._utc_now_iso() == expected
        assert events._utc_now_iso() == expected  # the cached second too
    finally:
        events.time.time_ns = original  # type: ignore[method-assign]


def test_publish_without_subscribers_still_checks_and_returns_the_event() -> None:
    bus = EventBus(clock=lambda: "T")
    event = bus.publish(CALL_CREATED, call_id="c1")
    assert event == Event(type=CALL_CREATED, time="T", fields={"call_id": "c1"})
    with pytest.raises(ValueError, match=r"\['time'\] are reserved"):
        bus.publish(CALL_CREATED, time="x")
    with pytest.raises(ValueError, match="unknown event type"):
        bus.publish("call.nope")
