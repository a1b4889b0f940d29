"""The RTP port pool (sans I/O) and the frame reader of ``play``."""

from __future__ import annotations

import numpy as np
import pytest

from switch.media.errors import MediaUnavailable
from switch.media.player import FrameReader
from switch.media.ports import PortPool


def test_even_rtp_ports_with_rtcp_inside_the_range() -> None:
    pool = PortPool(20001, 20010)
    # 20001 is odd: start at 20002; 20010 has no 20011 in range
    assert pool.capacity == 4
    assert [pool.take() for _ in range(4)] == [20002, 20004, 20006, 20008]
    with pytest.raises(MediaUnavailable):
        pool.take()


def test_returned_ports_are_reused_last() -> None:
    pool = PortPool(30000, 30005)
    first = pool.take()
    pool.give(first)
    assert pool.take() == 30002 and pool.take() == 30004 and pool.take() == first


def test_foreign_ports_and_bad_ranges_are_refused() -> None:
    pool = PortPool(30000, 30005)
    with pytest.raises(ValueError):
        pool.give(30001)
    with pytest.raises(ValueError):
        PortPool(30010, 30000)
    assert PortPool(30000, 30000).capacity == 0


def test_frames_from_an_array_with_the_last_one_padded() -> None:
    samples = np.arange(400, dtype=np.int16)
    reader = FrameReader(samples)
    frames = [reader.next_frame() for _ in range(3)]
    assert reader.next_frame() is None
    assert all(f is not None and len(f) == 160 for f in frames)
    assert np.array_equal(np.concatenate(frames)[:400], samples)  # type: ignore[arg-type]
    assert not np.concatenate(frames)[400:].any()  # type: ignore[arg-type]


def test_frames_from_a_generator_of_odd_chunks() -> None:
    chunks = [np.full(n, i, dtype=np.int16) for i, n in enumerate((100, 30, 250))]
    reader = FrameReader(iter(chunks))
    first, second, third = (reader.next_frame() for _ in range(3))
    assert reader.next_frame() is None
    joined = np.concatenate([first, second, third])
    assert np.array_equal(joined[:380], np.concatenate(chunks))
    assert not joined[380:].any()


def test_float_sources_are_rounded_and_clipped() -> None:
    reader = FrameReader(np.array([1.6, -40000.0, 40000.0] * 60))
    frame = reader.next_frame()
    assert frame is not None and frame.dtype == np.int16
    assert list(frame[:3]) == [2, -32768, 32767]


def test_empty_source() -> None:
    assert FrameReader(np.zeros(0, dtype=np.int16)).next_frame() is None
    assert FrameReader(iter([])).next_frame() is None
