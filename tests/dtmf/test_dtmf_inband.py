"""In-band detector: accuracy goals of issue 4 on a representative subset, and the batched API.

The full set (more seeds, levels, 30+ minutes of speech) runs in bench/dtmf/bench_dtmf.py.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import pytest
import siggen

from switch.dtmf import inband
from switch.dtmf.events import InbandToneEnded, InbandToneStarted
from switch.dtmf.inband import InbandDetector
from switch.dtmf.tones import DIGITS, HIGH_GROUP_HZ, LOW_GROUP_HZ


@pytest.fixture(scope="module")
def accuracy() -> dict[str, siggen.Score]:
    by: dict[str, siggen.Score] = defaultdict(siggen.Score)
    for seed in (1, 2):
        cases = siggen.accuracy_cases(seed, full=seed == 1)
        for case, found in zip(cases, siggen.run_switch(cases), strict=True):
            by[case.category].add(siggen.score(case, found))
            by[f"{case.category}/{case.name}"].add(siggen.score(case, found))
    return by


@pytest.mark.parametrize("category", ["level", "deviation", "twist", "duration", "noise"])
def test_must_detect_categories_detect_every_digit_once(
    accuracy: dict[str, siggen.Score], category: str
) -> None:
    s = accuracy[category]
    failed = {
        k: (v.hits, v.tones, v.false)
        for k, v in accuracy.items()
        if k.startswith(category + "/") and (v.hits != v.tones or v.false)
    }
    assert s.tones >= 48
    assert (s.hits, s.false) == (s.tones, 0), failed


@pytest.mark.parametrize("category", ["deviation-reject", "duration-reject"])
def test_must_reject_categories_accept_nothing(
    accuracy: dict[str, siggen.Score], category: str
) -> None:
    s = accuracy[category]
    assert s.tones >= 64
    assert s.reported == 0


def test_digit_start_and_duration_are_estimated_from_the_audio() -> None:
    rng = np.random.default_rng(3)
    case = siggen.dtmf_case(rng, category="t", name="t", digits="159#", on_ms=100, off_ms=100)
    det = InbandDetector(capacity=1)
    slot = det.add_channel()
    audio = case.linear.astype(np.float32)
    events = []
    t0 = 1000.0
    for pos in range(0, audio.size, 160):
        chunk = np.zeros((1, 160), np.float32)
        part = audio[pos : pos + 160]
        chunk[0, : part.size] = part
        events += det.process(chunk, t0 + (pos + 160) / 8000)
    starts = [e for e in events if isinstance(e, InbandToneStarted)]
    ends = [e for e in events if isinstance(e, InbandToneEnded)]
    assert [e.digit for e in starts] == list("159#")
    assert [e.digit for e in ends] == list("159#")
    for tone, start, end in zip(case.tones, starts, ends, strict=True):
        assert start.slot == slot
        assert abs(start.start - (t0 + tone.start / 8000)) < 0.010
        assert end.start == start.start
        assert abs(end.duration - 0.100) < 0.015


def test_results_do_not_depend_on_block_size() -> None:
    rng = np.random.default_rng(9)
    cases = [siggen.dtmf_case(rng, category="t", name="t", on_ms=45, off_ms=45) for _ in range(3)]
    ref = siggen.run_switch(cases, tick=160)
    for tick in (37, 80, 331, 1000):
        got = siggen.run_switch(cases, tick=tick)
        assert [[d.digit for d in r] for r in got] == [[d.digit for d in r] for r in ref]
        for r, g in zip(ref, got, strict=True):
            assert np.allclose([d.start for d in r], [d.start for d in g])


def test_slots_are_allocated_freed_reused_and_grow() -> None:
    det = InbandDetector(capacity=2)
    a, b = det.add_channel(), det.add_channel()
    assert (a, b) == (0, 1) and det.channels == 2
    c = det.add_channel()
    assert c == 2 and det.capacity >= 3
    det.remove_channel(b)
    assert det.add_channel() == b
    with pytest.raises(KeyError):
        det.remove_channel(99)
    with pytest.raises(ValueError):
        det.process(np.zeros((1, 160), np.float32), 0.0)


def test_channels_are_independent_and_free_slots_ignored() -> None:
    rng = np.random.default_rng(4)
    case = siggen.dtmf_case(rng, category="t", name="t", digits="42")
    det = InbandDetector(capacity=4)
    slots = [det.add_channel() for _ in range(3)]
    det.remove_channel(slots[1])
    audio = case.linear.astype(np.float32)
    found: dict[int, str] = defaultdict(str)
    for pos in range(0, audio.size - 160, 160):
        block = np.zeros((det.capacity, 160), np.float32)
        block[slots[2]] = audio[pos : pos + 160]
        block[slots[1]] = audio[pos : pos + 160]  # free slot: ignored
        for e in det.process(block, (pos + 160) / 8000):
            if isinstance(e, InbandToneStarted):
                found[e.slot] += e.digit
    assert dict(found) == {slots[2]: "42"}


def test_every_digit_is_recognised() -> None:
    rng = np.random.default_rng(5)
    case = siggen.dtmf_case(rng, category="t", name="t", digits=DIGITS)
    (found,) = siggen.run_switch([case])
    assert "".join(d.digit for d in found) == DIGITS


def test_music_like_signals_give_few_false_digits() -> None:
    # 2 minutes of chords, chirps, sweeps; spandsp 0.0.6 gives about 5 per 10 min here
    cases = siggen.music(120, seed=12)
    false = sum(len(r) for r in siggen.run_switch(cases))
    assert false <= 2


def test_speech_gives_no_false_digits() -> None:
    """Talk-off on espeak-ng speech; in CI (CI=true) a missing espeak-ng is a failure."""
    if not siggen.espeak_available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("espeak-ng is required for the talk-off test in CI")
        pytest.skip("espeak-ng not installed")
    cases = list(siggen.speech(150, seed=21))
    seconds = sum(c.ulaw.size for c in cases) / 8000
    assert seconds >= 150
    found = siggen.run_switch(cases)
    false = {c.name: [d.digit for d in r] for c, r in zip(cases, found, strict=True) if r}
    assert false == {}


def test_slot_by_slot_and_vectorised_digit_machines_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine steps few slots in Python and many in numpy: same table, same results."""
    rng = np.random.default_rng(11)
    cases = [
        siggen.dtmf_case(rng, category="t", name="t", on_ms=on, off_ms=on)
        for on in (20, 23, 40, 45, 60)
        for _ in range(4)
    ]
    cases += siggen.music(40, seed=13)
    runs = []
    for limit in (0, 1 << 30):
        monkeypatch.setattr(inband, "_STEP_EACH_MAX", limit)
        runs.append(siggen.run_switch(cases, tick=160))
    assert runs[0] == runs[1]
    assert sum(len(r) for r in runs[0]) >= 100


