"""Test audio: tone WAVs generated at test time, and tone detection in recordings.

Nothing binary is committed: each test writes the WAVs it plays into its tmp
dir (PCM 16-bit for softphones, G.711 u-law for SIPp's ``rtp_stream``), and
checks what a peer recorded with a Goertzel filter (numpy).

The tone pairs are chosen far from each other, from DTMF frequencies and from
their harmonics, so that "A received B's tone" cannot be confused with "A hears
its own tone" or with comfort noise.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 8000
#: caller / callee tones (Hz)
TONE_A = 1000.0
TONE_B = 600.0


# --------------------------------------------------------------------------
# G.711 u-law (ITU-T G.711; the classic Sun reference algorithm)
# --------------------------------------------------------------------------

_BIAS = 0x84
_CLIP = 32635


def ulaw_encode(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), _CLIP) + _BIAS
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


def ulaw_decode(data: np.ndarray) -> np.ndarray:
    u = (~data.astype(np.int32)) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -mag, mag).astype(np.int16)


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------


def sine(freq: float, seconds: float, amplitude: float = 0.4, rate: int = RATE) -> np.ndarray:
    n = np.arange(int(seconds * rate))
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * n / rate)).astype(np.int16)


def write_pcm_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def write_ulaw_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """A WAVE_FORMAT_MULAW (7) file, what SIPp's ``rtp_stream`` sends as PCMU."""
    data = ulaw_encode(samples).tobytes()
    fmt = (
        (7).to_bytes(2, "little")  # WAVE_FORMAT_MULAW
        + (1).to_bytes(2, "little")  # channels
        + rate.to_bytes(4, "little")
        + rate.to_bytes(4, "little")  # byte rate
        + (1).to_bytes(2, "little")  # block align
        + (8).to_bytes(2, "little")  # bits per sample
        + (0).to_bytes(2, "little")  # cbSize
    )
    fact = len(data).to_bytes(4, "little")
    body = (
        b"WAVE"
        + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
        + b"fact" + (4).to_bytes(4, "little") + fact
        + b"data" + len(data).to_bytes(4, "little") + data
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    return path


# --------------------------------------------------------------------------
# reading and measuring
# --------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the rate of a PCM16 (or u-law) WAV; stereo is averaged."""
    raw = path.read_bytes()
    if raw[20:22] == (7).to_bytes(2, "little"):  # u-law: parse the chunks ourselves
        rate = int.from_bytes(raw[24:28], "little")
        pos = 12
        while pos + 8 <= len(raw):
            cid, size = raw[pos : pos + 4], int.from_bytes(raw[pos + 4 : pos + 8], "little")
            if cid == b"data":
                data = np.frombuffer(raw[pos + 8 : pos + 8 + size], dtype=np.uint8)
                return ulaw_decode(data), rate
            pos += 8 + size + (size & 1)
        return np.zeros(0, np.int16), rate
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        channels = w.getnchannels()
        width = w.getsampwidth()
        frames = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: {width * 8}-bit samples, expected 16")
    samples = np.frombuffer(frames, dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return samples, rate


def goertzel_power(block: np.ndarray, freq: float, rate: int) -> float:
    """Power of *freq* in *block* (Goertzel), normalised by the block length."""
    n = len(block)
    if n == 0:
        return 0.0
    k = 2 * np.cos(2 * np.pi * freq / rate)
    s1 = s2 = 0.0
    for x in block.astype(np.float64):
        s1, s2 = x + k * s1 - s2, s1
    return float((s1 * s1 + s2 * s2 - k * s1 * s2) / (n * n))


@dataclass(frozen=True)
class ToneReport:
    """Per 100 ms window of a recording: is *freq* the dominant, clear tone?"""

    freq: float
    windows: int
    tone_windows: int  # windows where the tone holds most of the energy
    silent_windows: int  # windows with (near) no energy at all
    rms: float

    @property
    def fraction(self) -> float:
        return self.tone_windows / max(1, self.windows)

    def __str__(self) -> str:
        return (
            f"{self.freq:.0f} Hz in {self.tone_windows}/{self.windows} windows "
            f"({100 * self.fraction:.0f} %), silent {self.silent_windows}, rms {self.rms:.0f}"
        )


def tone_report(samples: np.ndarray, rate: int, freq: float, window_s: float = 0.1) -> ToneReport:
    """Where *freq* dominates: its energy >= 50 % of the window's, window not silent.

    Uses an FFT per window (vectorised); the Goertzel above is the scalar check
    for one block.
    """
    n = int(window_s * rate)
    count = len(samples) // n
    if count == 0:
        return ToneReport(freq, 0, 0, 0, 0.0)
    blocks = samples[: count * n].astype(np.float64).reshape(count, n)
    spectrum = np.abs(np.fft.rfft(blocks * np.hanning(n), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / rate)
    band = np.abs(freqs - freq) <= 30
    total = spectrum[:, 1:].sum(axis=1) + 1e-9
    share = spectrum[:, band].sum(axis=1) / total
    rms = np.sqrt((blocks**2).mean(axis=1))
    silent = rms < 100  # ~ -50 dBFS: silence, comfort noise or nothing
    tone = (share >= 0.5) & ~silent
    return ToneReport(
        freq, count, int(tone.sum()), int(silent.sum()), float(np.sqrt((blocks**2).mean()))
    )


def tone_windows(samples: np.ndarray, rate: int, freq: float, window_s: float = 0.1) -> np.ndarray:
    """Boolean per window: *freq* dominant (as in :func:`tone_report`)."""
    n = int(window_s * rate)
    count = len(samples) // n
    if count == 0:
        return np.zeros(0, bool)
    blocks = samples[: count * n].astype(np.float64).reshape(count, n)
    spectrum = np.abs(np.fft.rfft(blocks * np.hanning(n), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / rate)
    band = np.abs(freqs - freq) <= 30
    share = spectrum[:, band].sum(axis=1) / (spectrum[:, 1:].sum(axis=1) + 1e-9)
    rms = np.sqrt((blocks**2).mean(axis=1))
    return (share >= 0.5) & (rms >= 100)
