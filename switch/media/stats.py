"""Reception statistics of one RTP source: RFC 3550 §6.4.1 with the algorithms of
Appendix A.1 (sequence validation), A.3 (expected and lost packets) and A.8
(interarrival jitter).

Sans I/O: the relay passes the arrival time already converted to timestamp
units (seconds × clock rate), so tests feed hand-made arrivals.

A.1 in short: a new source is on probation until ``MIN_SEQUENTIAL`` packets
arrive in sequence; then ``base_seq`` is the packet that validated it.  A jump
of less than ``MAX_DROPOUT`` ahead counts as in order (the gap is loss); a
jump by more, unless it is the packet after a previous such jump (the sender
restarted: resynchronise), is dropped; up to ``MAX_MISORDER`` behind is a
late or duplicate packet, counted as received.  So ``lost`` (A.3: expected −
received) is negative after duplicates, as the RFC says it may be.

A.8: ``D(i-1,i) = (R_i − R_{i-1}) − (S_i − S_{i-1})``,
``J += (|D| − J) / 16``, in timestamp units.  The first packet sets the
reference (D is not defined before it).  Timestamps are compared modulo 2^32.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_DROPOUT", "MAX_MISORDER", "MIN_SEQUENTIAL", "SourceStats"]

MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100
MIN_SEQUENTIAL: Final = 2
_SEQ_MOD: Final = 1 << 16


class SourceStats:
    """Sequence state, loss and jitter of one SSRC (RFC 3550 A.1, A.3, A.8)."""

    __slots__ = ("bad_seq", "base_seq", "cycles", "expected_prior", "jitter", "last_arrival",
                 "last_ts", "max_seq", "probation", "received", "received_prior",
                 "resync_expected", "resync_received", "ssrc")

    def __init__(self, ssrc: int, seq: int, ts: int, arrival: float) -> None:
        """The source's first packet: A.1 ``init_seq`` + probation; A.8 reference point.

        The packet itself must then be passed to ``received`` as usual.
        """
        self.ssrc = ssrc
        self._init_seq(seq)
        self.max_seq = (seq - 1) & 0xFFFF
        self.probation = MIN_SEQUENTIAL
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        # what earlier sequence spaces (before a resynchronisation) expected and got
        self.resync_expected = 0
        self.resync_received = 0
        self.jitter = 0.0
        self.last_arrival = arrival
        self.last_ts = ts

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1  # so seq == bad_seq is false
        self.cycles = 0

    def received_packet(self, seq: int, ts: int, arrival: float, timed: bool = True) -> None:
        """Account one packet: sequence number ``seq``, RTP timestamp ``ts``, arrival
        time in timestamp units.  ``timed`` is False for packets whose timestamp
        does not advance with the media clock (RFC 4733 events keep the event's
        start timestamp), which are left out of the jitter."""
        # A.1 update_seq
        max_seq = self.max_seq
        udelta = (seq - max_seq) & 0xFFFF
        if self.probation:
            if seq == (max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if not self.probation:
                    self._init_seq(seq)
                    self.received += 1
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
        elif udelta < MAX_DROPOUT:
            if seq < max_seq:
                self.cycles += _SEQ_MOD  # wrapped
            self.max_seq = seq
            self.received += 1
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                # two sequential packets after a big jump: the sender restarted
                self.resync_expected += self.expected
                self.resync_received += self.received
                self.received = 0
                self._init_seq(seq)
                self.received += 1
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
        else:
            self.received += 1  # duplicate or reordered
        # A.8 interarrival jitter
        if timed:
            d = (arrival - self.last_arrival) - (((ts - self.last_ts + 0x80000000) & 0xFFFFFFFF)
                                                 - 0x80000000)
            if d < 0:
                d = -d
            self.jitter += (d - self.jitter) / 16
            self.last_arrival = arrival
            self.last_ts = ts

    @property
    def extended_max(self) -> int:
        """Extended highest sequence number received (A.3: cycles + max_seq)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected in the current sequence space (A.3); 0 while on probation."""
        if self.probation:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def total_expected(self) -> int:
        return self.resync_expected + self.expected

    @property
    def total_received(self) -> int:
        return self.resync_received + self.received

    @property
    def lost(self) -> int:
        """Cumulative number of packets lost (A.3; negative after duplicates)."""
        return self.total_expected - self.total_received

    def fraction_lost(self) -> int:
        """Fraction lost since the previous call, as the 8-bit fixed point of a report
        block (A.3: ``(lost_interval << 8) / expected_interval``, 0 if none lost)."""
        expected = self.total_expected
        received = self.total_received
        expected_interval = expected - self.expected_prior
        received_interval = received - self.received_prior
        self.expected_prior = expected
        self.received_prior = received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return (lost_interval << 8) // expected_interval
