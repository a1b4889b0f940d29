"""The per-packet path: one ``_RtpReceiver`` (asyncio DatagramProtocol) per leg,
and the ``_Sender`` state that rewrites packets towards a leg's phone.

Theory of operation.  A packet that arrives on leg A's RTP socket is checked
(length, version 2, header bounds — RFC 3550 §5.1), its source is checked
against the latched address (symmetric RTP, RFC 4961 §3), it is accounted
(packets, octets, RFC 3550 A.1/A.3/A.8 in ``SourceStats``), and if A is
bridged to B and B may be sent to, a copy with B's output SSRC, sequence
number and timestamp is sent from B's socket to B's phone.  That is a
translator in the sense of RFC 3550 §7.1 that hides the re-bridge: each leg's
phone sees one SSRC for the whole call, and when the stream it is fed from
changes (re-bridge, the source's SSRC changes, a playback starts or ends)
the sequence number continues at last + 1 and the timestamp at last +
the elapsed time (at least one 20 ms frame), with the marker bit set on that
first packet (RFC 3551 §4.1: the receiver resynchronises its playout point).

Nothing else happens per packet: no logging, no metrics calls (the engine
sums the ints once a second), no decoding (payloads of tapped legs are
appended to per-codec lists; the tick decodes them, batched over legs).  A
tapped leg's first packet of a tick puts the leg on the engine's ``pending``
list, so the tick visits only the legs that received something: a silent,
held or signalling-only leg costs the tick nothing.

DTMF feature codes (docs/MEDIA-API.md "Digit gate").  A leg whose keypad may
start a feature code has a *gate*: a 256-entry table by RFC 4733 §3.2 event
code, 1 for a digit that may start a code, 2 for any other keypad digit
(None, the default: no gate, nothing below happens).  A telephone-event
packet is not relayed when its event is the one already held (same RTP
timestamp, §2.5.1.2: every packet of an event carries its start), when its
code may start a code, or when it is a keypad digit while ``holding`` (the
feature matcher holds digits; the DTMF wiring sets and clears it on the
tick, and holding a start digit sets it at once so that the digits after it
in the same tick are held too).  Held events' timestamps are remembered
(``held_events``) so that the wiring knows which digits the peer has not
heard; it regenerates the released ones (engine ``send_digits``).  The
peer's sequence numbers stay continuous across held packets.  ``muted``
replaces the payload of every audio packet with silence of its codec (one
byte per PT in ``silence``; a PT without one is dropped): in-band tones of
a code in progress do not reach the peer, and sequence numbers and
timestamps are untouched.  RTCP is
received and counted on its own socket and not relayed: the reports describe
sequence numbers and SSRCs this translator rewrites, so relaying them
unchanged would be wrong (§7.2); the engine sends no RTCP of its own yet.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from switch.media.rtp import HEADER, REWRITE, payload_bounds
from switch.media.stats import SourceStats

if TYPE_CHECKING:
    from switch.media.engine import MediaLeg

__all__ = ["FRAME_SAMPLES", "PLAYER_SOURCE", "QuarantineReceiver", "TelephoneEventRecord"]

FRAME_SAMPLES: Final = 160
"""20 ms at 8 kHz: the packetisation of ``play`` and the minimum timestamp step
at a stream change (RFC 3551 §4.2 default packet time)."""

PLAYER_SOURCE: Final = -2
"""``_Sender.src_ssrc`` while the engine's own player feeds the leg."""
_REMAP: Final = -1
"""``_Sender.src_ssrc`` when the next relayed packet must recompute the offsets."""

TelephoneEventRecord = tuple[bytes, int, int, bool, float]
"""(payload, SSRC, timestamp, marker, arrival time) of one RFC 4733 packet."""

_HELD_MEMORY: Final = 64
"""Timestamps of held telephone events remembered for ``MediaEngine.held_telephone_event``."""

_unpack_header = HEADER.unpack_from
_rewrite_into = REWRITE.pack_into
_monotonic = time.monotonic


