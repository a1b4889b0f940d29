"""Batched in-band DTMF detector for 8 kHz audio (ITU-T Q.23/Q.24).

Theory of operation
-------------------
One :meth:`InbandDetector.process` call takes a ``[capacity, samples]`` block
holding the newest audio of *every* channel slot and runs the whole detector
for all of them with a handful of numpy calls; per-slot state (leftover
samples, the previous half-window, the digit state machine) carries over to
the next call.  The media layer appends decoded G.711 to per-channel buffers
and calls this once per tick (DESIGN.md "Media and DTMF").

Spectral analysis.  Audio is cut into 51-sample half-windows.  One matrix
product ``halves @ TABLE`` gives, for each half and each of the 8 DTMF
frequencies, the complex DFT value twice: once with the phase reference at
the half's own start ("first half" columns) and once rotated by 51 samples
("second half" columns).  The 102-sample analysis window (12.75 ms, the
spandsp/Asterisk block) at hop 51 is then the sum of the first-half columns
of half ``h`` and the second-half columns of half ``h + 1``: overlapping
windows at no extra matrix cost.  The phase step between the two halves of
a window is ``2 * pi * (f_true - f_bin) * 51 / 8000``: a frequency estimate
(unambiguous within ±78 Hz) for the two winning tones.

Per-window decision (spandsp/Asterisk checks plus what they lack):

1. the strongest low-group and high-group bins are each above the level
   threshold;
2. the other bins of each group are at least 8 dB below the winner;
3. the frequency estimate of both tones is within ±2.5 % of nominal
   (Q.24 must-accept ±1.5 %, must-reject ±3.5 %: energy alone cannot tell
   those apart in a 102-sample window, which is where spandsp fails);
4. with each tone's energy corrected for its estimated offset (the window's
   response at that offset is known), the twist is within limits (9 dB
   normal, 5 dB reverse: 1 dB beyond the 8/4 dB points that must be
   accepted, so measurement noise cannot push a legal tone out);
5. the two tones carry most of the window's energy: at least 80 % for a
   window that may start a digit.  A window only partly covered by a tone
   carries that fraction of full-window tone energy, so this also bounds how
   much of each window is tone, which is what makes the duration test sharp.

A window passing all checks is *strict*; one passing 1-2 with a relaxed
energy share (50 %) and frequency (±3.5 %) is *weak*: weak windows keep an
already confirmed digit alive but never start one (hysteresis).

Digit state machine (table below, one row per slot, vectorised over slots):
a digit starts after ``START_WINDOWS`` (4) consecutive strict windows of the
same digit.  Windows are 12.75 ms long at a 6.375 ms hop, and at most three
such windows fit inside a 23 ms tone with 80 % coverage each, while four
full windows fit in any 40 ms tone whatever its alignment: 40 ms tones are
accepted, 20-23 ms tones rejected.  A digit ends after two consecutive
windows that do not hold it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

from switch.dtmf.events import InbandToneEnded, InbandToneStarted
from switch.dtmf.g711 import DBM0_SINE_PEAK
from switch.dtmf.tones import DIGITS, HIGH_GROUP_HZ, KEYPAD, LOW_GROUP_HZ, SAMPLE_RATE

__all__ = ["DetectorParameters", "InbandDetector", "DetectorState", "WindowInput"]

HALF: Final = 51
WINDOW: Final = 2 * HALF
START_WINDOWS: Final = 4
"""Consecutive strict windows that confirm a digit (see the module docstring)."""

FREQUENCIES: Final = np.array(LOW_GROUP_HZ + HIGH_GROUP_HZ)

F32 = npt.NDArray[np.float32]
_Arr = TypeVar("_Arr", bound=npt.NDArray[Any])
I8 = npt.NDArray[np.int8]


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectorParameters:
    """Decision thresholds of the in-band detector (defaults: see module docstring)."""

    min_level_dbm0: float = -39.0
    """Per-tone level below which a tone is ignored."""
    normal_twist_db: float = 9.0
    """How much louder the low tone may be than the high one."""
    reverse_twist_db: float = 5.0
    """How much louder the high tone may be than the low one."""
    relative_peak_db: float = 8.0
    """Other bins of a group must be this far below the group's winner."""
    max_deviation: float = 0.025
    """Largest accepted relative frequency offset of either tone (strict)."""
    min_tone_share: float = 0.80
    """Share of the window's energy the two tones must carry (strict)."""
    hold_tone_share: float = 0.50
    """Share that keeps a confirmed digit alive (weak)."""
    hold_deviation: float = 0.035
    """Frequency offset that keeps a confirmed digit alive (weak)."""
    max_drift: float = 0.012
    """Largest change of either tone's relative offset while a digit is confirmed."""
    gate_tone_share: float = 0.30
    """Raw tone share a window needs to reach the full checks on a slot holding a digit."""
    gate_start_share: float = 0.45
    """Raw tone share a window needs to reach the full checks on any other slot."""


