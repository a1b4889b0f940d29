"""RFC 4733 telephone-event: receiver (one keypress per event) and sender.

Theory of operation
-------------------
An event is carried by many packets (RFC 4733 §2.5.1): a first packet (the
marker bit set, §2.5.1.2 — but senders omit it and it may be lost), updates
with a growing duration (§2.5.1.3), and an end packet with the E bit set,
sent three times (§2.5.1.4).  Every packet of one event carries the same
RTP timestamp, the event's start, so the receiver keys events by
``(ssrc, timestamp)`` and reports each key once (§2.5.2.1), whatever
arrives: updates, repeated or reordered end packets, a first packet never
seen, a missing marker.

Per SSRC one event may be in progress.  Its machine (table below):

    ACTIVE --update--> ACTIVE
    ACTIVE --end packet--> ENDED            (report end)
    ACTIVE --newer event on the SSRC--> ENDED (report end, not timed out)
    ACTIVE --no packet for `timeout`--> ENDED (report end, timed out)
    ENDED  --update / end packet--> ENDED   (late or repeated: ignored)

A long event whose duration would overflow the 16-bit field is continued
in a new segment whose timestamp is the old one plus the old duration
(§2.5.1.5); that segment is the same keypress, not a new one.  Senders that
instead let the duration field wrap are handled by counting the wraps.
Keys of ended events are remembered for ``memory`` seconds so that stray
end packets do not resurrect them.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from switch.dtmf.events import TelephoneEventEnded, TelephoneEventStarted
from switch.dtmf.tones import event_code, event_digit

__all__ = [
    "EventState",
    "MalformedTelephoneEvent",
    "TelephoneEventPacket",
    "TelephoneEventPayload",
    "TelephoneEventReceiver",
    "parse_payload",
    "telephone_event_packets",
]

_SEGMENT_LIMIT: Final = 0xFFFF
_TS_MOD: Final = 1 << 32


class MalformedTelephoneEvent(ValueError):
    """A payload that is not an RFC 4733 §2.3 event block."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TelephoneEventPayload:
    """One RFC 4733 §2.3 event block."""

    code: int
    end: bool
    volume: int
    """Power level in -dBm0 (0..63)."""
    duration: int
    """Duration so far, in timestamp units."""

    def encode(self) -> bytes:
        if not (0 <= self.code <= 255 and 0 <= self.volume <= 63 and 0 <= self.duration <= 0xFFFF):
            raise ValueError("telephone-event field out of range")
        return struct.pack(
            "!BBH", self.code, (0x80 if self.end else 0) | self.volume, self.duration
        )


def parse_payload(payload: bytes) -> TelephoneEventPayload:
    """Parse the event block of an RFC 4733 §2.3 payload.

    A payload is one 4-byte block; a longer payload that is a multiple of 4
    (seen from some gateways) is read as its last block, the newest state.
    """
    if len(payload) < 4 or len(payload) % 4:
        raise MalformedTelephoneEvent(f"telephone-event payload of {len(payload)} bytes")
    code, flags, duration = struct.unpack_from("!BBH", payload, len(payload) - 4)
    return TelephoneEventPayload(
        code=code, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration
    )


class EventState(enum.Enum):
    ACTIVE = "active"
    ENDED = "ended"


class EventInput(enum.Enum):
    UPDATE = "update"
    END_PACKET = "end packet"
    NEWER_EVENT = "newer event"
    TIMEOUT = "timeout"


class _Report(enum.Enum):
    NOTHING = "nothing"
    END = "end"
    END_TIMED_OUT = "end (timed out)"


TRANSITIONS: Final[dict[tuple[EventState, EventInput], tuple[EventState, _Report]]] = {
    (EventState.ACTIVE, EventInput.UPDATE): (EventState.ACTIVE, _Report.NOTHING),
    (EventState.ACTIVE, EventInput.END_PACKET): (EventState.ENDED, _Report.END),
    (EventState.ACTIVE, EventInput.NEWER_EVENT): (EventState.ENDED, _Report.END),
    (EventState.ACTIVE, EventInput.TIMEOUT): (EventState.ENDED, _Report.END_TIMED_OUT),
    (EventState.ENDED, EventInput.UPDATE): (EventState.ENDED, _Report.NOTHING),
    (EventState.ENDED, EventInput.END_PACKET): (EventState.ENDED, _Report.NOTHING),
}
"""An ENDED event is never current on its SSRC, so NEWER_EVENT and TIMEOUT cannot reach it."""


