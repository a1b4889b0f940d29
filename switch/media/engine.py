"""The media engine: RTP/RTCP port pairs per leg, the relay between bridged legs,
the per-tick work (taps, playback, inactivity, metrics).  See docs/MEDIA-API.md.

One ``loop.call_at`` chain ticks the whole engine (default every 20 ms).  A
tick

1. decodes the G.711 payloads the tapped legs buffered since the previous
   tick — one table lookup per codec over all legs at once — and hands them
   (and the RFC 4733 packets) to the taps; only legs that received something
   are visited (they queue themselves on their first packet, relay.py);
2. sends the due packets of digits queued by ``send_digits`` (RFC 4733
   events interleaved with the relayed stream, or in-band tones through the
   player), then packetises the next 20 ms of every playing leg (frames of
   all legs encoded together), with the leg's output SSRC and continuous
   sequence numbers and timestamps (RFC 3550 §5.1), marker on the first
   packet (RFC 3551 §4.1);
3. now and then (at least once a second), reports legs that expect media
   but received none for ``inactivity_timeout`` (``MediaTimedOut``);
4. once a second, adds the packets counted since to
   ``switch_rtp_packets_total`` (summing every leg's counters on each 20 ms
   tick was 1.3 % of the engine's py-spy samples under 300 signalling-only
   calls/s; once a second it is noise, and a scrape is at most a second
   behind; ``stop`` flushes).

The per-packet path is in relay.py.

Recycled port pairs.  Binding a pair and wrapping both sockets in asyncio
endpoints, then closing them at the end of the leg, made opening,
configuring and closing a leg cost 65–85 µs with uvloop (18–23 µs with a
recycled pair; bench/bench_media_costs.py) — with two legs a call, 4.3 % of
the engine's samples under 300 signalling-only calls/s.  So ``close_leg`` keeps the
two sockets bound and open and hands them to a ``QuarantineReceiver``,
which drops whatever still arrives; ``open_leg`` gives such a pair a new
receiver (``transport.set_protocol``) instead of binding one — but only
once the pair has been quiet (no stray RTP) for ``port_quarantine``
seconds, so that the in-flight packets of the previous call are drained
and dropped, never relayed into the new one.  A phone that never stopped
(it missed the BYE) keeps its pair in quarantine; and if the pool runs dry
and a pair is taken early, the streams the previous leg and the quarantine
saw — (source, SSRC) — are never latched to nor relayed by the new leg
(``_RtpReceiver.stale``).  rtpengine solves the same problem by keeping a
deleted call, its ports included, for ``delete-delay`` (30 s in its sample
configuration) and, with ``strict-source``, by dropping what does not come
from the learned source.  Spare pairs count as free (``free_ports``); at
most the pool's capacity are kept, so the engine never holds more sockets
than a full pool would, and a pair unused for ``_SPARE_IDLE`` seconds is
closed and its ports return to the pool.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import numpy as np

from switch.dtmf.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from switch.dtmf.rfc4733 import TelephoneEventPacket, telephone_event_packets
from switch.dtmf.tones import DIGITS, event_code
from switch.logs import get_logger
from switch.media.digits import DIGIT_OFF, DIGIT_ON, dtmf_tones
from switch.media.errors import MediaError, MediaUnavailable
from switch.media.events import MediaEvent, MediaTimedOut, PlaybackFinished, RemoteLatched
from switch.media.model import DIRECTIONS, AudioSource, AudioTap, Codec, LegConfig, Pcm
from switch.media.player import FrameReader
from switch.media.ports import PortPool
from switch.media.relay import (
    FRAME_SAMPLES,
    QuarantineReceiver,
    _RtcpReceiver,
    _RtpReceiver,
    _Sender,
)
from switch.media.rtp import HEADER

if TYPE_CHECKING:
    from switch.metrics import Metrics

__all__ = ["MediaEngine", "MediaLeg", "MediaStats"]

_log = get_logger("switch.media")

_SENDING: Final = frozenset({"sendrecv", "sendonly"})
_G711: Final = frozenset({"PCMU", "PCMA"})  # the codecs of _SILENCE below
_UNSPECIFIED_HOSTS: Final = frozenset({"0.0.0.0", "::", ""})
_NO_PCM: Final[Pcm] = np.zeros(0, dtype=np.int16)
_STOP_WAIT: Final = 2.0
"""How long ``stop`` waits for the loop to close the sockets (shutdown must stay bounded)."""
_MAX_PLAYBACK_LAG: Final = 0.1
"""A player more than this behind (the loop stalled) restarts its clock instead of bursting."""
_SILENCE: Final = {"PCMU": b"\xff", "PCMA": b"\xd5"}
"""One byte of G.711 silence (RFC 3551 §4.5.14: µ-law 0xFF, A-law 0xD5)."""
_SPARE_IDLE: Final = 30.0
"""Seconds after which a spare pair nobody took is closed (module docstring)."""
_METRICS_EVERY: Final = 1.0
"""Seconds between two additions to ``switch_rtp_packets_total`` (module docstring)."""
DIGIT_METHODS: Final = frozenset({"rfc4733", "inband"})


class MediaStats:
    """Live counters of one leg (read them any time; they stay after the leg is closed).

    ``lost`` and ``jitter`` are those of RFC 3550 §6.4.1 (A.3, A.8) for what the
    phone sends us; ``jitter`` is in timestamp units, ``jitter_ms`` in milliseconds.
    """

    __slots__ = ("_rtcp", "_rx", "_sender")

    def __init__(self, rx: _RtpReceiver, sender: _Sender, rtcp: _RtcpReceiver) -> None:
        self._rx = rx
        self._sender = sender
        self._rtcp = rtcp

    @property
    def packets_in(self) -> int:
        return self._rx.packets

    @property
    def bytes_in(self) -> int:
        return self._rx.octets

    @property
    def packets_out(self) -> int:
        return self._sender.packets

    @property
    def bytes_out(self) -> int:
        return self._sender.octets

    @property
    def expected(self) -> int:
        source = self._rx.source
        return source.total_expected if source is not None else 0

    @property
    def lost(self) -> int:
        source = self._rx.source
        return source.lost if source is not None else 0

    @property
    def jitter(self) -> float:
        source = self._rx.source
        return source.jitter if source is not None else 0.0

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self.jitter / self._rx.rate

    @property
    def last_rx(self) -> float | None:
        """``time.monotonic()`` of the last RTP packet accepted."""
        return self._rx.last_rx

    @property
    def ssrc_in(self) -> int | None:
        source = self._rx.source
        return source.ssrc if source is not None else None

    @property
    def ssrc_out(self) -> int:
        return self._sender.ssrc

    @property
    def malformed(self) -> int:
        """RTP packets dropped as short, not version 2 or with a header overrunning them."""
        return self._rx.malformed

    @property
    def ignored(self) -> int:
        """RTP packets dropped because they came from another source than the latched one."""
        return self._rx.ignored

    @property
    def rtcp_in(self) -> int:
        return self._rtcp.packets

    def as_dict(self) -> dict[str, int | float | None]:
        return {name: getattr(self, name) for name in (
            "packets_in", "packets_out", "bytes_in", "bytes_out", "expected", "lost", "jitter",
            "jitter_ms", "last_rx", "malformed", "ignored", "rtcp_in")}


class _Playback:
    __slots__ = ("alaw", "digits", "next_time", "pt", "reader")

    def __init__(self, reader: FrameReader, pt: int, alaw: bool, start: float,
                 digits: bool = False) -> None:
        self.reader = reader
        self.pt = pt
        self.alaw = alaw
        self.next_time = start
        self.digits = digits
        """The engine's own tones of ``send_digits`` (no ``PlaybackFinished``)."""