class DetectorState(enum.IntEnum):
    """Per-slot digit state."""

    IDLE = 0
    SEEN1 = 1
    SEEN2 = 2
    SEEN3 = 3
    ACTIVE = 4
    """Digit confirmed (reported)."""
    GAP = 5
    """Confirmed digit missing from one window."""


class WindowInput(enum.IntEnum):
    """What one analysis window says about the slot's tracked digit."""

    NONE = 0
    SAME = 1
    OTHER = 2


class _Action(enum.IntEnum):
    NOTHING = 0
    START = 1
    """Report the tracked digit as started."""
    END = 2
    """Report the confirmed digit as ended."""
    END_AND_TRACK = 3
    """Report the confirmed digit as ended and track the new one."""
    TRACK = 4
    """Start tracking the window's digit."""


_S, _I, _A = DetectorState, WindowInput, _Action

TRANSITIONS: Final[dict[tuple[DetectorState, WindowInput], tuple[DetectorState, _Action]]] = {
    (_S.IDLE, _I.NONE): (_S.IDLE, _A.NOTHING),
    (_S.IDLE, _I.OTHER): (_S.SEEN1, _A.TRACK),
    (_S.SEEN1, _I.NONE): (_S.IDLE, _A.NOTHING),
    (_S.SEEN1, _I.SAME): (_S.SEEN2, _A.NOTHING),
    (_S.SEEN1, _I.OTHER): (_S.SEEN1, _A.TRACK),
    (_S.SEEN2, _I.NONE): (_S.IDLE, _A.NOTHING),
    (_S.SEEN2, _I.SAME): (_S.SEEN3, _A.NOTHING),
    (_S.SEEN2, _I.OTHER): (_S.SEEN1, _A.TRACK),
    (_S.SEEN3, _I.NONE): (_S.IDLE, _A.NOTHING),
    (_S.SEEN3, _I.SAME): (_S.ACTIVE, _A.START),
    (_S.SEEN3, _I.OTHER): (_S.SEEN1, _A.TRACK),
    (_S.ACTIVE, _I.NONE): (_S.GAP, _A.NOTHING),
    (_S.ACTIVE, _I.SAME): (_S.ACTIVE, _A.NOTHING),
    (_S.ACTIVE, _I.OTHER): (_S.SEEN1, _A.END_AND_TRACK),
    (_S.GAP, _I.NONE): (_S.IDLE, _A.END),
    (_S.GAP, _I.SAME): (_S.ACTIVE, _A.NOTHING),
    (_S.GAP, _I.OTHER): (_S.SEEN1, _A.END_AND_TRACK),
}
"""The digit machine.  IDLE tracks no digit, so IDLE + SAME cannot occur."""