class _Sender:
    """Output state towards one leg's phone (the translator's side of RFC 3550 §7.1)."""

    __slots__ = ("addr", "last_seq", "last_time", "last_ts", "octets", "packets", "pt_map",
                 "rate", "seq_off", "src_ssrc", "ssrc", "transport", "ts_off")

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.addr: tuple[str, int] | None = None
        # RFC 3550 §8.1: chosen at random, one per leg for the whole call; the
        # initial sequence number and timestamp too (§5.1): 32 + 16 + 32 random bits
        bits = random.getrandbits(80)
        self.ssrc = bits & 0xFFFFFFFF
        self.src_ssrc = _REMAP
        self.seq_off = 0
        self.ts_off = 0
        self.last_seq = (bits >> 32) & 0xFFFF
        self.last_ts = bits >> 48
        self.last_time: float | None = None
        self.rate = 8000
        self.pt_map: bytes | None = None
        """Incoming PT -> outgoing PT (0xFF: drop), None when every PT passes unchanged."""
        self.packets = 0
        self.octets = 0

    def remap(self, seq: int, ts: int, ssrc: int, now: float) -> int:
        """Offsets for a new input stream; returns the marker bit to set (0 or 0x80)."""
        self.src_ssrc = ssrc
        if self.last_time is None:
            # nothing sent yet: the first stream's numbers pass through (only the SSRC changes)
            self.seq_off = 0
            self.ts_off = 0
            return 0
        step = max(round((now - self.last_time) * self.rate), FRAME_SAMPLES)
        self.seq_off = (self.last_seq + 1 - seq) & 0xFFFF
        self.ts_off = (self.last_ts + step - ts) & 0xFFFFFFFF
        return 0x80

    def next_played(self, now: float, samples: int) -> tuple[int, int, bool]:
        """Sequence number, timestamp and marker of the next packet of the engine's player."""
        if self.src_ssrc != PLAYER_SOURCE:
            self.src_ssrc = PLAYER_SOURCE
            marker = True
            if self.last_time is None:
                seq, ts = (self.last_seq + 1) & 0xFFFF, self.last_ts
            else:
                step = max(round((now - self.last_time) * self.rate), FRAME_SAMPLES)
                seq, ts = (self.last_seq + 1) & 0xFFFF, (self.last_ts + step) & 0xFFFFFFFF
        else:
            marker = False
            seq, ts = (self.last_seq + 1) & 0xFFFF, (self.last_ts + samples) & 0xFFFFFFFF
        self.last_seq, self.last_ts, self.last_time = seq, ts, now
        return seq, ts, marker

    def position(self, now: float) -> int:
        """The stream's RTP timestamp at ``now`` (``time.monotonic()``): the last one sent
        plus the time since; the start of an RFC 4733 event the engine adds."""
        if self.last_time is None:
            self.last_time = now            # a relay starting later continues from here
            return self.last_ts
        return (self.last_ts + round((now - self.last_time) * self.rate)) & 0xFFFFFFFF

    def next_injected(self) -> int:
        """Sequence number of a packet the engine adds to the stream (a regenerated
        RFC 4733 digit): last + 1; relayed packets after it are shifted by one."""
        seq = (self.last_seq + 1) & 0xFFFF
        self.last_seq = seq
        if self.src_ssrc >= 0:
            self.seq_off = (self.seq_off + 1) & 0xFFFF
        return seq

    def force_remap(self) -> None:
        self.src_ssrc = _REMAP


