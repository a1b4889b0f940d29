"""Deterministic DTMF test-signal generator (seeded numpy), shared by tests and bench.

Every case is 8 kHz audio round-tripped through G.711 µ-law (what the
detector sees after PCMU decoding), with 16 digits, each tone pair at a
random phase and the whole case at a random sample offset so windows fall
anywhere on the tones.  Levels are dBm0 per tone (0 dBm0 sine peak 22 656 in
the 16-bit scale, G.711 table 2a).

Categories follow the issue's accuracy goals (ITU-T Q.24 style):
``level``, ``deviation`` (must detect at ±1.0/±1.5 %), ``deviation-reject``
(±3.5 %), ``twist``, ``duration`` (40/40 ms must detect, repeated digits
counted twice), ``duration-reject`` (20 and 23 ms), ``noise`` (white noise,
SNR of the tone pair over full-band noise).  Talk-off material: ``speech``
(espeak-ng, generated at run time) and ``music`` (chords, chirps, sweeps).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from switch.dtmf.events import InbandToneStarted
from switch.dtmf.g711 import DBM0_SINE_PEAK, ulaw_decode, ulaw_encode
from switch.dtmf.inband import DetectorParameters, InbandDetector
from switch.dtmf.tones import DIGITS, SAMPLE_RATE, digit_frequencies

FS = SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Tone:
    digit: str
    start: int
    """First sample of the tone."""
    length: int


@dataclass(slots=True)
class Case:
    category: str
    name: str
    must_detect: bool
    """True: every tone must be reported once; False: none may be."""
    ulaw: npt.NDArray[np.uint8]
    tones: list[Tone] = field(default_factory=list)

    @property
    def linear(self) -> npt.NDArray[np.int16]:
        return ulaw_decode(self.ulaw)


def amplitude(level_dbm0: float) -> float:
    return DBM0_SINE_PEAK * 10.0 ** (level_dbm0 / 20.0)


def dtmf_case(
    rng: np.random.Generator,
    *,
    category: str,
    name: str,
    must_detect: bool = True,
    digits: str | None = None,
    on_ms: float = 50.0,
    off_ms: float = 50.0,
    low_dbm0: float = -20.0,
    high_dbm0: float = -20.0,
    low_dev: float = 0.0,
    high_dev: float = 0.0,
    snr_db: float | None = None,
    count: int = 16,
) -> Case:
    """One case of ``count`` digits; deviations are relative (0.015 = +1.5 %)."""
    if digits is None:
        digits = "".join(rng.choice(list(DIGITS), count))
    on = int(round(on_ms * FS / 1000))
    off = int(round(off_ms * FS / 1000))
    lead = int(rng.integers(200, 200 + 102))
    total = lead + len(digits) * (on + off) + 400
    signal = np.zeros(total)
    tones = []
    t = np.arange(on) / FS
    pos = lead
    for d in digits:
        f_low, f_high = digit_frequencies(d)
        f_low *= 1.0 + low_dev
        f_high *= 1.0 + high_dev
        ph = rng.uniform(0, 2 * np.pi, 2)
        signal[pos : pos + on] = amplitude(low_dbm0) * np.sin(
            2 * np.pi * f_low * t + ph[0]
        ) + amplitude(high_dbm0) * np.sin(2 * np.pi * f_high * t + ph[1])
        tones.append(Tone(d, pos, on))
        pos += on + off
    if snr_db is not None:
        tone_power = (amplitude(low_dbm0) ** 2 + amplitude(high_dbm0) ** 2) / 2
        sigma = np.sqrt(tone_power / 10 ** (snr_db / 10))
        signal += rng.normal(0.0, sigma, total)
    return Case(category, name, must_detect, ulaw_encode(signal), tones)


def accuracy_cases(seed: int = 4, *, full: bool = True) -> list[Case]:
    """All accuracy categories; ``full=False`` is the representative subset for tests."""
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    levels = [-10, -15, -20, -25, -30, -35] if full else [-10, -25, -35]
    for level in levels:
        cases.append(
            dtmf_case(rng, category="level", name=f"{level} dBm0", low_dbm0=level, high_dbm0=level)
        )
    devs = [0.010, 0.015] if full else [0.015]
    for dev in devs:
        for sign in (1, -1):
            for which in ("both", "low", "high"):
                d = sign * dev
                cases.append(
                    dtmf_case(
                        rng,
                        category="deviation",
                        name=f"{d:+.1%} {which}",
                        low_dev=d if which != "high" else 0.0,
                        high_dev=d if which != "low" else 0.0,
                    )
                )
        if full:
            cases.append(
                dtmf_case(
                    rng,
                    category="deviation",
                    name=f"+/-{dev:.1%} opposite",
                    low_dev=dev,
                    high_dev=-dev,
                )
            )
    for sign in (1, -1):
        for which in ("both", "low", "high"):
            d = sign * 0.035
            cases.append(
                dtmf_case(
                    rng,
                    category="deviation-reject",
                    name=f"{d:+.1%} {which}",
                    must_detect=False,
                    low_dev=d if which != "high" else 0.0,
                    high_dev=d if which != "low" else 0.0,
                )
            )
    twists = [8, 6, 4, 2, 0, -2, -4] if full else [8, 0, -4]
    for tw in twists:
        # positive = normal twist (low group louder)
        cases.append(
            dtmf_case(
                rng,
                category="twist",
                name=f"{abs(tw)} dB {'normal' if tw >= 0 else 'reverse'}",
                low_dbm0=-16 + tw / 2,
                high_dbm0=-16 - tw / 2,
            )
        )
    for rep in range(2 if full else 1):
        digits = "".join(d + d for d in rng.choice(list(DIGITS), 8))
        cases.append(
            dtmf_case(
                rng,
                category="duration",
                name=f"40/40 ms #{rep}",
                digits=digits,
                on_ms=40,
                off_ms=40,
            )
        )
    for on in (20, 23):
        for rep in range(2 if full else 1):
            cases.append(
                dtmf_case(
                    rng,
                    category="duration-reject",
                    name=f"{on} ms #{rep}",
                    must_detect=False,
                    on_ms=on,
                    off_ms=40,
                )
            )
    snrs = [15, 20, 30] if full else [15]
    for snr in snrs:
        for rep in range(2 if full else 1):
            cases.append(dtmf_case(rng, category="noise", name=f"SNR {snr} dB #{rep}", snr_db=snr))
    return cases


# -- talk-off material ------------------------------------------------------------

SPEECH_TEXTS = (
    "The quick brown fox jumps over the lazy dog while the band plays on.",
    "Please hold the line, your call is important to us and will be answered shortly.",
    "Zwei Boxkämpfer jagen Eva quer durch Sylt, und niemand weiß warum.",
    "Pchnąć w tę łódź jeża lub ośm skrzyń fig, powiedział dyrektor banku.",
    "Le cœur déçu mais l'âme plutôt naïve, Louÿs rêva de crapaüter en canoë.",
    "El veloz murciélago hindú comía feliz cardillo y kiwi bajo la lluvia.",
    "Ma la volpe col suo balzo ha raggiunto il quieto Fido nel giardino.",
    "Один, два, три, четыре, пять, шесть, семь, восемь, девять, десять.",
    "One two three four five six seven eight nine zero star pound.",
    "Heute ist ein schöner Tag, und wir telefonieren mit der ganzen Familie.",
)

SPEECH_VOICES = (
    "en",
    "en-us",
    "en+f3",
    "en+m3",
    "en-us+f2",
    "de",
    "de+f4",
    "pl",
    "pl+m2",
    "fr",
    "fr+f3",
    "es",
    "es+m4",
    "it",
    "it+f2",
    "ru",
    "ru+m1",
    "nl",
    "pt",
    "sv+f1",
    "cs",
    "hu",
    "fi+f3",
    "tr",
    "el",
    "hi",
    "zh",
    "ja",
    "ko",
    "ar",
)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def resample(x: npt.NDArray[np.float64], rate_in: int, rate_out: int) -> npt.NDArray[np.float64]:
    """FFT resampling (band-limits to the lower Nyquist)."""
    n_out = int(round(len(x) * rate_out / rate_in))
    spectrum = np.fft.rfft(x)
    keep = n_out // 2 + 1
    if keep <= spectrum.size:
        spectrum = spectrum[:keep]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(keep - spectrum.size, complex)])
    return np.fft.irfft(spectrum, n_out) * (n_out / len(x))


def espeak(voice: str, text: str, *, speed: int = 160, pitch: int = 50) -> npt.NDArray[np.float64]:
    """Speak ``text`` with espeak-ng; 8 kHz float samples (unit scale as produced)."""
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    with wave.open(io.BytesIO(out)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    return resample(pcm, rate, FS)


def speech(seconds: float, seed: int = 7) -> Iterator[Case]:
    """At least ``seconds`` of speech as µ-law cases, one per utterance batch.

    Voices, languages, speed and pitch vary; each utterance is scaled to an
    active-speech RMS level between -25 and -15 dBm0.
    """
    rng = np.random.default_rng(seed)
    produced = 0.0
    i = 0
    while produced < seconds:
        voice = SPEECH_VOICES[i % len(SPEECH_VOICES)]
        parts = []
        for _ in range(3):
            text = SPEECH_TEXTS[int(rng.integers(len(SPEECH_TEXTS)))]
            x = espeak(
                voice, text, speed=int(rng.integers(120, 260)), pitch=int(rng.integers(20, 90))
            )
            active = x[np.abs(x) > 0.05 * np.abs(x).max()]
            rms = np.sqrt(np.mean(active**2)) if active.size else 1.0
            level = rng.uniform(-25, -15)
            target = DBM0_SINE_PEAK / np.sqrt(2) * 10 ** (level / 20)
            parts.append(x * (target / rms))
            parts.append(np.zeros(int(rng.integers(400, 2400))))
        audio = np.concatenate(parts)
        produced += audio.size / FS
        yield Case("speech", f"speech {voice} #{i}", False, ulaw_encode(audio))
        i += 1


def music(seconds: float, seed: int = 11) -> list[Case]:
    """Music-like talk-off material: chords, chirps and sweeps, 10 s per case."""
    rng = np.random.default_rng(seed)
    cases = []
    n_cases = max(1, int(round(seconds / 10)))
    for i in range(n_cases):
        kind = ("chords", "chirps", "sweeps")[i % 3]
        audio = np.zeros(10 * FS)
        pos = 0
        while pos < audio.size:
            length = int(rng.integers(int(0.08 * FS), int(0.6 * FS)))
            t = np.arange(length) / FS
            seg = np.zeros(length)
            if kind == "chords":
                root = 110 * 2 ** (rng.integers(0, 36) / 12)
                for semis in rng.choice(
                    [0, 3, 4, 7, 10, 12, 16, 19], int(rng.integers(2, 5)), replace=False
                ):
                    f = root * 2 ** (semis / 12)
                    for h in range(1, int(rng.integers(1, 5)) + 1):
                        if f * h < 3800:
                            seg += np.sin(2 * np.pi * f * h * t + rng.uniform(0, 6.3)) / h
                seg *= np.exp(-t * rng.uniform(0.5, 8))
            elif kind == "chirps":
                for _ in range(int(rng.integers(1, 3))):
                    f0, f1 = rng.uniform(300, 3400, 2)
                    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
                    seg += np.sin(phase)
            else:
                for _ in range(int(rng.integers(1, 3))):
                    f0 = rng.uniform(400, 2000)
                    ratio = rng.uniform(0.5, 2.0)
                    k = np.log(ratio) / t[-1]
                    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
                    seg += np.sin(phase) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(2, 7) * t))
            end = min(audio.size, pos + length)
            level = rng.uniform(-25, -10)
            rms = np.sqrt(np.mean(seg**2)) or 1.0
            audio[pos:end] += seg[: end - pos] * (
                DBM0_SINE_PEAK / np.sqrt(2) * 10 ** (level / 20) / rms
            )
            pos += int(length * rng.uniform(0.5, 1.2))
        cases.append(Case("music", f"{kind} #{i}", False, ulaw_encode(audio)))
    return cases


# -- running and scoring --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Detection:
    digit: str
    start: float
    """Seconds from the start of the case audio."""


def run_switch(
    cases: Sequence[Case], tick: int = 160, parameters: DetectorParameters | None = None
) -> list[list[Detection]]:
    """Run every case as one channel of a single batched detector."""
    length = max(c.ulaw.size for c in cases)
    audio = np.zeros((len(cases), length), dtype=np.float32)
    for i, c in enumerate(cases):
        audio[i, : c.ulaw.size] = c.linear
    detector = InbandDetector(capacity=len(cases), parameters=parameters)
    slots = [detector.add_channel() for _ in cases]
    found: list[list[Detection]] = [[] for _ in cases]
    row_of = {slot: i for i, slot in enumerate(slots)}
    block = np.zeros((detector.capacity, tick), dtype=np.float32)
    for pos in range(0, length, tick):
        chunk = audio[:, pos : pos + tick]
        block[: len(cases), : chunk.shape[1]] = chunk
        block[: len(cases), chunk.shape[1] :] = 0.0
        now = (pos + tick) / FS
        for event in detector.process(block, now):
            if isinstance(event, InbandToneStarted):
                found[row_of[event.slot]].append(Detection(event.digit, event.start))
    return found


@dataclass(slots=True)
class Score:
    tones: int = 0
    hits: int = 0
    reported: int = 0
    """Detections in total."""
    false: int = 0
    """Detections matching no tone (or a tone already matched)."""

    def add(self, other: Score) -> None:
        self.tones += other.tones
        self.hits += other.hits
        self.reported += other.reported
        self.false += other.false


def score(case: Case, detections: Sequence[Detection]) -> Score:
    """Match each tone to at most one detection of its digit starting near it."""
    used = [False] * len(detections)
    hits = 0
    for tone in case.tones:
        lo = tone.start / FS - 0.030
        hi = (tone.start + tone.length) / FS + 0.030
        for k, det in enumerate(detections):
            if not used[k] and det.digit == tone.digit and lo <= det.start <= hi:
                used[k] = True
                hits += 1
                break
    return Score(len(case.tones), hits, len(detections), used.count(False))
