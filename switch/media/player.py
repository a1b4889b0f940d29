"""Cuts an ``AudioSource`` into 20 ms frames for ``MediaEngine.play`` (sans I/O).

The engine encodes the frames of all playing legs on its tick (RFC 3551 §4.5.14
G.711, 160 samples = 20 ms at 8 kHz, §4.2 default packet time); the last,
short frame is padded with silence.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from switch.media.model import AudioSource, Pcm

__all__ = ["FrameReader"]


class FrameReader:
    """Frames of ``frame`` samples from one array or an iterable of arrays of any length."""

    __slots__ = ("_chunks", "_frame", "_pending")

    def __init__(self, source: AudioSource, frame: int = 160) -> None:
        chunks: Iterator[Pcm] = iter((source,)) if isinstance(source, np.ndarray) else iter(source)
        self._chunks = chunks
        self._frame = frame
        self._pending: Pcm = np.zeros(0, dtype=np.int16)

    def next_frame(self) -> Pcm | None:
        """The next frame, or None once the source is exhausted."""
        frame = self._frame
        pending = self._pending
        while len(pending) < frame:
            chunk = next(self._chunks, None)
            if chunk is None:
                if not len(pending):
                    return None
                padded = np.zeros(frame, dtype=np.int16)
                padded[:len(pending)] = pending
                self._pending = pending[:0]
                return padded
            samples = np.asarray(chunk).ravel()
            if samples.dtype != np.int16:
                samples = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
            pending = np.concatenate((pending, samples)) if len(pending) else samples
        self._pending = pending[frame:]
        return pending[:frame]