def test_table_rows_the_machine_shortcuts_rely_on() -> None:
    """The digit machine skips IDLE + NONE and steps a held digit in one go."""
    S, W = inband.DetectorState, inband.WindowInput
    nothing = inband._Action.NOTHING
    assert inband.TRANSITIONS[(S.IDLE, W.NONE)] == (S.IDLE, nothing)
    assert inband.TRANSITIONS[(S.ACTIVE, W.SAME)] == (S.ACTIVE, nothing)
    assert inband.TRANSITIONS[(S.GAP, W.SAME)] == (S.ACTIVE, nothing)


def test_tone_fit_offsets_under_twist_and_deviation_together() -> None:
    """The tone fit's frequency offsets stay within 0.5 % of the truth when both tones
    are off nominal (±1.5 %) and the twist is at the limits that must be accepted (8 dB
    normal, 4 dB reverse): the leakage between the tones is removed.  (Two fit
    iterations reach 0.46 %, the error left by the images at negative frequencies the
    fit does not model; one reaches 0.62 %.)"""
    rng = np.random.default_rng(0)
    n = 2000
    low, high = rng.integers(0, 4, n), rng.integers(0, 4, n)
    dev = rng.choice([-0.015, 0.0, 0.015], (n, 2))
    twist = rng.choice([-4.0, 0.0, 8.0], n)
    f = np.stack([np.array(LOW_GROUP_HZ)[low], np.array(HIGH_GROUP_HZ)[high]], axis=1)
    f = f * (1.0 + dev)
    amp = 4000.0 * 10.0 ** (np.stack([twist, -twist], axis=1) / 40.0)
    t = np.arange(inband.WINDOW) / 8000.0
    phase = rng.uniform(0.0, 2.0 * np.pi, (n, 2, 1))
    x = (amp[:, :, None] * np.cos(2.0 * np.pi * f[:, :, None] * t + phase)).sum(axis=1)
    halves = x.reshape(2 * n, inband.HALF).astype(np.float32)
    spec = (halves @ inband._TABLE_T).view(np.complex64).reshape(n, 2, 8)
    pair = np.empty((2, 8, n), dtype=np.complex64)
    pair[0] = spec[:, 0].T
    pair[1] = (spec[:, 1] * inband._ROTATION[:, 0, 0]).T
    window = pair[0] + pair[1]
    power = np.ascontiguousarray((window.real**2 + window.imag**2).T)
    energy = (halves.reshape(n, inband.WINDOW) ** 2).sum(axis=1)
    strict, _, offsets = InbandDetector(capacity=1)._classify(power, energy, pair)
    assert (strict >= 0).all()
    assert np.abs(offsets - dev).max() < 0.005