class _DigitQueue:
    """Digits ``send_digits`` queued towards one leg, sent on the tick, one at a time."""

    __slots__ = ("event", "next_at", "pending", "pt", "sent", "start", "ts")

    def __init__(self) -> None:
        self.pending: deque[tuple[str, str]] = deque()    # (digit, method)
        self.event: list[TelephoneEventPacket] | None = None
        """The RFC 4733 event being sent, and how many of its packets went."""
        self.sent = 0
        self.start = 0.0
        self.ts = 0
        self.pt = 0
        self.next_at = 0.0
        """Loop time before which the next digit may not start."""


class _SparePair:
    """A closed leg's RTP/RTCP sockets, still bound, waiting for the next leg."""

    __slots__ = ("closed_at", "closing", "open", "port", "rtcp", "rtcp_quarantine", "rtp",
                 "rtp_quarantine")

    def __init__(self, port: int, closed_at: float, rtp: asyncio.DatagramTransport,
                 rtcp: asyncio.DatagramTransport, rtp_quarantine: QuarantineReceiver,
                 rtcp_quarantine: QuarantineReceiver) -> None:
        self.port = port
        self.closed_at = closed_at
        self.rtp = rtp
        self.rtcp = rtcp
        self.rtp_quarantine = rtp_quarantine
        self.rtcp_quarantine = rtcp_quarantine
        self.open = 2
        self.closing = False


class MediaLeg:
    """One leg's RTP/RTCP port pair.  Created by ``MediaEngine.open_leg`` only."""

    __slots__ = ("_closed", "_digits", "_expect_since", "_expecting", "_g711", "_open_sockets",
                 "_pair", "_peer", "_player", "_rtcp", "_rx", "_sender", "_silence_reported",
                 "_taps", "config", "id", "local_host", "local_port", "rtcp_port", "stats")

    def __init__(self, leg_id: str, host: str, port: int, rx: _RtpReceiver, sender: _Sender,
                 rtcp: _RtcpReceiver) -> None:
        self.id = leg_id
        self.local_host = host
        self.local_port = port
        """Write this into the SDP we send on this leg (m= port; RTCP is port + 1)."""
        self.rtcp_port = port + 1
        self.config: LegConfig | None = None
        self.stats = MediaStats(rx, sender, rtcp)
        self._rx = rx
        self._sender = sender
        self._rtcp = rtcp
        self._peer: MediaLeg | None = None
        self._taps: list[AudioTap] = []
        self._player: _Playback | None = None
        self._digits: _DigitQueue | None = None
        self._open_sockets = 2
        self._closed = False
        self._expecting = False
        self._expect_since = 0.0
        self._silence_reported: float | None = None
        self._g711: tuple[tuple[int, bool], ...] = ()
        """(PT, is A-law) of the G.711 payload types of ``config`` (``_facts``)."""
        self._pair: _SparePair | None = None
        """The spare pair the leg's sockets came from, to quarantine them in again."""

    @property
    def remote(self) -> tuple[str, int] | None:
        """Where we send to: the latched source (symmetric RTP) or else the SDP address."""
        addr = self._sender.addr
        return None if addr is None else (addr[0], addr[1])

    @property
    def latched(self) -> bool:
        return self._rx.latched is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<MediaLeg {self.id} {self.local_host}:{self.local_port} -> {self.remote}>"


def _usable(remote: tuple[str, int] | None) -> tuple[str, int] | None:
    """The SDP address, unless it is the hold form (c=0.0.0.0, RFC 3264 §8.4) or port 0."""
    if remote is None or remote[1] == 0 or remote[0] in _UNSPECIFIED_HOSTS:
        return None
    return remote


