"""RFC 3550 reception statistics (A.1 sequence validation, A.3 loss, A.8 jitter),
checked against values computed by hand from the RFC's formulas."""

from __future__ import annotations

import pytest

from switch.media.stats import MAX_DROPOUT, SourceStats


def feed(seqs: list[int], *, ts_step: int = 160) -> SourceStats:
    """Packets with the given sequence numbers, timestamps and arrivals in step (no jitter)."""
    first = seqs[0]
    stats = SourceStats(0x1234, first, 0, 0.0)
    for seq in seqs:
        offset = ((seq - first) & 0xFFFF) * ts_step
        stats.received_packet(seq, offset, float(offset))
    return stats


def test_in_order_stream_after_probation() -> None:
    # A.1: the first packet is probation; the second validates the source and is base_seq
    stats = feed(list(range(100, 110)))
    assert stats.base_seq == 101
    assert stats.received == 9
    assert stats.expected == 9
    assert stats.lost == 0
    assert stats.jitter == 0.0


def test_probation_counts_nothing() -> None:
    stats = SourceStats(1, 500, 0, 0.0)
    stats.received_packet(500, 0, 0.0)
    assert stats.probation == 1
    assert stats.expected == 0 and stats.received == 0 and stats.lost == 0
    # out of sequence during probation: probation restarts (MIN_SEQUENTIAL - 1 to go)
    stats.received_packet(900, 160, 160.0)
    assert stats.probation == 1
    stats.received_packet(901, 320, 320.0)
    assert stats.probation == 0 and stats.base_seq == 901 and stats.received == 1


def test_one_lost_packet_and_fraction_lost() -> None:
    stats = feed([100, 101, 102, 104, 105])
    # base 101, max 105: expected 5 (101..105), received 4 (101, 102, 104, 105)
    assert stats.expected == 5
    assert stats.received == 4
    assert stats.lost == 1
    # A.3: (lost_interval << 8) / expected_interval = 256 / 5 = 51
    assert stats.fraction_lost() == 51
    # next interval: 106..109 all received
    for seq in range(106, 110):
        stats.received_packet(seq, (seq - 100) * 160, float((seq - 100) * 160))
    assert stats.fraction_lost() == 0
    assert stats.lost == 1


def test_sequence_wrap_counts_a_cycle() -> None:
    stats = feed([65533, 65534, 65535, 0, 1])
    assert stats.cycles == 65536
    assert stats.extended_max == 65537
    # base 65534 .. extended 65537: 4 expected, 4 received
    assert stats.expected == 4 and stats.received == 4 and stats.lost == 0


def test_duplicate_makes_lost_negative() -> None:
    stats = feed([100, 101, 102, 102])
    assert stats.expected == 2 and stats.received == 3
    assert stats.lost == -1  # RFC 3550 §6.4.1: may be negative with duplicates


def test_reordered_packet_is_not_lost() -> None:
    stats = feed([100, 101, 102, 104, 103, 105])
    assert stats.expected == 5 and stats.received == 5 and stats.lost == 0


def test_restarted_sender_is_resynchronised() -> None:
    stats = feed([10, 11, 12, 13])
    assert (stats.expected, stats.received) == (3, 3)
    jump = 13 + MAX_DROPOUT + 1000
    stats.received_packet(jump, 0, 0.0)        # A.1: a big jump alone is not believed
    assert stats.max_seq == 13 and stats.bad_seq == jump + 1
    stats.received_packet(jump + 1, 160, 160.0)  # the next in sequence: resync
    assert stats.base_seq == jump + 1 and stats.max_seq == jump + 1
    # totals carry the earlier sequence space: 3 + 1 expected, 3 + 1 received
    assert stats.total_expected == 4 and stats.total_received == 4 and stats.lost == 0


def test_jitter_hand_computed() -> None:
    # A.8 with arrivals in timestamp units (8 kHz): ts step 160
    stats = SourceStats(7, 1, 0, 0.0)
    arrivals = [0.0, 160.0, 340.0, 480.0, 640.0]
    for i, arrival in enumerate(arrivals):
        stats.received_packet(1 + i, 160 * i, arrival)
    # D = 0 -> J = 0;  D = 180-160 = 20 -> J = 20/16 = 1.25
    # D = 140-160 = -20 -> J = 1.25 + (20 - 1.25)/16 = 2.421875
    # D = 160-160 = 0 -> J = 2.421875 - 2.421875/16 = 2.27050781...
    expected = 0.0
    for d in (0, 20, 20, 0):
        expected += (d - expected) / 16
    assert expected == pytest.approx(2.2705078125)
    assert stats.jitter == pytest.approx(expected)


def test_jitter_across_timestamp_wrap() -> None:
    stats = SourceStats(7, 1, 0xFFFFFF60, 0.0)
    stats.received_packet(1, 0xFFFFFF60, 0.0)
    stats.received_packet(2, 0x00000000, 160.0)   # +160 modulo 2^32
    stats.received_packet(3, 0x000000A0, 336.0)   # 16 late: D = 16
    assert stats.jitter == pytest.approx(1.0)


def test_untimed_packets_are_left_out_of_jitter() -> None:
    # RFC 4733 packets repeat the event's start timestamp: they must not count as jitter
    stats = SourceStats(7, 1, 0, 0.0)
    stats.received_packet(1, 0, 0.0)
    stats.received_packet(2, 160, 160.0)
    stats.received_packet(3, 160, 320.0, timed=False)
    stats.received_packet(4, 160, 480.0, timed=False)
    stats.received_packet(5, 640, 640.0)
    assert stats.jitter == 0.0
    assert stats.received == 4 and stats.lost == 0
