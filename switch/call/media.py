"""What call control needs from the media relay (docs/MEDIA-API.md), as protocols.

Call control codes against ``MediaPort``: the subset of ``switch.media.MediaEngine``
it uses, with the same method names and the same value shapes (``LegConfig``,
``Codec``).  ``EngineMediaPort`` adapts the real engine (converting the values
to ``switch.media``'s own classes); ``SignallingOnlyMedia`` hands out ports from
the configured range without relaying anything, for builds without the media
package and for signalling benchmarks.  Tests use their own fake.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Codec",
    "EngineMediaPort",
    "LegConfig",
    "MediaLegHandle",
    "MediaPort",
    "MediaUnavailable",
    "SignallingOnlyMedia",
]


class MediaUnavailable(Exception):
    """No RTP port pair is free (the caller answers 503)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Codec:
    name: str
    clock_rate: int = 8000
    channels: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class LegConfig:
    """A leg's negotiated media (MEDIA-API.md ``LegConfig``)."""

    remote: tuple[str, int] | None
    payload_types: Mapping[int, Codec]
    telephone_event_pt: int | None = None
    direction: str = "sendrecv"     # what WE may do on this leg (RFC 3264 §6.1)


class MediaLegHandle(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def local_host(self) -> str: ...

    @property
    def local_port(self) -> int: ...


class MediaPort(Protocol):
    async def open_leg(self, leg_id: str) -> MediaLegHandle: ...

    def close_leg(self, leg: MediaLegHandle) -> None: ...

    def configure(self, leg: MediaLegHandle, config: LegConfig) -> None: ...

    def bridge(self, a: MediaLegHandle, b: MediaLegHandle) -> None: ...

    def unbridge(self, leg: MediaLegHandle) -> None: ...


# --- a port allocator without relay -------------------------------------------------


@dataclass(slots=True)
class _PlainLeg:
    id: str
    local_host: str
    local_port: int
    config: LegConfig | None = None
    peer: str | None = None


@dataclass(slots=True)
class SignallingOnlyMedia:
    """Allocates even ports from the range and records configuration; relays nothing."""

    host: str
    port_min: int
    port_max: int
    legs: dict[str, _PlainLeg] = field(default_factory=dict)
    _free: list[int] = field(default_factory=list)
    _started: bool = False

    def _ports(self) -> list[int]:
        if not self._started:
            first = self.port_min + (self.port_min % 2)
            self._free = list(range(first, self.port_max, 2))
            self._free.reverse()
            self._started = True
        return self._free

    async def open_leg(self, leg_id: str) -> MediaLegHandle:
        free = self._ports()
        if not free:
            raise MediaUnavailable("RTP port range exhausted")
        leg = _PlainLeg(leg_id, self.host, free.pop())
        self.legs[leg_id] = leg
        return leg

    def close_leg(self, leg: MediaLegHandle) -> None:
        plain = self.legs.pop(leg.id, None)
        if plain is not None:
            self._ports().append(plain.local_port)
            if plain.peer is not None and plain.peer in self.legs:
                self.legs[plain.peer].peer = None

    def configure(self, leg: MediaLegHandle, config: LegConfig) -> None:
        plain = self.legs.get(leg.id)
        if plain is not None:
            plain.config = config

    def bridge(self, a: MediaLegHandle, b: MediaLegHandle) -> None:
        self.unbridge(a)
        self.unbridge(b)
        if a.id in self.legs and b.id in self.legs:
            self.legs[a.id].peer = b.id
            self.legs[b.id].peer = a.id

    def unbridge(self, leg: MediaLegHandle) -> None:
        plain = self.legs.get(leg.id)
        if plain is not None and plain.peer is not None:
            other = self.legs.get(plain.peer)
            if other is not None:
                other.peer = None
            plain.peer = None


# --- the real engine --------------------------------------------------------------------


class EngineMediaPort:
    """``MediaPort`` over ``switch.media.MediaEngine`` (converts the value classes)."""

    def __init__(self, engine: Any) -> None:
        # Looked up at run time: the media package is optional in a build.
        media = importlib.import_module("switch.media")
        self.engine = engine
        self._media = media
        self._unavailable: type[BaseException] = getattr(media, "MediaUnavailable", OSError)
        self._open_now: Any = getattr(engine, "open_leg_now", None)
        self._codecs: dict[Codec, Any] = {}
        self._payload_types: dict[tuple[object, ...], Mapping[int, Any]] = {}
        """Converted ``payload_types`` by content: calls negotiate the same few sets."""

    async def open_leg(self, leg_id: str) -> MediaLegHandle:
        if self._open_now is not None:
            # a recycled pair, no engine coroutine to run (most legs under load)
            ready: MediaLegHandle | None = self._open_now(leg_id)
            if ready is not None:
                return ready
        try:
            leg: MediaLegHandle = await self.engine.open_leg(leg_id)
        except self._unavailable as exc:
            raise MediaUnavailable(str(exc)) from exc
        return leg

    def close_leg(self, leg: MediaLegHandle) -> None:
        self.engine.close_leg(leg)

    def configure(self, leg: MediaLegHandle, config: LegConfig) -> None:
        key: tuple[object, ...] = ()
        for pt, codec in config.payload_types.items():
            key += (pt, codec.name, codec.clock_rate, codec.channels)
        payload_types = self._payload_types.get(key)
        if payload_types is None:
            # one mapping shared by the legs of that content (nobody mutates a config's)
            payload_types = {pt: self._codec(codec) for pt, codec in config.payload_types.items()}
            if len(self._payload_types) < 256:
                self._payload_types[key] = payload_types
        self.engine.configure(leg, self._media.LegConfig(
            remote=config.remote, payload_types=payload_types,
            telephone_event_pt=config.telephone_event_pt, direction=config.direction))

    def _codec(self, codec: Codec) -> Any:
        converted = self._codecs.get(codec)
        if converted is None:
            converted = self._codecs[codec] = self._media.Codec(
                name=codec.name, clock_rate=codec.clock_rate, channels=codec.channels)
        return converted

    def bridge(self, a: MediaLegHandle, b: MediaLegHandle) -> None:
        self.engine.bridge(a, b)

    def unbridge(self, leg: MediaLegHandle) -> None:
        self.engine.unbridge(leg)