def _pt_map(src: LegConfig | None, dst: LegConfig | None) -> bytes | None:
    """Payload type translation between legs that numbered the same codecs differently
    (dynamic PTs, RFC 3551 §6); None if every PT passes unchanged."""
    if src is None or dst is None or not dst.payload_types:
        return None
    # Bridged legs share their payload_types mappings call after call (EngineMediaPort
    # keeps one per content; a LegConfig is frozen, its mapping read-only): the table
    # is computed once per pair of mappings, kept by identity (each entry holds both).
    key = (id(src.payload_types), src.telephone_event_pt, id(dst.payload_types),
           dst.telephone_event_pt)
    entry = _PT_MAPS.get(key)
    if entry is not None and entry[0] is src.payload_types and entry[1] is dst.payload_types:
        return entry[2]
    table = _pt_table(src, dst)
    if len(_PT_MAPS) >= 256:
        del _PT_MAPS[next(iter(_PT_MAPS))]
    _PT_MAPS[key] = (src.payload_types, dst.payload_types, table)
    return table


_PT_MAPS: Final[dict[tuple[int, int | None, int, int | None],
                     tuple[Mapping[int, Codec], Mapping[int, Codec], bytes | None]]] = {}


def _pt_table(src: LegConfig, dst: LegConfig) -> bytes | None:
    by_codec: dict[tuple[str, int, int], int] = {}
    # (``Codec.key``, spelt out: a property call fewer per codec)
    for pt, codec in dst.payload_types.items():
        by_codec.setdefault((codec.name.upper(), codec.clock_rate, codec.channels), pt)
    table = bytearray(_SAME_PTS)
    for pt, codec in src.payload_types.items():
        if 0 <= pt < 128:
            table[pt] = by_codec.get((codec.name.upper(), codec.clock_rate, codec.channels),
                                     0xFF)
    if src.telephone_event_pt is not None:
        table[src.telephone_event_pt] = (dst.telephone_event_pt
                                         if dst.telephone_event_pt is not None else 0xFF)
    return None if table == _SAME_PTS else bytes(table)


_Facts = tuple[Mapping[int, Codec], int, dict[int, bytes], tuple[tuple[int, bool], ...]]
"""(the mapping, clock rate, G.711 silence by PT, (PT, is A-law) of the G.711 PTs)."""
_FACTS: Final[dict[tuple[int, int | None], _Facts]] = {}


def _facts(payload_types: Mapping[int, Codec], te_pt: int | None) -> _Facts:
    """What ``configure`` and the taps derive from a leg's payload types: the first audio
    codec's clock rate (8000 if none), the silence and tap buffer of each G.711 PT."""
    rate: int | None = None
    silence: dict[int, bytes] = {}
    g711: list[tuple[int, bool]] = []
    for pt, c in payload_types.items():
        if rate is None and pt != te_pt and c.name.lower() != "telephone-event":
            rate = c.clock_rate
        name = c.name.upper()
        if name in _SILENCE:
            silence[pt] = _SILENCE[name]
            g711.append((pt, name == "PCMA"))
    return payload_types, 8000 if rate is None else rate, silence, tuple(g711)


_SAME_PTS: Final = bytes(range(128))
"""The PT map that changes nothing."""

_GATES: Final[dict[str, bytes]] = {}
"""``set_digit_gate`` tables by first digits (one feature-code set per engine, in practice)."""