def _compile_table() -> tuple[I8, I8]:
    n_states, n_inputs = len(DetectorState), len(WindowInput)
    next_state = np.full((n_states, n_inputs), -1, dtype=np.int8)
    action = np.zeros((n_states, n_inputs), dtype=np.int8)
    for (state, window_input), (target, act) in TRANSITIONS.items():
        next_state[state, window_input] = target
        action[state, window_input] = act
    return next_state, action


_NEXT, _ACTION = _compile_table()


def _build_table() -> F32:
    """[51, 32] DFT table: cos, -sin for the first half; the same rotated by 51 samples."""
    n = np.arange(HALF, dtype=np.float64)[:, None]
    omega = 2.0 * np.pi * FREQUENCIES[None, :] / SAMPLE_RATE
    first = np.concatenate([np.cos(omega * n), -np.sin(omega * n)], axis=1)
    second = np.concatenate([np.cos(omega * (n + HALF)), -np.sin(omega * (n + HALF))], axis=1)
    return np.ascontiguousarray(np.concatenate([first, second], axis=1), dtype=np.float32)


_TABLE: Final = _build_table()
_CHUNK_SAMPLES: Final = 1 << 17
"""Samples per channel chunk of :meth:`InbandDetector.process` (about 0.5 MB of float32)."""
# [16, 8]: re^2 + im^2 of each tone as a matrix product
_PAIR_SUM: Final = np.concatenate([np.eye(8), np.eye(8)]).astype(np.float32)
_OMEGA: Final = 2.0 * np.pi * FREQUENCIES / SAMPLE_RATE


def _dirichlet(delta: npt.NDArray[np.float64]) -> npt.NDArray[np.complex128]:
    """sum(exp(j delta n), n = 0..HALF-1): a half-window's response at offset delta (rad/sample)."""
    d = np.where(np.abs(delta) < 1e-12, 1e-12, delta)
    ratio = np.sin(0.5 * HALF * d) / np.sin(0.5 * d)
    return np.asarray(np.exp(0.5j * d * (HALF - 1)) * ratio, dtype=np.complex128)


# digit code (index in DIGITS) for low row r, high column c
_DIGIT_CODE: Final = np.array(
    [[DIGITS.index(KEYPAD[r][c]) for c in range(4)] for r in range(4)], dtype=np.int8
)


