from __future__ import annotations

from pathlib import Path

import numpy as np

from switch.dtmf import g711

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "dtmf" / "g711_spandsp.txt"


def _vectors() -> np.ndarray:
    rows = [
        [int(v) for v in line.split()]
        for line in VECTORS.read_text().splitlines()
        if line and not line.startswith("#")
    ]
    return np.array(rows)


def test_encode_decode_match_spandsp_vectors() -> None:
    v = _vectors()
    linear = v[:, 0].astype(np.int16)
    assert np.array_equal(g711.ulaw_encode(linear), v[:, 1])
    assert np.array_equal(g711.alaw_encode(linear), v[:, 2])
    assert np.array_equal(g711.ulaw_decode(v[:, 1].astype(np.uint8)), v[:, 3])
    assert np.array_equal(g711.alaw_decode(v[:, 2].astype(np.uint8)), v[:, 4])


def test_known_code_words() -> None:
    assert g711.ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00])).tolist() == [0, 0, 32124, -32124]
    assert g711.alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A])).tolist() == [8, -8, 32256, -32256]


def test_every_code_word_round_trips() -> None:
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(g711.alaw_encode(g711.alaw_decode(codes)), codes)
    back = g711.ulaw_encode(g711.ulaw_decode(codes))
    # µ-law has two zeros (0x7F, 0xFF); everything else maps to itself
    assert np.array_equal(back[codes != 0x7F], codes[codes != 0x7F])


def test_quantisation_is_monotonic_and_bounded() -> None:
    x = np.arange(-32768, 32768).astype(np.int16)
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        y = dec(enc(x)).astype(np.int64)
        assert np.all(np.diff(y) >= 0)
        # segment steps are 1/16 of the segment: the error stays a few percent
        err = np.abs(y - x.astype(np.int64))
        assert np.all(err <= 0.04 * np.abs(x.astype(np.int64)) + 8)


def test_float_input_rounds_and_clips_and_keeps_shape() -> None:
    block = np.array([[0.4, -0.4, 1e9], [-1e9, 1000.2, -1000.7]])
    codes = g711.ulaw_encode(block)
    assert codes.shape == (2, 3) and codes.dtype == np.uint8
    assert (
        codes.tolist()
        == g711.ulaw_encode(
            np.array([[0, 0, 32767], [-32768, 1000, -1001]], dtype=np.int16)
        ).tolist()
    )
    assert g711.ulaw_decode_float(codes).dtype == np.float32
    assert np.array_equal(
        g711.alaw_decode_float(g711.alaw_encode(block)), g711.alaw_decode(g711.alaw_encode(block))
    )
