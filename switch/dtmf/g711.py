"""G.711 µ-law and A-law codecs, table-based and vectorised.

The media layer reuses these for PCMU/PCMA (RFC 3551 §4.5.14).  Encoding is
one lookup in a 65 536-entry table indexed by the 16-bit linear sample;
decoding is one lookup in a 256-entry table.  The tables are built once, at
import, from the segment algorithm of ITU-T G.711, with the rounding of spandsp's
g711.h (the reference the benchmark compares against; its values are in
tests/vectors/dtmf/g711_spandsp.txt).

Linear samples are 16-bit two's complement (µ-law reaches ±32 124, A-law
±32 256).  A full-scale µ-law sine is +3.17 dBm0 (G.711 table 2a), so the
0 dBm0 sine has a peak of 22 656 in this scale.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "DBM0_SINE_PEAK",
    "alaw_decode",
    "alaw_decode_float",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_decode_float",
    "ulaw_encode",
]

DBM0_SINE_PEAK: Final = 22656.0
"""Peak of a 0 dBm0 sine in the 16-bit linear scale (µ-law digital milliwatt)."""

_ULAW_BIAS: Final = 0x84


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    linear = np.arange(-32768, 32768, dtype=np.int32)
    mask = np.where(linear < 0, 0x7F, 0xFF)
    mag = np.abs(linear) + _ULAW_BIAS
    # segment: position of the top bit above bit 7 (G.711 table 2a)
    seg_end = np.array([0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF])
    seg = np.searchsorted(seg_end, mag, side="left")
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> np.minimum(seg + 3, 10)) & 0x0F))
    table = (code ^ mask).astype(np.uint8)
    # index by the int16 bit pattern viewed as uint16
    return np.concatenate([table[32768:], table[:32768]])


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg_end = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(seg_end, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> shift) & 0x0F))
    table = (code ^ mask).astype(np.uint8)
    return np.concatenate([table[32768:], table[:32768]])


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = ((a & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENCODE: Final = _build_ulaw_encode()
_ULAW_DECODE: Final = _build_ulaw_decode()
_ULAW_DECODE_F32: Final = _ULAW_DECODE.astype(np.float32)
_ALAW_ENCODE: Final = _build_alaw_encode()
_ALAW_DECODE: Final = _build_alaw_decode()
_ALAW_DECODE_F32: Final = _ALAW_DECODE.astype(np.float32)


def _as_index(linear: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    samples = np.asarray(linear)
    if samples.dtype != np.int16:
        samples = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
    return samples.view(np.uint16)


def ulaw_encode(linear: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """µ-law code words of 16-bit linear samples (any shape; floats are rounded and clipped)."""
    return _ULAW_ENCODE[_as_index(linear)]


def ulaw_decode(codes: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """16-bit linear samples of µ-law code words (bytes or a uint8 array)."""
    return _ULAW_DECODE[_as_codes(codes)]


def ulaw_decode_float(codes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """µ-law code words decoded straight to float32 in the 16-bit scale (detector input)."""
    return _ULAW_DECODE_F32[_as_codes(codes)]


def alaw_encode(linear: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """A-law code words of 16-bit linear samples (any shape; floats are rounded and clipped)."""
    return _ALAW_ENCODE[_as_index(linear)]


def alaw_decode(codes: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """16-bit linear samples of A-law code words (bytes or a uint8 array)."""
    return _ALAW_DECODE[_as_codes(codes)]


def alaw_decode_float(codes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """A-law code words decoded straight to float32 in the 16-bit scale (detector input)."""
    return _ALAW_DECODE_F32[_as_codes(codes)]


def _as_codes(codes: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    if isinstance(codes, (bytes, bytearray, memoryview)):
        return np.frombuffer(codes, dtype=np.uint8)
    return np.asarray(codes, dtype=np.uint8)