class InbandDetector:
    """DTMF detector for many channels at once (see the module docstring).

    Slots are rows of the ``[capacity, samples]`` blocks given to
    :meth:`process`; :meth:`add_channel` hands out a free one (growing the
    capacity when needed) and :meth:`remove_channel` frees it.  Rows of free
    slots are ignored.
    """

    def __init__(self, capacity: int = 16, parameters: DetectorParameters | None = None) -> None:
        self.parameters = parameters or DetectorParameters()
        self._capacity = 0
        self._in_use = np.zeros(0, dtype=bool)
        self._rest = np.zeros((0, HALF), dtype=np.float32)
        self._rest_len = 0
        self._prev_half = np.zeros((0, HALF), dtype=np.float32)
        self._state = np.zeros(0, dtype=np.int8)
        self._tracked = np.zeros(0, dtype=np.int8)
        self._run_start = np.zeros(0, dtype=np.float64)
        self._last_end = np.zeros(0, dtype=np.float64)
        self._run_offsets = np.zeros((0, 2), dtype=np.float32)
        self._work: dict[str, F32] = {}
        self._grow(max(1, capacity))
        self._set_thresholds()

    # -- slots -----------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Rows a block given to :meth:`process` must have."""
        return self._capacity

    @property
    def channels(self) -> int:
        """Slots in use."""
        return int(self._in_use.sum())

    def add_channel(self) -> int:
        """Allocate a slot for a new channel (silence before its first samples)."""
        free = np.flatnonzero(~self._in_use)
        if free.size == 0:
            self._grow(2 * self._capacity)
            free = np.flatnonzero(~self._in_use)
        slot = int(free[0])
        self._reset(slot)
        self._in_use[slot] = True
        return slot

    def remove_channel(self, slot: int) -> None:
        """Free a slot; a digit in progress on it is dropped without an end event."""
        if not 0 <= slot < self._capacity or not self._in_use[slot]:
            raise KeyError(f"slot {slot} is not in use")
        self._in_use[slot] = False
        self._reset(slot)

    def _reset(self, slot: int) -> None:
        self._rest[slot] = 0.0
        self._prev_half[slot] = 0.0
        self._state[slot] = DetectorState.IDLE
        self._tracked[slot] = -1

    def _grow(self, capacity: int) -> None:
        extra = capacity - self._capacity

        def grown(a: _Arr, fill: float | bool) -> _Arr:
            pad = np.full((extra,) + a.shape[1:], fill, dtype=a.dtype)
            return np.concatenate([a, pad])  # type: ignore[return-value]

        self._in_use = grown(self._in_use, False)
        self._rest = grown(self._rest, 0.0)
        self._prev_half = grown(self._prev_half, 0.0)
        self._state = grown(self._state, 0)
        self._tracked = grown(self._tracked, -1)
        self._run_start = grown(self._run_start, 0.0)
        self._last_end = grown(self._last_end, 0.0)
        self._run_offsets = grown(self._run_offsets, 0.0)
        self._capacity = capacity

    def _set_thresholds(self) -> None:
        p = self.parameters
        # |X|^2 of a full-window tone of amplitude A is (WINDOW * A / 2)^2.
        level_amp = DBM0_SINE_PEAK * 10.0 ** (p.min_level_dbm0 / 20.0)
        self._level = float((WINDOW * level_amp / 2.0) ** 2)
        # A tone of energy sum(x^2) = WINDOW * A^2 / 2 has |X|^2 = WINDOW/2 * that.
        self._share_scale = WINDOW / 2.0
        self._gate_hold = float(p.gate_tone_share * self._share_scale)
        self._gate_start = float(p.gate_start_share * self._share_scale)
        self._gate_normal = 10.0 ** ((p.normal_twist_db + 6.5) / 10.0)
        self._gate_reverse = 10.0 ** ((p.reverse_twist_db + 6.5) / 10.0)
        self._normal_twist = 10.0 ** (p.normal_twist_db / 10.0)
        self._reverse_twist = 10.0 ** (p.reverse_twist_db / 10.0)
        self._relative_peak = 10.0 ** (p.relative_peak_db / 10.0)

    # -- detection -------------------------------------------------------

    def _scratch(self, name: str, shape: tuple[int, ...]) -> F32:
        array = self._work.get(name)
        if array is None or array.shape != shape:
            array = np.empty(shape, dtype=np.float32)
            self._work[name] = array
        return array

    def process(
        self, block: npt.ArrayLike, now: float
    ) -> list[InbandToneStarted | InbandToneEnded]:
        """Run the detector on the newest audio of every slot.

        ``block`` is ``[capacity, samples]`` of 16-bit-scale linear samples
        (int16 or float32, e.g. :func:`switch.dtmf.g711.ulaw_decode_float`);
        ``now`` is the time (s) just after the last sample of the block.
        Returns the starts and ends confirmed in this block, in time order
        per slot.
        """
        samples = np.asarray(block)
        if samples.ndim != 2 or samples.shape[0] != self._capacity:
            raise ValueError(
                f"block must be [capacity={self._capacity}, samples], got {samples.shape}"
            )
        n_new = samples.shape[1]
        buf_start = now - (n_new + self._rest_len) / SAMPLE_RATE
        # a slot's row: [previous complete half | leftover samples | new samples]
        length = HALF + self._rest_len + n_new
        n_halves = (length - HALF) // HALF
        if n_halves == 0:
            self._rest[:, self._rest_len : self._rest_len + n_new] = samples
            self._rest_len += n_new
            return []
        used = (n_halves + 1) * HALF
        strict = np.full((self._capacity, n_halves), -1, dtype=np.int8)
        weak = np.full((self._capacity, n_halves), -1, dtype=np.int8)
        offsets = np.zeros((self._capacity, n_halves, 2), dtype=np.float32)
        # Channel chunks keep each stage's arrays in cache: one pass over 10 000
        # channels' arrays at once is memory-bound and twice as slow.
        chunk = max(1, _CHUNK_SAMPLES // used)
        found: list[tuple[npt.NDArray[Any], ...]] = []
        rest_len = self._rest_len
        new_used = used - HALF - rest_len
        for lo in range(0, self._capacity, chunk):
            hi = min(self._capacity, lo + chunk)
            rows = hi - lo
            # persistent scratch arrays: fresh arrays per call cost page faults
            halves = self._scratch("halves", (rows, used))
            halves[:, :HALF] = self._prev_half[lo:hi]
            halves[:, HALF : HALF + rest_len] = self._rest[lo:hi, :rest_len]
            halves[:, HALF + rest_len :] = samples[lo:hi, :new_used]
            self._prev_half[lo:hi] = halves[:, used - HALF :]
            flat = halves.reshape(-1, HALF)
            spec = self._scratch("spec", (rows, n_halves + 1, 32))
            np.matmul(flat, _TABLE, out=spec.reshape(-1, 32))
            energy = self._scratch("energy", (rows, n_halves + 1))
            np.einsum("ij,ij->i", flat, flat, out=energy.reshape(-1))
            # window j = first-half columns of half j + second-half columns of half j+1
            window = self._scratch("window", (rows, n_halves, 16))
            np.add(spec[:, :-1, :16], spec[:, 1:, 16:], out=window)
            np.square(window, out=window)
            power = (window.reshape(-1, 16) @ _PAIR_SUM).reshape(rows, n_halves, 8)
            total = energy[:, :-1] + energy[:, 1:]  # [rows, H]
            low_max = np.maximum(
                np.maximum(power[..., 0], power[..., 1]), np.maximum(power[..., 2], power[..., 3])
            )
            high_max = np.maximum(
                np.maximum(power[..., 4], power[..., 5]), np.maximum(power[..., 6], power[..., 7])
            )
            # Cheap pre-checks on the raw bins, loose enough never to drop a window
            # the full checks would accept (a 2.5 % offset costs the raw bin up to
            # 4.3 dB, cross-group leakage 2 dB): the strict bound for idle slots,
            # the hold bound for slots with a confirmed digit.
            holding = (self._state[lo:hi] >= DetectorState.ACTIVE)[:, None]
            gate = (low_max > self._level) & (high_max > self._level)
            gate &= (low_max + high_max) > np.where(
                holding, self._gate_hold, self._gate_start
            ) * total
            gate &= holding | (
                (low_max < high_max * self._gate_normal) & (high_max < low_max * self._gate_reverse)
            )
            gate &= self._in_use[lo:hi, None]
            candidates = np.flatnonzero(gate)
            if candidates.size:
                row, half = np.divmod(candidates, n_halves)
                found.append(
                    (
                        candidates + lo * n_halves,
                        power.reshape(-1, 8)[candidates],
                        total.reshape(-1)[candidates],
                        spec[row, half, :16],
                        spec[row, half + 1, 16:],
                    )
                )
        self._rest_len = n_new - new_used
        self._rest[:, : self._rest_len] = samples[:, new_used:]
        if found:
            index, *parts = (np.concatenate(column) for column in zip(*found, strict=True))
            s_code, w_code, offs = self._classify(*parts)
            strict.reshape(-1)[index] = s_code
            weak.reshape(-1)[index] = w_code
            offsets.reshape(-1, 2)[index] = offs

        busy = np.flatnonzero((self._state != DetectorState.IDLE) | (weak >= 0).any(axis=1))
        if busy.size == 0:
            return []
        return self._run_machine(busy, strict[busy], weak[busy], offsets[busy], buf_start)

    def _classify(self, pw: F32, tot: F32, first: F32, second: F32) -> tuple[I8, I8, F32]:
        """Full checks on the gated windows: strict digit, weak digit (-1 for none), offsets.

        The offsets are the signed relative frequency offsets of the two tones,
        ``[candidates, 2]``: the digit machine uses them to tell a steady tone
        pair from a sweep passing through one.

        The two winning tones are fitted as sinusoids: each one's frequency
        from the phase step between the window's halves, its complex
        amplitude from the two halves together, and what each tone leaks
        into the other's bins (the rectangular window's sidelobes, -20 dB at
        the nearest cross-group distance) is subtracted before re-estimating.
        Twist, level and the relative-peak test then use the fitted
        amplitudes and the residual, not the raw bins: with 8 dB of twist the
        louder tone's sidelobe alone moves the weaker tone's raw bin by
        ±2 dB and its phase step by ±10 Hz, which is what makes spandsp miss
        tones at the twist and deviation limits.
        """
        p = self.parameters
        row = np.argmax(pw[:, :4], axis=1)
        col = np.argmax(pw[:, 4:], axis=1) + 4
        first = first.astype(np.float64)
        second = second.astype(np.float64)
        a = first[:, 0:8] + 1j * first[:, 8:16]  # first half, phase ref at window start
        b = second[:, 0:8] + 1j * second[:, 8:16]  # second half, same phase ref
        pick = np.arange(row.size)
        tones = (row, col)
        raw_a = [a[pick, t] for t in tones]
        raw_b = [b[pick, t] for t in tones]
        clean_a = list(raw_a)
        clean_b = list(raw_b)
        omega_bins = _OMEGA[None, :]
        fit_omega = [_OMEGA[t] for t in tones]
        fit_amp = [np.zeros(row.size, complex) for _ in tones]
        for _ in range(3):
            for i, t in enumerate(tones):
                step = np.angle(np.conj(clean_a[i]) * clean_b[i])
                delta = step / HALF
                fit_omega[i] = _OMEGA[t] + delta
                # (a + b e^{-j step}) / 2 = (c/2) D51(delta): c/2 is the half amplitude
                fit_amp[i] = (clean_a[i] + clean_b[i] * np.exp(-1j * step)) / (
                    2.0 * _dirichlet(delta)
                )
            for i, t in enumerate(tones):
                o = 1 - i
                offset = fit_omega[o] - _OMEGA[t]
                leak_a = fit_amp[o] * _dirichlet(offset)
                clean_a[i] = raw_a[i] - leak_a
                clean_b[i] = raw_b[i] - leak_a * np.exp(1j * offset * HALF)
        # residual in all 8 bins after removing both fitted tones (full window)
        residual = a + b
        for i in range(2):
            offset = fit_omega[i][:, None] - omega_bins
            residual -= (
                fit_amp[i][:, None] * _dirichlet(offset) * (1.0 + np.exp(1j * offset * HALF))
            )
        other = residual.real**2 + residual.imag**2
        other[pick, row] = 0.0
        other[pick, col] = 0.0
        # a fitted tone's bin value over the full window would be (c/2) * WINDOW
        bin_low = np.abs(fit_amp[0] * WINDOW) ** 2
        bin_high = np.abs(fit_amp[1] * WINDOW) ** 2
        peaks_ok = (other[:, :4].max(axis=1) * self._relative_peak <= bin_low) & (
            other[:, 4:].max(axis=1) * self._relative_peak <= bin_high
        )
        offsets = np.stack([fit_omega[0] / _OMEGA[row] - 1.0, fit_omega[1] / _OMEGA[col] - 1.0], 1)
        dev = np.abs(offsets).max(axis=1)
        twist_ok = (bin_low <= bin_high * self._normal_twist) & (
            bin_high <= bin_low * self._reverse_twist
        )
        share = (bin_low + bin_high) / (
            self._share_scale * np.maximum(tot.astype(np.float64), 1e-9)
        )
        level_ok = (bin_low >= self._level) & (bin_high >= self._level)
        code = _DIGIT_CODE[row, col - 4]
        is_strict = (
            peaks_ok & level_ok & twist_ok & (dev <= p.max_deviation) & (share >= p.min_tone_share)
        )
        is_weak = peaks_ok & (dev <= p.hold_deviation) & (share >= p.hold_tone_share)
        return (
            np.where(is_strict, code, -1).astype(np.int8),
            np.where(is_weak | is_strict, code, -1).astype(np.int8),
            offsets.astype(np.float32),
        )

    def _run_machine(
        self,
        busy: npt.NDArray[np.intp],
        strict: I8,
        weak: I8,
        offsets: F32,
        buf_start: float,
    ) -> list[InbandToneStarted | InbandToneEnded]:
        """Step the digit machine of the busy slots through this block's windows.

        Before a digit is confirmed, a window only counts as SAME when both
        tones' frequency offsets are within ``max_drift`` of the offsets of the
        run's first window: a real keypress holds its frequencies, a glide or
        sweep through a DTMF pair does not (music talk-off).
        """
        drift = self.parameters.max_drift
        events: list[InbandToneStarted | InbandToneEnded] = []
        state = self._state[busy]
        tracked = self._tracked[busy]
        run_start = self._run_start[busy]
        last_end = self._last_end[busy]
        run_offsets = self._run_offsets[busy]
        for j in range(strict.shape[1]):
            # window j spans buffer samples (j-1)*HALF .. (j+1)*HALF
            w_start = buf_start + (j - 1) * HALF / SAMPLE_RATE
            w_end = w_start + WINDOW / SAMPLE_RATE
            confirmed = state >= DetectorState.ACTIVE
            seen = np.where(confirmed, weak[:, j], strict[:, j])
            steady = confirmed | (np.abs(offsets[:, j] - run_offsets) <= drift).all(axis=1)
            tracked_now = np.where(steady, tracked, -2)
            window_input = np.where(
                seen < 0,
                WindowInput.NONE,
                np.where(
                    seen == tracked_now,
                    WindowInput.SAME,
                    np.where(strict[:, j] >= 0, WindowInput.OTHER, WindowInput.NONE),
                ),
            ).astype(np.int8)
            action = _ACTION[state, window_input]
            new_state = _NEXT[state, window_input]
            if (new_state < 0).any():
                raise AssertionError("digit machine reached an input its table does not know")
            if action.any():
                for k in np.flatnonzero(action):
                    act = _Action(int(action[k]))
                    slot = int(busy[k])
                    if act in (_Action.END, _Action.END_AND_TRACK):
                        events.append(
                            InbandToneEnded(
                                slot=slot,
                                digit=DIGITS[tracked[k]],
                                start=float(run_start[k]),
                                duration=float(last_end[k] - run_start[k]),
                            )
                        )
                    if act is _Action.START:
                        events.append(
                            InbandToneStarted(
                                slot=slot, digit=DIGITS[tracked[k]], start=float(run_start[k])
                            )
                        )
                    if act in (_Action.TRACK, _Action.END_AND_TRACK):
                        tracked[k] = strict[k, j]
                        run_start[k] = w_start
                        run_offsets[k] = offsets[k, j]
            same = window_input == WindowInput.SAME
            last_end = np.where(same | (action == _Action.TRACK), w_end, last_end)
            last_end = np.where(action == _Action.END_AND_TRACK, w_end, last_end)
            tracked = np.where(new_state == DetectorState.IDLE, -1, tracked).astype(np.int8)
            state = new_state
        self._state[busy] = state
        self._tracked[busy] = tracked
        self._run_start[busy] = run_start
        self._last_end[busy] = last_end
        self._run_offsets[busy] = run_offsets
        return events


def dbm0_to_amplitude(level_dbm0: float) -> float:
    """Peak amplitude (16-bit scale) of a sine at ``level_dbm0``."""
    return DBM0_SINE_PEAK * math.pow(10.0, level_dbm0 / 20.0)