class _RtpReceiver(asyncio.DatagramProtocol):
    """Leg's RTP socket: validate, latch, account, rewrite and relay, buffer for taps."""

    __slots__ = ("alaw", "candidate", "candidate_count", "candidate_mark", "events", "gate",
                 "held_events", "held_ts", "holding", "ignored", "last_rx", "latched",
                 "malformed", "muted", "octets", "on_closed", "on_latch", "out", "owner",
                 "packets", "pending", "queued", "rate", "relatch_packets", "sender",
                 "silence", "source", "stale", "tap_bufs", "te_pt", "transport", "ulaw")

    def __init__(self, sender: _Sender, relatch_packets: int,
                 on_latch: Callable[[tuple[str, int]], None],
                 on_closed: Callable[[], None],
                 pending: list[MediaLeg] | None = None) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.on_closed = on_closed
        self.sender = sender                      # this leg's own output (latching updates it)
        self.out: _Sender | None = None           # the bridged peer's output, if relaying
        self.latched: tuple[str, int] | None = None
        self.candidate: tuple[str, int] | None = None
        self.candidate_count = 0
        self.candidate_mark = 0
        self.relatch_packets = relatch_packets
        self.on_latch = on_latch
        self.stale: frozenset[tuple[tuple[str, int], int]] = frozenset()
        """(source, SSRC) of the streams the socket's previous leg received (a recycled
        pair, ``QuarantineReceiver``): never latched to, never relayed."""
        self.source: SourceStats | None = None
        self.te_pt = -1
        self.rate = 8000
        self.packets = 0
        self.octets = 0
        self.malformed = 0
        self.ignored = 0
        self.last_rx: float | None = None
        self.tap_bufs: dict[int, list[bytes]] | None = None
        self.ulaw: list[bytes] = []
        self.alaw: list[bytes] = []
        self.events: list[TelephoneEventRecord] = []
        # the tick visits only tapped legs that received something: the first packet
        # buffered since the last tick appends ``owner`` to the engine's ``pending``
        # (measured: the tick's loop over every tapped leg, and the taps' per-tick work
        # it drove, were ~6 % of the engine's samples under 300 signalling-only
        # calls/s, where no leg ever buffers anything)
        self.owner: MediaLeg | None = None
        self.pending: list[MediaLeg] = [] if pending is None else pending
        self.queued = False
        # the digit gate (module docstring); None: feature codes off, no per-packet work
        self.gate: bytes | None = None
        self.holding = False
        self.held_ts = -1
        self.held_events: deque[int] = deque(maxlen=_HELD_MEMORY)
        self.muted = False
        self.silence: dict[int, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not all inherit from asyncio.DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        n = len(data)
        # RFC 3550 §5.1: 12 octets at least, V = 2 (A.1 checks)
        if n < 12 or data[0] & 0xC0 != 0x80:
            self.malformed += 1
            return
        first, second, seq, ts, ssrc = _unpack_header(data)
        if first & 0x3F:  # CSRC list, extension or padding
            bounds = payload_bounds(data)
            if bounds is None:
                self.malformed += 1
                return
            start, end = bounds
        else:
            start, end = 12, n
        if addr != self.latched and not self._other_source(addr, ssrc):
            return
        now = _monotonic()
        self.packets += 1
        self.octets += n
        self.last_rx = now
        source = self.source
        if source is None or ssrc != source.ssrc:
            source = self._new_source(ssrc, seq, ts, now)
        pt = second & 0x7F
        source.received_packet(seq, ts, now * self.rate, pt != self.te_pt)

        out = self.out
        gate = self.gate
        if gate is not None and pt == self.te_pt and end - start >= 4:
            # checked even when nothing is relayed now (the peer is playing or gone): a
            # digit the peer did not get is regenerated if the matcher releases it
            held = gate[data[start]]
            if ts == self.held_ts or held == 1 or (held and self.holding):
                self._hold_event(ts, ssrc, out)
                out = None
        if out is not None:
            marker = 0
            if ssrc != out.src_ssrc:
                marker = out.remap(seq, ts, ssrc, now)
            packet = bytearray(data)
            if self.muted and pt != self.te_pt:
                fill = self.silence.get(pt)
                if fill is None:            # no silence known for this codec: not relayed
                    out.seq_off = (out.seq_off - 1) & 0xFFFF
                    out = None
                else:
                    packet[start:end] = fill * (end - start)
        if out is not None:
            seq_out = (seq + out.seq_off) & 0xFFFF
            ts_out = (ts + out.ts_off) & 0xFFFFFFFF
            _rewrite_into(packet, 2, seq_out, ts_out, out.ssrc)
            pt_out = pt
            pt_map = out.pt_map
            if pt_map is not None or marker:
                if pt_map is not None:
                    pt_out = pt_map[pt]     # 0xFF: the peer did not negotiate it
                if pt_out != 0xFF:
                    packet[1] = (second & 0x80) | marker | pt_out
            if pt_out != 0xFF:
                out.transport.sendto(packet, out.addr)  # type: ignore[union-attr]
                out.packets += 1
                out.octets += n
            out.last_seq = seq_out
            out.last_ts = ts_out
            out.last_time = now

        bufs = self.tap_bufs
        if bufs is not None:
            if not self.queued and self.owner is not None:
                self.queued = True
                self.pending.append(self.owner)
            if pt == self.te_pt:
                self.events.append((data[start:end], ssrc, ts, bool(second & 0x80), now))
            else:
                chunks = bufs.get(pt)
                if chunks is not None:
                    chunks.append(data[start:end])

    def _hold_event(self, ts: int, ssrc: int, out: _Sender | None) -> None:
        """Do not relay this telephone-event packet (the digit gate, module docstring)."""
        if ts != self.held_ts:
            self.held_ts = ts
            self.held_events.append(ts)
            self.holding = True
        if out is not None and ssrc == out.src_ssrc:
            out.seq_off = (out.seq_off - 1) & 0xFFFF     # no gap in the peer's numbering

    def _other_source(self, addr: tuple[str, int], ssrc: int) -> bool:
        """Symmetric RTP (RFC 4961): latch to the first source; after that, accept a
        new source only once it has sent ``relatch_packets`` packets in a row with
        nothing from the latched one in between (a NAT rebinding, not an injection).
        A stream of the socket's previous call (``stale``) is never accepted."""
        if self.stale and (addr, ssrc) in self.stale:
            self.ignored += 1
            return False
        if self.latched is not None:
            if addr != self.candidate or self.packets != self.candidate_mark:
                self.candidate = addr
                self.candidate_count = 0
                self.candidate_mark = self.packets
            self.candidate_count += 1
            if self.candidate_count < self.relatch_packets:
                self.ignored += 1
                return False
        self.latched = addr
        self.candidate = None
        self.sender.addr = addr
        self.on_latch(addr)
        return True

    def _new_source(self, ssrc: int, seq: int, ts: int, now: float) -> SourceStats:
        previous = self.source
        source = SourceStats(ssrc, seq, ts, now * self.rate)
        if previous is not None:
            # keep the leg's totals across SSRC changes (RFC 3550 keeps them per source)
            source.resync_expected = previous.total_expected
            source.resync_received = previous.total_received
        self.source = source
        return source

    def connection_lost(self, exc: Exception | None) -> None:
        self.out = None
        self.on_closed()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a phone that went away: the inactivity timer reports it
        pass


class _RtcpReceiver(asyncio.DatagramProtocol):
    """Leg's RTCP socket (RTP port + 1): count and drop (see the module docstring)."""

    __slots__ = ("malformed", "on_closed", "packets", "transport")

    def __init__(self, on_closed: Callable[[], None]) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.on_closed = on_closed
        self.packets = 0
        self.malformed = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # RFC 3550 §6.1 / A.2: version 2, a known packet type (SR 200 .. APP 204, 205/206 RFC 4585)
        if len(data) >= 8 and data[0] & 0xC0 == 0x80 and 200 <= data[1] <= 206:
            self.packets += 1
        else:
            self.malformed += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_closed()

    def error_received(self, exc: Exception) -> None:
        pass


_STALE_MEMORY: Final = 8
"""(source, SSRC) pairs a quarantined socket remembers."""


class QuarantineReceiver(asyncio.DatagramProtocol):
    """A closed leg's socket kept bound for the next leg (engine.py "Recycled port
    pairs"): drops everything, and remembers when and from whom the last stray
    packet of the previous call came."""

    __slots__ = ("on_closed", "quiet_since", "stale")

    def __init__(self, quiet_since: float, stale: set[tuple[tuple[str, int], int]],
                 on_closed: Callable[[], None]) -> None:
        self.quiet_since = quiet_since
        """``time.monotonic()`` of the close or of the last stray RTP packet since."""
        self.stale = stale
        self.on_closed = on_closed

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.quiet_since = _monotonic()
        if len(data) >= 12 and data[0] & 0xC0 == 0x80 and len(self.stale) < _STALE_MEMORY:
            self.stale.add(((addr[0], addr[1]), int.from_bytes(data[8:12], "big")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_closed()

    def error_received(self, exc: Exception) -> None:
        pass