class MediaEngine:
    """Anchored RTP for every leg of every call (docs/MEDIA-API.md)."""

    def __init__(self, *, host: str, port_min: int, port_max: int,
                 inactivity_timeout: float = 60.0, tick_interval: float = 0.02,
                 on_event: Callable[[MediaEvent], None] | None = None,
                 metrics: Metrics | None = None, relatch_packets: int = 50,
                 receive_buffer: int = 1 << 17, port_quarantine: float = 1.0) -> None:
        if tick_interval <= 0:
            raise ValueError("tick_interval must be positive")
        self.host = host
        self.inactivity_timeout = inactivity_timeout
        self.tick_interval = tick_interval
        self.on_event = on_event
        self.relatch_packets = max(1, relatch_packets)
        self.receive_buffer = receive_buffer
        self.port_quarantine = port_quarantine
        """Seconds a closed leg's pair must have been quiet before a new leg gets it."""
        self._metrics = metrics
        self._pool = PortPool(port_min, port_max)
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._legs: dict[str, MediaLeg] = {}
        self._tapped: dict[str, MediaLeg] = {}
        self._pending: list[MediaLeg] = []
        """Tapped legs that buffered something since the last tick (relay.py queues them)."""
        self._playing: dict[str, MediaLeg] = {}
        self._sending: dict[str, MediaLeg] = {}
        """Legs with digits queued by ``send_digits``."""
        # taps by id(): on how many legs, and the optional on_tick_end hooks
        self._tap_uses: dict[int, int] = {}
        self._tick_ends: dict[int, Callable[[float], object]] = {}
        self._releasing = 0
        self._released = asyncio.Event()
        self._spares: deque[_SparePair] = deque()
        """Closed legs' pairs kept bound for reuse, oldest first (module docstring)."""
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._next_inactivity_check = 0.0
        self._next_metrics_flush = 0.0
        self._inactivity_every = min(1.0, max(tick_interval, inactivity_timeout / 4))
        self._closed_in = 0
        self._closed_out = 0
        self._reported_in = 0
        self._reported_out = 0

    # --- life cycle ---

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stopping = False
        if self._timer is None:
            self._next_tick = loop.time() + self.tick_interval
            self._timer = loop.call_at(self._next_tick, self._on_timer)

    async def stop(self) -> None:
        """Close every leg and wait until all their ports are back in the pool."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stopping = True
        for leg in list(self._legs.values()):
            self.close_leg(leg)
        while self._spares:
            self._close_spare(self._spares.popleft())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STOP_WAIT
        while self._releasing and loop.time() < deadline:
            self._released.clear()
            try:
                await asyncio.wait_for(self._released.wait(), deadline - loop.time())
            except TimeoutError:
                _log.warning("media.sockets_not_closed", pairs=self._releasing)
        self._flush_metrics()

    @property
    def free_ports(self) -> int:
        """RTP/RTCP pairs left: in the pool, and closed legs' pairs kept for reuse."""
        return len(self._pool) + len(self._spares)

    @property
    def legs(self) -> int:
        return len(self._legs)

    # --- legs ---

    def open_leg_now(self, leg_id: str) -> MediaLeg | None:
        """``open_leg`` without waiting, when a recycled pair is ready (most legs under a
        steady load); None: call ``open_leg``."""
        if leg_id in self._legs:
            raise MediaError(f"media leg {leg_id!r} is already open")
        spare = self._take_spare(force=False)
        return None if spare is None else self._reuse(leg_id, spare)

    async def open_leg(self, leg_id: str) -> MediaLeg:
        """Bind an RTP/RTCP pair from the pool (pairs in use elsewhere are skipped)."""
        if leg_id in self._legs:
            raise MediaError(f"media leg {leg_id!r} is already open")
        loop = asyncio.get_running_loop()
        while True:
            spare = self._take_spare(force=False)
            if spare is not None:
                return self._reuse(leg_id, spare)
            for _ in range(len(self._pool)):
                port = self._pool.take()
                pair = self._bind_pair(port)
                if pair is None:
                    self._pool.give(port)
                    continue
                return await self._make_leg(loop, leg_id, port, *pair)
            # the pool is dry: a pair still in quarantine rather than none at all
            # (the streams its previous leg saw are still refused, ``_RtpReceiver.stale``)
            spare = self._take_spare(force=True)
            if spare is not None:
                return self._reuse(leg_id, spare)
            if not self._releasing:
                raise MediaUnavailable(
                    f"no free RTP port pair in {self._pool.port_min}-{self._pool.port_max}")
            # closed legs whose sockets the loop has not released yet
            self._released.clear()
            await self._released.wait()

    def _bind_pair(self, port: int) -> tuple[socket.socket, socket.socket] | None:
        bound: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                sock = socket.socket(self._family, socket.SOCK_DGRAM)
                bound.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
                sock.setblocking(False)
                sock.bind((self.host, p))
        except OSError:
            for sock in bound:
                sock.close()
            return None
        return bound[0], bound[1]

    async def _make_leg(self, loop: asyncio.AbstractEventLoop, leg_id: str, port: int,
                        rtp_sock: socket.socket, rtcp_sock: socket.socket) -> MediaLeg:
        sender, rx, rtcp, holder = self._receivers(leg_id)
        try:
            await loop.create_datagram_endpoint(lambda: rx, sock=rtp_sock)
        except BaseException:
            rtp_sock.close()
            rtcp_sock.close()
            self._pool.give(port)
            raise
        try:
            await loop.create_datagram_endpoint(lambda: rtcp, sock=rtcp_sock)
        except BaseException:
            rtcp_sock.close()
            rx.on_closed = lambda: self._pool.give(port)
            assert rx.transport is not None
            rx.transport.close()
            raise
        return self._new_leg(leg_id, port, sender, rx, rtcp, holder)

    def _new_leg(self, leg_id: str, port: int, sender: _Sender, rx: _RtpReceiver,
                 rtcp: _RtcpReceiver, holder: list[MediaLeg]) -> MediaLeg:
        """The leg over receivers from ``_receivers`` (``holder``: their callbacks' leg)."""
        sender.transport = rx.transport
        leg = MediaLeg(leg_id, self.host, port, rx, sender, rtcp)
        rx.owner = leg
        holder.append(leg)
        self._legs[leg_id] = leg
        return leg

    def _receivers(self, leg_id: str) -> tuple[_Sender, _RtpReceiver, _RtcpReceiver,
                                               list[MediaLeg]]:
        sender = _Sender()
        holder: list[MediaLeg] = []

        def closed() -> None:
            self._on_socket_closed(holder[0])

        rx = _RtpReceiver(sender, self.relatch_packets,
                          lambda addr: self._on_latch(holder[0], addr), closed, self._pending)
        return sender, rx, _RtcpReceiver(closed), holder

    # --- recycled port pairs (module docstring) ---

    def _take_spare(self, *, force: bool) -> _SparePair | None:
        """The oldest spare pair that has been quiet for ``port_quarantine`` seconds
        (``force``: the oldest one whatever its state)."""
        spares = self._spares
        while spares and (spares[0].rtp.is_closing() or spares[0].rtcp.is_closing()):
            self._close_spare(spares.popleft())      # a socket error closed it under us
        if not spares:
            return None
        if force:
            return spares.popleft()
        now = time.monotonic()
        for _ in range(min(len(spares), 4)):
            spare = spares[0]
            quiet_since = spare.rtp_quarantine.quiet_since
            if now - quiet_since >= self.port_quarantine:
                return spares.popleft()
            if quiet_since == spare.closed_at:
                break                   # closed too recently, and the ones after it too
            # strays keep this one busy (a phone that missed the BYE): to the back
            spares.rotate(-1)
        return None

    def _reuse(self, leg_id: str, spare: _SparePair) -> MediaLeg:
        sender, rx, rtcp, holder = self._receivers(leg_id)
        rx.stale = frozenset(spare.rtp_quarantine.stale)
        rx.transport, rtcp.transport = spare.rtp, spare.rtcp
        spare.rtp.set_protocol(rx)
        spare.rtcp.set_protocol(rtcp)
        leg = self._new_leg(leg_id, spare.port, sender, rx, rtcp, holder)
        leg._pair = spare
        return leg

    def _recycle(self, leg: MediaLeg) -> bool:
        """Keep the closed leg's sockets for a later leg; False: close them."""
        rx, rtcp = leg._rx, leg._rtcp
        rtp_transport, rtcp_transport = rx.transport, rtcp.transport
        if (self._stopping or self._loop is None or leg._open_sockets != 2
                or rtp_transport is None or rtcp_transport is None
                or rtp_transport.is_closing() or rtcp_transport.is_closing()
                or len(self._spares) >= self._pool.capacity):
            return False
        stale: set[tuple[tuple[str, int], int]] = set()
        if rx.latched is not None and rx.source is not None:
            stale.add(((rx.latched[0], rx.latched[1]), rx.source.ssrc))
        now = time.monotonic()
        spare = leg._pair
        if spare is not None and spare.rtp is rtp_transport and spare.rtcp is rtcp_transport:
            # the pair's previous spare object, quarantined afresh (not rebuilt every call)
            leg._pair = None
            spare.closed_at = now
            spare.open = 2
            spare.closing = False
            spare.rtp_quarantine.quiet_since = spare.rtcp_quarantine.quiet_since = now
            spare.rtp_quarantine.stale = stale
            spare.rtcp_quarantine.stale = set()
        else:
            holder: list[_SparePair] = []

            def closed() -> None:
                self._on_spare_socket_closed(holder[0])

            spare = _SparePair(leg.local_port, now, rtp_transport, rtcp_transport,
                               QuarantineReceiver(now, stale, closed),
                               QuarantineReceiver(now, set(), closed))
            holder.append(spare)
        rtp_transport.set_protocol(spare.rtp_quarantine)
        rtcp_transport.set_protocol(spare.rtcp_quarantine)
        rx.transport = None
        rtcp.transport = None
        leg._sender.transport = None
        self._spares.append(spare)
        return True

    def _close_spare(self, spare: _SparePair) -> None:
        if spare.closing:
            return
        spare.closing = True
        self._releasing += 1
        for transport in (spare.rtp, spare.rtcp):
            if not transport.is_closing():
                transport.close()

    def _on_spare_socket_closed(self, spare: _SparePair) -> None:
        spare.open -= 1
        if not spare.closing:               # closed under us (a socket error)
            try:
                self._spares.remove(spare)
            except ValueError:
                pass
            self._close_spare(spare)
        if spare.open == 0:
            self._pool.give(spare.port)
            self._releasing -= 1
            self._released.set()

    def _trim_spares(self, now: float) -> None:
        """Close spare pairs nobody took within ``_SPARE_IDLE`` seconds of their leg's
        close (ports back to the pool; strays still coming then get ICMP errors)."""
        spares = self._spares
        while spares and now - spares[0].closed_at >= _SPARE_IDLE:
            self._close_spare(spares.popleft())

    def close_leg(self, leg: MediaLeg) -> None:
        """Unbridge, stop playing, drop taps, close both sockets; the ports go back to
        the pool once the loop has closed the sockets (``open_leg`` waits for that)."""
        if leg._closed:
            return
        if leg._peer is not None:           # (unbridged already, as call control does)
            self.unbridge(leg)
        leg._closed = True
        leg._expecting = False
        leg._player = None
        if leg.id in self._playing:
            del self._playing[leg.id]
        leg._digits = None
        if leg.id in self._sending:
            del self._sending[leg.id]
        if leg._taps:
            for tap in leg._taps:
                self._forget_tap(tap)
            leg._taps.clear()
        if leg._rx.tap_bufs is not None:
            self._update_tap_buffers(leg)
        if leg.id in self._tapped:
            del self._tapped[leg.id]
        if self._legs.get(leg.id) is leg:
            del self._legs[leg.id]
        self._closed_in += leg._rx.packets
        self._closed_out += leg._sender.packets
        if self._recycle(leg):
            return
        self._releasing += 1
        for transport in (leg._rx.transport, leg._rtcp.transport):
            if transport is not None:
                transport.close()

    def _on_socket_closed(self, leg: MediaLeg) -> None:
        leg._open_sockets -= 1
        if leg._open_sockets == 0:
            self._pool.give(leg.local_port)
            self._releasing -= 1
            self._released.set()

    def configure(self, leg: MediaLeg, config: LegConfig) -> None:
        """Apply the negotiated SDP of ``leg`` (call again after every offer/answer)."""
        if config.direction not in DIRECTIONS:
            raise ValueError(f"bad media direction {config.direction!r}")
        old = leg.config
        leg.config = config
        rx, sender = leg._rx, leg._sender
        te_pt = config.telephone_event_pt
        rx.te_pt = te_pt if te_pt is not None else -1
        # kept per mapping, as _pt_map's tables (EngineMediaPort shares the mappings)
        key = (id(config.payload_types), te_pt)
        facts = _FACTS.get(key)
        if facts is None or facts[0] is not config.payload_types:
            facts = _facts(config.payload_types, te_pt)
            if len(_FACTS) >= 256:
                del _FACTS[next(iter(_FACTS))]
            _FACTS[key] = facts
        rx.rate = sender.rate = facts[1]
        rx.silence = facts[2]   # shared: the relay only reads it
        leg._g711 = facts[3]
        usable = _usable(config.remote)
        if old is None or old.remote != config.remote:
            # a new SDP address: latch afresh (RFC 4961 §3)
            rx.latched = None
            rx.candidate = None
            sender.addr = usable
        expecting = config.direction == "sendrecv" and usable is not None
        if expecting and not leg._expecting:
            leg._expect_since = time.monotonic()
            leg._silence_reported = None
        leg._expecting = expecting
        if leg._taps or leg._rx.tap_bufs is not None:   # else nothing to update
            self._update_tap_buffers(leg)
        self._refresh(leg)

    # --- bridging ---

    def bridge(self, a: MediaLeg, b: MediaLeg) -> None:
        """Relay a <-> b.  Each leg keeps its output SSRC; sequence numbers and
        timestamps towards each phone continue across the change (relay.py)."""
        if a is b:
            raise MediaError("cannot bridge a leg to itself")
        if a._closed or b._closed:
            raise MediaError("cannot bridge a closed leg")
        if a._peer is b:
            return
        # (a leg without a peer relays nothing, its rx.out is None: no unbridge call)
        if a._peer is not None:
            self.unbridge(a)
        if b._peer is not None:
            self.unbridge(b)
        a._peer, b._peer = b, a
        a._sender.force_remap()
        b._sender.force_remap()
        self._refresh(a)

    def unbridge(self, leg: MediaLeg) -> None:
        """Stop relaying between the leg and its peer (their packets are then dropped)."""
        peer = leg._peer
        leg._peer = None
        leg._rx.out = None
        if peer is not None:
            peer._peer = None
            peer._rx.out = None

    def peer(self, leg: MediaLeg) -> MediaLeg | None:
        return leg._peer

    def _refresh(self, leg: MediaLeg) -> None:
        """Recompute the relay routes of the leg and its peer (after any change that
        affects who may send to whom)."""
        peer = leg._peer
        if peer is None:
            leg._rx.out = None
            return
        leg._rx.out = self._route(leg, peer)
        peer._rx.out = self._route(peer, leg)

    @staticmethod
    def _route(src: MediaLeg, dst: MediaLeg) -> _Sender | None:
        sender = dst._sender
        if (dst._player is not None or dst.config is None
                or dst.config.direction not in _SENDING or sender.addr is None
                or sender.transport is None):
            return None
        sender.pt_map = _pt_map(src.config, dst.config)
        return sender

    def _on_latch(self, leg: MediaLeg, addr: tuple[str, int]) -> None:
        address = (addr[0], addr[1])
        sdp = leg.config.remote if leg.config is not None else None
        if address != sdp:
            self._emit(RemoteLatched(leg_id=leg.id, address=address))
        if leg._peer is not None:
            self._refresh(leg)

    # --- taps ---

    def add_tap(self, leg: MediaLeg, tap: AudioTap) -> None:
        if leg._closed:
            raise MediaError("cannot tap a closed leg")
        if tap not in leg._taps:
            leg._taps.append(tap)
            key = id(tap)
            uses = self._tap_uses.get(key, 0)
            self._tap_uses[key] = uses + 1
            if not uses:        # its first leg (_forget_tap drops the hook with the last)
                end = getattr(tap, "on_tick_end", None)
                if callable(end):
                    self._tick_ends[key] = end
        self._tapped[leg.id] = leg
        self._update_tap_buffers(leg)

    def remove_tap(self, leg: MediaLeg, tap: AudioTap) -> None:
        if tap in leg._taps:
            leg._taps.remove(tap)
            self._forget_tap(tap)
        if not leg._taps:
            self._tapped.pop(leg.id, None)
        self._update_tap_buffers(leg)

    def _forget_tap(self, tap: AudioTap) -> None:
        uses = self._tap_uses.pop(id(tap), 1) - 1
        if uses:
            self._tap_uses[id(tap)] = uses
        else:
            self._tick_ends.pop(id(tap), None)

    @staticmethod
    def _update_tap_buffers(leg: MediaLeg) -> None:
        rx = leg._rx
        if not leg._taps:
            if rx.tap_bufs is None:
                return          # untapped already: nothing was buffered since (relay.py)
            rx.tap_bufs = None
            # (empty on a leg that received nothing since the tick: no clear() calls)
            if rx.ulaw:
                rx.ulaw.clear()
            if rx.alaw:
                rx.alaw.clear()
            if rx.events:
                rx.events.clear()
            return
        bufs: dict[int, list[bytes]] = {}
        for pt, alaw in leg._g711:
            bufs[pt] = rx.alaw if alaw else rx.ulaw
        rx.tap_bufs = bufs

    # --- playback ---

    def play(self, leg: MediaLeg, source: AudioSource) -> None:
        """Send ``source`` to the leg's phone, 20 ms packets in its first G.711 codec,
        instead of the relayed audio (replaces any playback in progress)."""
        if leg._closed:
            raise MediaError("cannot play to a closed leg")
        config = leg.config
        codec = None
        if config is not None:
            codec = next(((pt, c.name.upper()) for pt, c in config.payload_types.items()
                          if c.name.upper() in _G711), None)
        if codec is None:
            raise MediaError(f"leg {leg.id} has no G.711 codec negotiated to play with")
        loop = self._loop or asyncio.get_running_loop()
        leg._player = _Playback(FrameReader(source, FRAME_SAMPLES), codec[0], codec[1] == "PCMA",
                                loop.time())
        self._playing[leg.id] = leg
        self._refresh(leg)

    def stop_playing(self, leg: MediaLeg) -> None:
        if leg._player is None:
            return
        leg._player = None
        self._playing.pop(leg.id, None)
        self._refresh(leg)

    # --- the digit gate (feature codes; docs/MEDIA-API.md "Digit gate") ---

    def set_digit_gate(self, leg: MediaLeg, first_digits: str | None) -> None:
        """Hold back the leg's RFC 4733 digits that may begin a feature code.

        ``first_digits``: the keypad digits a code may start with; a telephone-event
        of one of them is not relayed to the peer, nor is any keypad digit while
        the leg is ``holding`` (``set_digit_hold``).  None removes the gate: every
        packet is relayed as it comes (no per-packet work at all)."""
        rx = leg._rx
        if first_digits is None:
            rx.gate = None
            rx.holding = False
            return
        gate = _GATES.get(first_digits)
        if gate is None:
            table = bytearray(256)
            for code in range(len(DIGITS)):
                table[code] = 2
            for digit in first_digits:
                table[event_code(digit)] = 1
            gate = bytes(table)
            if len(_GATES) < 64:
                _GATES[first_digits] = gate
        rx.gate = gate

    def set_digit_hold(self, leg: MediaLeg, *, hold: bool, mute: bool = False) -> None:
        """``hold``: a feature code may be in progress on the leg, its keypad events are
        not relayed (needs a gate).  ``mute``: its audio reaches the peer as silence
        of the same codec (in-band digits of a code), numbering untouched."""
        rx = leg._rx
        rx.holding = hold and rx.gate is not None
        rx.muted = mute

    def held_telephone_event(self, leg: MediaLeg, timestamp: int) -> bool:
        """Whether the gate held (did not relay) the leg's telephone-event of this RTP
        timestamp (one of the last few dozen events held)."""
        return timestamp in leg._rx.held_events

    def send_digits(self, leg: MediaLeg, digits: str, method: str | None = None) -> str:
        """Queue ``digits`` towards the leg's phone; sent on the tick, one after the other.

        ``method`` "rfc4733": telephone-events on the leg's negotiated PT, interleaved
        with what is relayed to it (its SSRC, sequence numbers continuing); "inband":
        G.711 tones through the player (the relay to the leg pauses meanwhile); None:
        RFC 4733 if the leg negotiated telephone-event, else in-band.  Returns the
        method used, or "" when the leg can take neither (nothing queued)."""
        for digit in digits:
            event_code(digit)                       # ValueError for a non-digit
        config = leg.config
        if leg._closed or config is None or not digits:
            return ""
        if method is None:
            method = "rfc4733" if config.telephone_event_pt is not None else "inband"
        if method not in DIGIT_METHODS:
            raise ValueError(f"bad digit method {method!r}")
        if method == "rfc4733" and config.telephone_event_pt is None:
            return ""
        if method == "inband" and not any(c.name.upper() in _G711
                                          for c in config.payload_types.values()):
            return ""
        queue = leg._digits
        if queue is None:
            queue = leg._digits = _DigitQueue()
        queue.pending.extend((digit.upper(), method) for digit in digits)
        self._sending[leg.id] = leg
        return method

    # --- the tick ---

    def _on_timer(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        try:
            self.tick(now)
        except Exception:
            _log.exception("media.tick_failed")
        self._next_tick += self.tick_interval
        if self._next_tick <= now:
            self._next_tick = now + self.tick_interval
        self._timer = loop.call_at(self._next_tick, self._on_timer)

    def tick(self, now: float) -> None:
        """One tick's work at loop time ``now`` (the timer calls it; tests may too)."""
        if self._tapped:
            self._run_taps(now)
        if self._sending:
            self._run_digits(now)
        if self._playing:
            self._run_players(now)
        if now >= self._next_inactivity_check:
            self._next_inactivity_check = now + self._inactivity_every
            self.check_inactivity(now)
        if now >= self._next_metrics_flush:
            self._next_metrics_flush = now + _METRICS_EVERY
            self._flush_metrics()
            if self._spares:
                self._trim_spares(time.monotonic())

    def _run_taps(self, now: float) -> None:
        # One decode per codec over all legs (DESIGN.md "Media and DTMF"), then
        # each leg's slice to its taps.  Most legs use one codec: µ-law slices
        # come from the first decode, A-law ones from the second.
        ulaw_parts: list[bytes] = []
        alaw_parts: list[bytes] = []
        work: list[tuple[MediaLeg, int, int]] = []
        append_work = work.append
        pending = self._pending
        if pending:
            legs = pending.copy()     # the receivers keep a reference to this list
            pending.clear()
        else:
            legs = []
        for leg in legs:
            rx = leg._rx
            rx.queued = False
            if rx.tap_bufs is None:   # untapped or closed since its packet came
                continue
            ulaw = rx.ulaw
            alaw = rx.alaw
            if ulaw:
                data = b"".join(ulaw)
                ulaw.clear()
                ulaw_parts.append(data)
                if alaw:
                    more = b"".join(alaw)
                    alaw.clear()
                    alaw_parts.append(more)
                    append_work((leg, len(data), len(more)))
                else:
                    append_work((leg, len(data), 0))
            elif alaw:
                data = b"".join(alaw)
                alaw.clear()
                alaw_parts.append(data)
                append_work((leg, 0, len(data)))
            elif rx.events:
                append_work((leg, 0, 0))
        # legs in the order their first packet of the tick came (each leg's own
        # events and audio stay in arrival order)
        ulaw_pcm = ulaw_decode(b"".join(ulaw_parts)) if ulaw_parts else _NO_PCM
        alaw_pcm = alaw_decode(b"".join(alaw_parts)) if alaw_parts else _NO_PCM
        at_u = at_a = 0
        for leg, n_u, n_a in work:
            if leg._rx.events:
                self._deliver_events(leg)
            pcm: Pcm
            if n_u:
                pcm = ulaw_pcm[at_u:at_u + n_u]
                at_u += n_u
                if n_a:
                    pcm = np.concatenate((pcm, alaw_pcm[at_a:at_a + n_a]))
                    at_a += n_a
            elif n_a:
                pcm = alaw_pcm[at_a:at_a + n_a]
                at_a += n_a
            else:
                continue
            for tap in leg._taps:
                try:
                    tap.on_audio(leg.id, pcm, now)
                except Exception:
                    _log.exception("media.tap_failed", leg_id=leg.id)
        # optional hook: a tap that batches over legs (DTMF over all channels) runs here
        for end in list(self._tick_ends.values()):
            try:
                end(now)
            except Exception:
                _log.exception("media.tap_failed")

    @staticmethod
    def _deliver_events(leg: MediaLeg) -> None:
        rx = leg._rx
        events = list(rx.events)
        rx.events.clear()
        for payload, ssrc, timestamp, marker, arrival in events:
            for tap in leg._taps:
                try:
                    tap.on_telephone_event(leg.id, payload, ssrc, timestamp, marker, arrival)
                except Exception:
                    _log.exception("media.tap_failed", leg_id=leg.id)

    def _run_digits(self, now: float) -> None:
        horizon = now + self.tick_interval / 2
        for leg in list(self._sending.values()):
            queue = leg._digits
            assert queue is not None
            while True:
                event = queue.event
                if event is not None:
                    while queue.sent < len(event) and \
                            queue.start + event[queue.sent].offset <= horizon:
                        self._send_event_packet(leg, queue, event[queue.sent])
                        queue.sent += 1
                    if queue.sent < len(event):
                        break
                    queue.event = None
                player = leg._player
                if player is not None and player.digits:
                    break                                   # our tones are playing
                if not queue.pending:
                    leg._digits = None
                    del self._sending[leg.id]
                    break
                if now < queue.next_at:
                    break
                digit, method = queue.pending.popleft()
                if method == "rfc4733":
                    self._start_event(leg, queue, digit, now)
                elif player is None:
                    tones = digit
                    while queue.pending and queue.pending[0][1] == "inband":
                        tones += queue.pending.popleft()[0]
                    self._start_tones(leg, tones, now)
                # else: call control plays to the leg (it hears that): the digit is dropped

    def _start_event(self, leg: MediaLeg, queue: _DigitQueue, digit: str, now: float) -> None:
        config = leg.config
        if config is None or config.telephone_event_pt is None:
            return                          # renegotiated meanwhile: dropped
        queue.event = telephone_event_packets(digit, DIGIT_ON, interval=FRAME_SAMPLES / 8000)
        queue.sent = 0
        queue.start = now
        queue.pt = config.telephone_event_pt
        queue.ts = leg._sender.position(time.monotonic())
        queue.next_at = now + DIGIT_ON + DIGIT_OFF

    @staticmethod
    def _send_event_packet(leg: MediaLeg, queue: _DigitQueue,
                           packet: TelephoneEventPacket) -> None:
        sender = leg._sender
        config = leg.config
        if (sender.addr is None or sender.transport is None or config is None
                or config.direction not in _SENDING):
            return
        seq = sender.next_injected()
        data = HEADER.pack(0x80, queue.pt | (0x80 if packet.marker else 0), seq, queue.ts,
                           sender.ssrc) + packet.payload
        sender.transport.sendto(data, sender.addr)
        sender.packets += 1
        sender.octets += len(data)

    def _start_tones(self, leg: MediaLeg, digits: str, now: float) -> None:
        config = leg.config
        codec = None if config is None else next(
            ((pt, c.name.upper()) for pt, c in config.payload_types.items()
             if c.name.upper() in _G711), None)
        if codec is None:
            return
        leg._player = _Playback(FrameReader(dtmf_tones(digits), FRAME_SAMPLES), codec[0],
                                codec[1] == "PCMA", now, digits=True)
        self._playing[leg.id] = leg
        self._refresh(leg)

    def _run_players(self, now: float) -> None:
        due: list[tuple[MediaLeg, _Playback, float, Pcm]] = []
        finished: list[MediaLeg] = []
        frame_time = FRAME_SAMPLES / 8000
        horizon = now + self.tick_interval / 2
        for leg in list(self._playing.values()):
            player = leg._player
            assert player is not None
            if now - player.next_time > _MAX_PLAYBACK_LAG:
                player.next_time = now
            while player.next_time <= horizon:
                frame = player.reader.next_frame()
                if frame is None:
                    finished.append(leg)
                    break
                due.append((leg, player, player.next_time, frame))
                player.next_time += frame_time
        if due:
            frames = np.stack([frame for _, _, _, frame in due])
            alaw = np.fromiter((player.alaw for _, player, _, _ in due), dtype=bool, count=len(due))
            codes = np.empty(frames.shape, dtype=np.uint8)
            if alaw.any():
                codes[alaw] = alaw_encode(frames[alaw])
            if not alaw.all():
                codes[~alaw] = ulaw_encode(frames[~alaw])
            for (leg, player, when, _), payload in zip(due, codes, strict=True):
                sender = leg._sender
                config = leg.config
                if (sender.addr is None or sender.transport is None or config is None
                        or config.direction not in _SENDING):
                    continue
                seq, ts, marker = sender.next_played(when, FRAME_SAMPLES)
                packet = HEADER.pack(0x80, player.pt | (0x80 if marker else 0), seq, ts,
                                     sender.ssrc) + payload.tobytes()
                sender.transport.sendto(packet, sender.addr)
                sender.packets += 1
                sender.octets += len(packet)
        for leg in finished:
            digits = leg._player is not None and leg._player.digits
            leg._player = None
            self._playing.pop(leg.id, None)
            self._refresh(leg)
            if not digits:
                self._emit(PlaybackFinished(leg_id=leg.id))

    def check_inactivity(self, now: float) -> None:
        """Report legs expecting media (direction sendrecv, an SDP address) that received
        no RTP for ``inactivity_timeout`` seconds; once per silence.  A held leg
        (sendonly/recvonly/inactive from our side, or c=0.0.0.0) is never reported."""
        timeout = self.inactivity_timeout
        if timeout <= 0:
            return
        for leg in list(self._legs.values()):
            if not leg._expecting:
                continue
            last = leg._rx.last_rx
            since = leg._expect_since if last is None or last < leg._expect_since else last
            if now - since >= timeout and leg._silence_reported != since:
                leg._silence_reported = since
                self._emit(MediaTimedOut(leg_id=leg.id))

    def _flush_metrics(self) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        total_in = self._closed_in
        total_out = self._closed_out
        for leg in self._legs.values():
            total_in += leg._rx.packets
            total_out += leg._sender.packets
        if total_in != self._reported_in:
            metrics.rtp_packets_in(total_in - self._reported_in)
            self._reported_in = total_in
        if total_out != self._reported_out:
            metrics.rtp_packets_out(total_out - self._reported_out)
            self._reported_out = total_out

    def _emit(self, event: MediaEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            _log.exception("media.event_handler_failed", media_event=type(event).__name__)