@dataclass(slots=True)
class _Event:
    ssrc: int
    timestamp: int
    code: int
    volume: int
    start: float
    last_packet: float
    duration: int
    """Total duration in timestamp units, across segments and wraps."""
    segment_ts: int
    """Timestamp of the segment the duration field currently counts from."""
    segment_duration: int
    state: EventState = EventState.ACTIVE

    def step(self, event_input: EventInput) -> _Report:
        try:
            self.state, report = TRANSITIONS[(self.state, event_input)]
        except KeyError:
            raise AssertionError(
                f"telephone-event machine: {event_input} in {self.state}"
            ) from None
        return report


def _newer(a: int, b: int) -> bool:
    """RTP timestamp a is after b (serial-number arithmetic, RFC 3550 §5.1)."""
    return 0 < (a - b) % _TS_MOD < _TS_MOD // 2


class TelephoneEventReceiver:
    """De-duplicates RFC 4733 packets into keypresses for one RTP session.

    ``feed`` each telephone-event payload with its RTP header fields and the
    arrival time; it returns the keypress starts and ends it caused.  Call
    ``handle_timer(now)`` at ``get_timer()`` to end events whose end packets
    were all lost.
    """

    def __init__(self, clock_rate: int = 8000, timeout: float = 1.0, memory: float = 10.0) -> None:
        self.clock_rate = clock_rate
        self.timeout = timeout
        """End an event after this long without a packet (s)."""
        self.memory = memory
        self._current: dict[int, _Event] = {}
        self._ended: dict[tuple[int, int], tuple[float, _Event]] = {}

    def feed(
        self, payload: bytes, ssrc: int, timestamp: int, marker: bool, now: float
    ) -> list[TelephoneEventStarted | TelephoneEventEnded]:
        """Take one telephone-event packet; the marker bit is informative only (§2.5.1.2)."""
        block = parse_payload(payload)
        out: list[TelephoneEventStarted | TelephoneEventEnded] = []
        out += self.handle_timer(now)
        key = (ssrc, timestamp)
        current = self._current.get(ssrc)
        if key in self._ended:
            ended = self._ended[key][1]
            ended.step(EventInput.END_PACKET if block.end else EventInput.UPDATE)
            return out
        if current is not None and timestamp in (current.timestamp, current.segment_ts):
            self._update(current, block, now)
            if block.end:
                out += self._finish(current, EventInput.END_PACKET, now)
            return out
        if current is not None and self._is_continuation(current, block, timestamp):
            # §2.5.1.5: a new segment of the same long event
            current.segment_ts = timestamp
            current.segment_duration = 0
            self._update(current, block, now)
            if block.end:
                out += self._finish(current, EventInput.END_PACKET, now)
            return out
        if current is not None and _newer(timestamp, current.timestamp):
            out += self._finish(current, EventInput.NEWER_EVENT, now)
            current = None
        event = _Event(
            ssrc=ssrc,
            timestamp=timestamp,
            code=block.code,
            volume=block.volume,
            start=now - block.duration / self.clock_rate,
            last_packet=now,
            duration=block.duration,
            segment_ts=timestamp,
            segment_duration=block.duration,
        )
        out.append(
            TelephoneEventStarted(
                ssrc=ssrc,
                timestamp=timestamp,
                digit=event_digit(block.code),
                code=block.code,
                volume=block.volume,
                start=event.start,
            )
        )
        if current is None:
            self._current[ssrc] = event
            if block.end:
                out += self._finish(event, EventInput.END_PACKET, now)
        else:
            # an older event seen only now (reordering): a keypress of its own, already over
            out += self._finish(event, EventInput.END_PACKET, now)
        return out

    def get_timer(self) -> float | None:
        """When ``handle_timer`` has something to do, or None."""
        times = [e.last_packet + self.timeout for e in self._current.values()]
        if self._ended:
            times.append(min(t for t, _ in self._ended.values()) + self.memory)
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[TelephoneEventStarted | TelephoneEventEnded]:
        """End events silent for ``timeout``; forget ended keys older than ``memory``."""
        out: list[TelephoneEventStarted | TelephoneEventEnded] = []
        for event in list(self._current.values()):
            if now - event.last_packet >= self.timeout:
                out += self._finish(event, EventInput.TIMEOUT, now)
        for key, (ended_at, _) in list(self._ended.items()):
            if now - ended_at >= self.memory:
                del self._ended[key]
        return out

    def _is_continuation(self, current: _Event, block: TelephoneEventPayload, ts: int) -> bool:
        expected = (current.segment_ts + current.segment_duration) % _TS_MOD
        return (
            block.code == current.code
            and current.segment_duration >= _SEGMENT_LIMIT - self.clock_rate // 10
            and abs((ts - expected + _TS_MOD // 2) % _TS_MOD - _TS_MOD // 2)
            <= self.clock_rate // 10
        )

    def _update(self, event: _Event, block: TelephoneEventPayload, now: float) -> None:
        event.last_packet = now
        field = block.duration
        previous = event.segment_duration & 0xFFFF
        segment = event.segment_duration
        if field >= previous:
            segment += field - previous
        elif previous - field > 0x8000:
            # the 16-bit field wrapped instead of starting a new segment
            segment += field + 0x10000 - previous
        # else: a reordered, older update; keep the larger duration
        event.duration += segment - event.segment_duration
        event.segment_duration = segment

    def _finish(
        self, event: _Event, event_input: EventInput, now: float
    ) -> list[TelephoneEventStarted | TelephoneEventEnded]:
        report = event.step(event_input)
        if self._current.get(event.ssrc) is event:
            del self._current[event.ssrc]
        self._ended[(event.ssrc, event.timestamp)] = (now, event)
        self._ended[(event.ssrc, event.segment_ts)] = (now, event)
        if report is _Report.NOTHING:
            return []
        return [
            TelephoneEventEnded(
                ssrc=event.ssrc,
                timestamp=event.timestamp,
                digit=event_digit(event.code),
                code=event.code,
                start=event.start,
                duration=event.duration / self.clock_rate,
                timed_out=report is _Report.END_TIMED_OUT,
            )
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class TelephoneEventPacket:
    """One packet to send: payload, marker bit and send time relative to the event start.

    Every packet of the event carries the same RTP timestamp (the event start,
    RFC 4733 §2.5.1.2) and a new sequence number; the RTP layer adds both.
    """

    payload: bytes
    marker: bool
    offset: float
    """Seconds after the event start at which to send this packet."""


def telephone_event_packets(
    digit: str,
    duration: float,
    *,
    volume: int = 10,
    interval: float = 0.050,
    clock_rate: int = 8000,
    end_repeats: int = 3,
) -> list[TelephoneEventPacket]:
    """Packets of one keypress of ``duration`` seconds (RFC 4733 §2.5.1).

    The first packet has the marker bit; an update follows every
    ``interval`` with the duration so far; the end packet (E bit, final
    duration) is sent ``end_repeats`` times, ``interval`` apart
    (§2.5.1.4).  Durations beyond the 16-bit field are not segmented here:
    a keypress is far shorter than 8 s.
    """
    code = event_code(digit)
    total = int(round(duration * clock_rate))
    if not 0 < total <= 0xFFFF:
        raise ValueError(f"duration {duration} s out of range")
    step = int(round(interval * clock_rate))
    packets = []
    elapsed = 0
    while elapsed < total:
        packets.append(
            TelephoneEventPacket(
                payload=TelephoneEventPayload(
                    code=code, end=False, volume=volume, duration=elapsed
                ).encode(),
                marker=elapsed == 0,
                offset=elapsed / clock_rate,
            )
        )
        elapsed += step
    end = TelephoneEventPayload(code=code, end=True, volume=volume, duration=total).encode()
    for k in range(end_repeats):
        packets.append(
            TelephoneEventPacket(payload=end, marker=False, offset=(total + k * step) / clock_rate)
        )
    return packets
