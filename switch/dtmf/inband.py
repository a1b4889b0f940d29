"""Batched in-band DTMF detector for 8 kHz audio (ITU-T Q.23/Q.24).

Theory of operation
-------------------
One :meth:`InbandDetector.process` call takes a ``[capacity, samples]`` block
holding the newest audio of *every* channel slot and runs the whole detector
for all of them with a fixed number of numpy calls (no Python loop over
slots on the common path); per-slot state (leftover samples, the previous
half-window's spectrum, the digit state machine) carries over to the next
call.  The media layer appends decoded G.711 to per-channel buffers and
calls this once per tick (DESIGN.md "Media and DTMF").

Spectral analysis.  Audio is cut into 51-sample half-windows.  One float32
matrix product ``halves @ TABLE`` gives, for each half and each of the 8
DTMF frequencies, the complex DFT value with the phase reference at the
half's start.  The 102-sample analysis window (12.75 ms, the
spandsp/Asterisk block) at hop 51 is the sum of half ``h``'s value and half
``h + 1``'s rotated by ``exp(-j omega 51)``: overlapping windows at no extra
matrix cost.  The phase step between the two halves of a window is
``2 * pi * (f_true - f_bin) * 51 / 8000``: a frequency estimate
(unambiguous within ±78 Hz) for the two winning tones.

Two passes.  The first runs on every slot, in cache-sized chunks of slots:
the matrix product, each half's energy and each group's peak magnitude.  A
window's bin magnitude is at most the sum of its halves' magnitudes, so
these bounds give, per slot, whether any window *could* pass the level and
tone-share pre-checks of the second pass; most slots (silence, most
speech) cannot and stop there.  The second pass forms the overlapping
windows only for the slots flagged, plus every slot whose digit machine is
not idle, applies the exact pre-checks and runs the full checks below on
the windows that pass.  The bound only skips windows the exact pre-checks
would reject, so the result is the same as checking every window.

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

Digit state machine (table below): stepped only for busy slots (a digit
window in the block, or not idle), one slot at a time in Python ints when
few, window by window vectorised over slots in numpy when many; both read
the same compiled table.  A digit starts after ``START_WINDOWS`` (4)
consecutive strict windows of the same digit.  Windows are 12.75 ms long at
a 6.375 ms hop, and at most three such windows fit inside a 23 ms tone with
80 % coverage each, while four full windows fit in any 40 ms tone whatever
its alignment: 40 ms tones are accepted, 20-23 ms tones rejected.  A digit
ends after two consecutive windows that do not hold it.
"""

from __future__ import annotations

import enum
import functools
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
C64 = npt.NDArray[np.complex64]
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
# flat forms indexed by state * len(WindowInput) + input: one lookup per window
_NEXT_FLAT: Final = _NEXT.reshape(-1)
_ACTION_FLAT: Final = _ACTION.reshape(-1)
_N_INPUTS: Final = len(WindowInput)
_TRACKS: Final = np.zeros(len(_Action), dtype=bool)
_TRACKS[[_Action.TRACK, _Action.END_AND_TRACK]] = True
"""Actions that start tracking the window's digit."""
_STEPS: Final = list(zip(_NEXT_FLAT.tolist(), _ACTION_FLAT.tolist(), strict=True))
"""(next state, action) per state * len(WindowInput) + input, as Python ints."""
_STEP_EACH_MAX: Final = 1000
"""Slot-windows up to which the machine steps slot by slot in Python ints, above which
it steps all slots window by window in numpy (measured crossover: fixed numpy call
costs against about 1.5 µs per slot-window in Python)."""
_START_CODE: Final = int(_Action.START)
_TRACK_CODES: Final = (int(_Action.TRACK), int(_Action.END_AND_TRACK))
# Python ints for the hot paths: enum attribute access is slow in Python 3.11
_ACTIVE: Final = int(DetectorState.ACTIVE)
_IDLE: Final = int(DetectorState.IDLE)
_NONE: Final = int(WindowInput.NONE)
_SAME: Final = int(WindowInput.SAME)
_OTHER: Final = int(WindowInput.OTHER)
_END_CODES: Final = (int(_Action.END), int(_Action.END_AND_TRACK))


def _build_table() -> F32:
    """[16, 51] DFT table of a half-window: cos and -sin of each DTMF frequency in turn,
    so that a row of results viewed as complex64 is the 8 complex DFT values."""
    n = np.arange(HALF, dtype=np.float64)[None, :]
    omega = 2.0 * np.pi * FREQUENCIES[:, None] / SAMPLE_RATE
    table = np.stack([np.cos(omega * n), -np.sin(omega * n)], axis=1).reshape(16, HALF)
    return np.ascontiguousarray(table, dtype=np.float32)


_TABLE_T: Final = np.ascontiguousarray(_build_table().T)
_ONES: Final = np.ones(HALF, dtype=np.float32)
_CHUNK_ROWS: Final = 1024
"""Channel rows per chunk of the front end: each stage's arrays stay in cache."""
_OMEGA: Final = 2.0 * np.pi * FREQUENCIES / SAMPLE_RATE
# A half's DFT value with the phase reference moved HALF samples earlier is the
# value times exp(-j omega HALF): how the second half of a window joins the first.
_ROTATION: Final = np.exp(-1j * _OMEGA * HALF).astype(np.complex64)[:, None, None]
_BOUND_MARGIN: Final = 1.001
"""Slack on the first pass's upper bounds so float rounding can never drop a window."""


_OMEGA32: Final = _OMEGA.astype(np.float32)
_TINY: Final = np.float32(1e-12)


@functools.cache
def _angle_scales(length: int, shift: int, ndim: int) -> F32:
    """Multiples of an offset :func:`_response` needs, ``[3 or 4, 1, ...]`` for ``ndim``-d
    offsets: length/2 (sine only), 1/2 (sine only), (length-1)/2 and, when ``shift``,
    shift (sine and cosine)."""
    scales = [0.5 * length, 0.5, 0.5 * (length - 1)] + ([shift] if shift else [])
    return np.array(scales, dtype=np.float32).reshape((len(scales),) + (1,) * ndim)


def _response(delta: F32, length: int, shift: int = 0) -> C64:
    """sum(exp(j delta n), n = 0..length-1): a length-sample window's response at an
    offset of ``delta`` rad/sample; with ``shift``, ``[2, *delta.shape]``: that
    response, then exp(j delta shift).

    The sines and cosines come from two sine calls and one cosine call on the
    arguments stacked ``[3 or 4, ...]`` (each numpy call costs about 1 µs on
    the fit's small arrays; this took 13 calls, and 5 more for the shift),
    with no row computed that is not used (the sines and cosines are most of
    the fit's per-window cost).  The values are those of the
    one-call-per-term form, bit for bit (the same float32 products; checked
    on every window of the benchmark and accuracy material), but for an
    offset within 1e-12 of 0, which keeps its sign.  numpy's float32 sin/cos
    are vectorised where its complex exp is not (about 30x slower per
    element).
    """
    # |delta| at least _TINY (0/0 otherwise); abs, maximum and copysign cost half
    # of np.where here (about 2.5 µs)
    d: F32 = np.abs(delta)
    np.maximum(d, _TINY, out=d)
    np.copysign(d, delta, out=d)
    angle = np.multiply(_angle_scales(length, shift, d.ndim), d)
    ratio = np.sin(angle[:2])
    np.divide(ratio[0], ratio[1], out=ratio[0])
    # exp(j (length-1)/2 delta) and exp(j shift delta)
    units = np.empty(angle[2:].shape, dtype=np.complex64)
    np.cos(angle[2:], out=units.real)
    np.sin(angle[2:], out=units.imag)
    units[0] *= ratio[0]
    return units if shift else units[0]


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
        self._prev_spec = np.zeros((0, 16), dtype=np.float32)
        self._next_spec = np.zeros((0, 16), dtype=np.float32)
        self._prev_stats = np.zeros((3, 0), dtype=np.float32)
        self._state = np.zeros(0, dtype=np.int8)
        self._tracked = np.zeros(0, dtype=np.int8)
        self._run_start = np.zeros(0, dtype=np.float64)
        self._last_end = np.zeros(0, dtype=np.float64)
        self._run_offsets = np.zeros((0, 2), dtype=np.float32)
        self._work: dict[str, F32] = {}
        self._views: dict[tuple[str, tuple[int, ...]], F32] = {}
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
        self._prev_spec[slot] = 0.0
        self._next_spec[slot] = 0.0
        self._prev_stats[:, slot] = 0.0
        self._state[slot] = DetectorState.IDLE
        self._tracked[slot] = -1

    def _grow(self, capacity: int) -> None:
        extra = capacity - self._capacity

        def grown(a: _Arr, fill: float | bool, axis: int = 0) -> _Arr:
            shape = list(a.shape)
            shape[axis] = extra
            pad = np.full(shape, fill, dtype=a.dtype)
            return np.concatenate([a, pad], axis=axis)  # type: ignore[return-value]

        self._in_use = grown(self._in_use, False)
        self._rest = grown(self._rest, 0.0)
        self._prev_spec = grown(self._prev_spec, 0.0)
        self._next_spec = grown(self._next_spec, 0.0)
        self._prev_stats = grown(self._prev_stats, 0.0, axis=1)
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
        # first pass: bounds on a window's bins from its halves' magnitudes
        self._flag_level = self._level / _BOUND_MARGIN
        self._flag_share = self._gate_start / _BOUND_MARGIN
        self._gate_normal = 10.0 ** ((p.normal_twist_db + 6.5) / 10.0)
        self._gate_reverse = 10.0 ** ((p.reverse_twist_db + 6.5) / 10.0)
        self._normal_twist = 10.0 ** (p.normal_twist_db / 10.0)
        self._reverse_twist = 10.0 ** (p.reverse_twist_db / 10.0)
        self._relative_peak = 10.0 ** (p.relative_peak_db / 10.0)

    # -- detection -------------------------------------------------------

    def _scratch(self, name: str, shape: tuple[int, ...]) -> F32:
        """A persistent float32 work array of ``shape``: fresh arrays per call cost page faults."""
        view = self._views.get((name, shape))
        if view is not None:
            return view
        size = math.prod(shape)
        buffer = self._work.get(name)
        if buffer is None or buffer.size < size:
            buffer = np.empty(size, dtype=np.float32)
            self._work[name] = buffer
            self._views = {key: v for key, v in self._views.items() if key[0] != name}
        if len(self._views) > 256:
            self._views.clear()  # many block sizes: keep the cache bounded
        view = buffer[:size].reshape(shape)
        self._views[(name, shape)] = view
        return view

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
        rest_len = self._rest_len
        # time of the first leftover sample: buffer sample 0 of this call
        buf_start = now - (n_new + rest_len) / SAMPLE_RATE
        n_halves = (rest_len + n_new) // HALF
        if n_halves == 0:
            self._rest[:, rest_len : rest_len + n_new] = samples
            self._rest_len += n_new
            return []
        new_used = n_halves * HALF - rest_len
        cap = self._capacity
        n_rest = n_new - new_used
        # Per half: DFT values [slots, halves, 16] (real and imaginary part of
        # each tone in turn: complex64 [slots, halves, 8]); stats
        # [3, 1 + halves, slots]: the energy and the low and high groups' peak
        # magnitudes, row 0 being the previous call's last half (one array, so
        # carrying the last half over and summing halves into windows are one
        # numpy call each instead of two).
        spec = self._scratch("spec", (cap, n_halves, 16))
        stats = self._scratch("stats", (3, n_halves + 1, cap))
        stats[:, 0] = self._prev_stats
        for lo in range(0, cap, _CHUNK_ROWS):
            hi = min(cap, lo + _CHUNK_ROWS)
            self._front_end(samples[lo:hi], lo, spec, stats)
            # while the rows are in cache; becomes _prev_spec after the second pass
            self._next_spec[lo:hi] = spec[lo:hi, -1]
            self._rest[lo:hi, :n_rest] = samples[lo:hi, new_used:]
        self._rest_len = n_rest
        # A window's bin value is its first half's value plus its second half's,
        # rotated, so its magnitude is at most the sum of the halves' magnitudes:
        # a slot none of whose windows passes the level and start-share
        # pre-checks with these upper bounds cannot pass them exactly either.
        sums = self._scratch("sums", (3, n_halves, cap))
        np.add(stats[:, :-1], stats[:, 1:], out=sums)
        energy, bound = sums[0], sums[1:]
        np.square(bound, out=bound)
        flag = np.minimum(bound[0], bound[1]) > self._flag_level
        flag &= bound[0] + bound[1] > self._flag_share * energy
        self._prev_stats[:] = stats[:, -1]
        prev_spec = self._prev_spec
        self._prev_spec, self._next_spec = self._next_spec, prev_spec
        if not flag.any() and not self._state.any():
            # the common case (silence, most speech, no digit in progress): 5 numpy
            # calls fewer than the general path below; with the stats array, one
            # slot's tick went from 40 to 29 µs (A/B in one process, minimum of 8)
            return []
        nonidle = self._state != _IDLE
        slots = np.flatnonzero(flag.any(axis=0) & self._in_use | nonidle)
        windows = None
        if slots.size:
            # [8, 1 + halves, slots]: the previous half, then this call's halves
            full = np.empty((8, n_halves + 1, slots.size), dtype=np.complex64)
            full[:, 0] = prev_spec[slots].view(np.complex64).T
            full[:, 1:] = spec[slots].view(np.complex64).transpose(2, 1, 0)
            windows = self._second_pass(slots, full, energy[:, slots])
        if windows is None:
            busy = np.flatnonzero(nonidle)
            if busy.size == 0:
                return []
            shape = (busy.size, n_halves)
            strict = np.full(shape, -1, dtype=np.int8)
            return self._run_machine(
                busy, strict, strict, np.zeros(shape + (2,), np.float32), buf_start
            )
        cand_slot, cand_window, s_code, w_code, offs = windows
        # busy: slots holding or tracking a digit, and idle slots with a strict
        # window (an idle slot ignores weak ones: IDLE + NONE changes nothing)
        nonidle[cand_slot[s_code >= 0]] = True
        busy = np.flatnonzero(nonidle)
        keep = (w_code >= 0) & nonidle[cand_slot]
        cand_slot, cand_window = cand_slot[keep], cand_window[keep]
        if busy.size == 0:
            return []
        row = np.searchsorted(busy, cand_slot)
        shape = (busy.size, n_halves)
        strict = np.full(shape, -1, dtype=np.int8)
        weak = np.full(shape, -1, dtype=np.int8)
        offsets = np.zeros(shape + (2,), dtype=np.float32)
        strict[row, cand_window] = s_code[keep]
        weak[row, cand_window] = w_code[keep]
        offsets[row, cand_window] = offs[keep]
        return self._run_machine(busy, strict, weak, offsets, buf_start)

    def _front_end(self, samples: npt.NDArray[Any], lo: int, spec: F32, stats: F32) -> None:
        """Half-window DFT values, energies and group peak magnitudes of slots ``lo:lo+rows``.

        ``samples`` are the slots' new samples; fills their columns of
        ``spec`` and ``stats`` (see :meth:`process`).  Channel
        chunks keep each stage's arrays in cache.
        """
        rows = samples.shape[0]
        hi = lo + rows
        n_halves = spec.shape[1]
        rest_len = self._rest_len
        # [rows, halves * HALF], row by row (the fast order to read the block in):
        # the leftover samples, then the new ones
        halves = self._scratch("halves", (rows, n_halves * HALF))
        halves[:, :rest_len] = self._rest[lo:hi, :rest_len]
        halves[:, rest_len:] = samples[:, : n_halves * HALF - rest_len]
        flat = halves.reshape(-1, HALF)
        part = spec[lo:hi].reshape(-1, 16)
        np.matmul(flat, _TABLE_T, out=part)
        # energies: squares summed by a matrix-vector product (faster than einsum here)
        squared = self._scratch("squared", halves.shape)
        np.square(halves, out=squared)
        energy = self._scratch("energy", (rows, n_halves))
        np.matmul(squared.reshape(-1, HALF), _ONES, out=energy.reshape(-1))
        np.copyto(stats[0, 1:, lo:hi], energy.T)
        # |X| of the 8 tones straight from the complex64 view (one hypot call), then
        # each group's peak over [rows * halves, 2] strided columns, then one
        # transposing copy to the half-major layout: 5 numpy calls where squares,
        # 8 column adds, 3 maxima and a sqrt took 13 (measured 64 -> 45 µs per
        # 1 000 slots, 11 -> 5 µs for one slot).  A reduction over the length-4
        # axis instead of the 3 maxima is 10x slower at 1 000 slots.
        magnitude = self._scratch("magnitude", (part.shape[0], 8))
        np.abs(part.view(np.complex64), out=magnitude)
        groups = magnitude.reshape(-1, 2, 4)
        peak = self._scratch("peak", (part.shape[0], 2))
        np.maximum(groups[:, :, 0], groups[:, :, 1], out=peak)
        np.maximum(peak, groups[:, :, 2], out=peak)
        np.maximum(peak, groups[:, :, 3], out=peak)
        np.copyto(stats[1:, 1:, lo:hi], peak.reshape(rows, n_halves, 2).transpose(2, 1, 0))

    def _second_pass(
        self, slots: npt.NDArray[np.intp], full: C64, energy: F32
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], I8, I8, F32] | None:
        """Overlapping windows of the flagged slots: pre-checks, then the full checks.

        ``full`` is ``[8, 1 + halves, slots]`` half-window DFT values,
        ``energy`` ``[halves, slots]`` the windows' energies.  Returns, for
        each window passing the pre-checks, its slot, its index, the strict
        and weak digit codes and the tones' offsets; None when none does.
        """
        # [2, 8, halves, slots]: each window's first half, and its second half rotated
        # to the window's phase reference (the window is their sum); one array, so
        # the gated windows' halves are gathered in one call
        pair = np.empty((2,) + full[:, 1:].shape, dtype=np.complex64)
        np.copyto(pair[0], full[:, :-1])
        np.multiply(_ROTATION, full[:, 1:], out=pair[1])
        window_value = pair[0] + pair[1]
        power = np.square(window_value.real)
        power += np.square(window_value.imag)
        low_max, high_max = power.reshape((2, 4) + power.shape[1:]).max(axis=1)
        # Cheap pre-checks on the raw bins, loose enough never to drop a window
        # the full checks would accept (a 2.5 % offset costs the raw bin up to
        # 4.3 dB, cross-group leakage 2 dB): the strict bound for idle slots,
        # the hold bound for slots with a confirmed digit.
        holding = self._state[slots] >= _ACTIVE
        gate = (low_max > self._level) & (high_max > self._level)
        gate &= (low_max + high_max) > np.where(holding, self._gate_hold, self._gate_start) * energy
        gate &= holding | (
            (low_max < high_max * self._gate_normal) & (high_max < low_max * self._gate_reverse)
        )
        window, row = np.nonzero(gate)
        if row.size == 0:
            return None
        s_code, w_code, offs = self._classify(
            power[:, window, row], energy[window, row], pair[:, :, window, row]
        )
        return slots[row], window, s_code, w_code, offs

    def _classify(self, pw: F32, tot: F32, pair: C64) -> tuple[I8, I8, F32]:
        """Full checks on the gated windows: strict digit, weak digit (-1 for none), offsets.

        The offsets are the signed relative frequency offsets of the two tones,
        ``[candidates, 2]``: the digit machine uses them to tell a steady tone
        pair from a sweep passing through one.  ``pair`` is ``[2, 8, n]``: the
        windows' first halves and their rotated second halves.

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
        pick = np.arange(tot.size)
        # [2, n]: the low then the high winning tone of each window (written in
        # place: np.stack costs about 4 µs a call, more than the argmax)
        tones = np.empty((2, tot.size), dtype=np.intp)
        np.argmax(pw[:4], axis=0, out=tones[0])
        np.argmax(pw[4:], axis=0, out=tones[1])
        tones[1] += 4
        row, col = tones
        # [2, 2, n]: the two halves' values (a, then b) of the low and the high tone
        raw = pair[:, tones, pick]
        ab = raw.copy()
        a, b = ab[0], ab[1]
        nominal = _OMEGA32[tones]
        # [2, 2, n]: each tone's own offset, and the other tone's offset from its bin
        offset = np.empty((2,) + nominal.shape, dtype=np.float32)
        delta, cross = offset[0], offset[1]
        half = np.float32(HALF)
        for _ in range(3):
            # phase step from the first half to the second: angle of conj(a) * b
            u = a.conj() * b
            np.divide(np.arctan2(u.imag, u.real), half, out=delta)
            fit_omega = nominal + delta
            np.subtract(fit_omega[::-1], nominal, out=cross)
            # the response to both offsets, and exp(j HALF cross) for the second half
            response, shift = _response(offset, HALF, HALF)
            # (a + b e^{-j step}) / 2 = (c/2) D51(delta), c/2 the half amplitude; with
            # e^{-j step} = conj(u) / |u|, b e^{-j step} = a |b| / |a|
            size = np.abs(ab)
            abs_a = np.maximum(size[0], _TINY, out=size[0])
            scale = (abs_a + size[1]) / abs_a
            amp = a * scale / (np.float32(2.0) * response[0])
            # each tone's bins without the other tone's leakage (row 1 - i leaks into row i)
            leak = amp[::-1] * response[1]
            np.subtract(raw[0], leak, out=a)
            np.subtract(raw[1], leak * shift[1], out=b)
        # residual in all 8 bins ([8, n]) after removing both fitted tones (full window)
        fitted = (
            amp[:, None] * _response(fit_omega[:, None, :] - _OMEGA32[None, :, None], WINDOW)
        ).sum(axis=0)
        residual = pair[0] + pair[1] - fitted
        other = np.square(residual.real)
        other += np.square(residual.imag)
        other[tones, pick] = 0.0
        # a fitted tone's bin value over the full window would be (c/2) * WINDOW
        bin_power = (amp.real * amp.real + amp.imag * amp.imag) * np.float32(WINDOW**2)
        bin_low, bin_high = bin_power[0], bin_power[1]
        peaks_ok = (other.reshape(2, 4, -1).max(axis=1) * self._relative_peak <= bin_power).all(
            axis=0
        )
        offsets = (fit_omega / nominal - np.float32(1.0)).T
        dev = np.abs(offsets).max(axis=1)
        twist_ok = (bin_low <= bin_high * self._normal_twist) & (
            bin_high <= bin_low * self._reverse_twist
        )
        share = (bin_low + bin_high) / (self._share_scale * np.maximum(tot, np.float32(1e-9)))
        level_ok = bin_power.min(axis=0) >= self._level
        code = _DIGIT_CODE[row, col - 4]
        is_strict = (
            peaks_ok & level_ok & twist_ok & (dev <= p.max_deviation) & (share >= p.min_tone_share)
        )
        is_weak = peaks_ok & (dev <= p.hold_deviation) & (share >= p.hold_tone_share)
        strict_code: I8 = np.where(is_strict, code, np.int8(-1))
        weak_code: I8 = np.where(is_weak | is_strict, code, np.int8(-1))
        return strict_code, weak_code, np.ascontiguousarray(offsets)

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
        n_windows = strict.shape[1]
        if busy.size * n_windows <= _STEP_EACH_MAX:
            return self._step_each(busy, strict, weak, offsets, buf_start)
        state = self._state[busy]
        tracked = self._tracked[busy]
        # Slots the whole block leaves as they were need no stepping: a confirmed
        # digit held by every window (it stays ACTIVE, its last window ends the
        # block's last one), and idle slots without a strict window.
        held = (state >= _ACTIVE) & (weak == tracked[:, None]).all(axis=1)
        quiet = (state == _IDLE) & (strict < 0).all(axis=1)
        if held.any():
            last = busy[held]
            self._state[last] = _ACTIVE
            self._last_end[last] = (
                buf_start + (n_windows - 2) * HALF / SAMPLE_RATE + WINDOW / SAMPLE_RATE
            )
        stepped = ~(held | quiet)
        if not stepped.any():
            return []
        busy = busy[stepped]
        strict, weak, offsets = strict[stepped], weak[stepped], offsets[stepped]
        state, tracked = state[stepped], tracked[stepped]
        run_start = self._run_start[busy]
        last_end = self._last_end[busy]
        run_offsets = self._run_offsets[busy]
        events: list[InbandToneStarted | InbandToneEnded] = []
        for j in range(n_windows):
            # window j spans buffer samples (j-1)*HALF .. (j+1)*HALF
            w_start = buf_start + (j - 1) * HALF / SAMPLE_RATE
            w_end = w_start + WINDOW / SAMPLE_RATE
            confirmed = state >= _ACTIVE
            strict_j = strict[:, j]
            seen = np.where(confirmed, weak[:, j], strict_j)
            steady = confirmed | (np.abs(offsets[:, j] - run_offsets).max(axis=1) <= drift)
            same = (seen == tracked) & (seen >= 0) & steady
            window_input = np.where(
                same, WindowInput.SAME, np.where(strict_j >= 0, WindowInput.OTHER, WindowInput.NONE)
            )
            index = state * _N_INPUTS + window_input
            new_state = _NEXT_FLAT[index]
            action = _ACTION_FLAT[index]
            if new_state.min() < 0:
                raise AssertionError("digit machine reached an input its table does not know")
            if action.any():
                events += self._events(busy, action, tracked, run_start, last_end)
            track = _TRACKS[action]
            last_end = np.where(same | track, w_end, last_end)
            if track.any():
                tracked = np.where(track, strict_j, tracked)
                run_start = np.where(track, w_start, run_start)
                run_offsets = np.where(track[:, None], offsets[:, j], run_offsets)
            tracked = np.where(new_state == _IDLE, -1, tracked).astype(np.int8)
            state = new_state
        self._state[busy] = state
        self._tracked[busy] = tracked
        self._run_start[busy] = run_start
        self._last_end[busy] = last_end
        self._run_offsets[busy] = run_offsets
        return events

    def _step_each(
        self,
        busy: npt.NDArray[np.intp],
        strict: I8,
        weak: I8,
        offsets: F32,
        buf_start: float,
    ) -> list[InbandToneStarted | InbandToneEnded]:
        """:meth:`_run_machine`'s loop for a few slots: one slot at a time, in Python ints."""
        drift = self.parameters.max_drift
        n_windows = strict.shape[1]
        w_starts = [buf_start + (j - 1) * HALF / SAMPLE_RATE for j in range(n_windows)]
        w_length = WINDOW / SAMPLE_RATE
        states = self._state[busy].tolist()
        trackeds = self._tracked[busy].tolist()
        run_starts = self._run_start[busy].tolist()
        last_ends = self._last_end[busy].tolist()
        run_offsets = self._run_offsets[busy].tolist()
        events: list[InbandToneStarted | InbandToneEnded] = []
        for k, (slot, s_row, w_row, o_row) in enumerate(
            zip(busy.tolist(), strict.tolist(), weak.tolist(), offsets.tolist(), strict=True)
        ):
            state, tracked = states[k], trackeds[k]
            run_start, last_end = run_starts[k], last_ends[k]
            run_low, run_high = run_offsets[k]
            for j in range(n_windows):
                strict_j = s_row[j]
                if state == _IDLE and strict_j < 0:
                    continue  # IDLE + NONE changes nothing (see the table)
                if state == _ACTIVE and w_row[j] == tracked:
                    last_end = w_starts[j] + w_length  # ACTIVE + SAME: the digit goes on
                    continue
                confirmed = state >= _ACTIVE
                seen = w_row[j] if confirmed else strict_j
                low, high = o_row[j]
                if (
                    seen >= 0
                    and seen == tracked
                    and (
                        confirmed or (abs(low - run_low) <= drift and abs(high - run_high) <= drift)
                    )
                ):
                    window_input = _SAME
                elif strict_j >= 0:
                    window_input = _OTHER
                else:
                    window_input = _NONE
                new_state, action = _STEPS[state * _N_INPUTS + window_input]
                if new_state < 0:
                    raise AssertionError("digit machine reached an input its table does not know")
                if action:
                    digit = DIGITS[tracked] if tracked >= 0 else ""
                    if action in _END_CODES:
                        events.append(
                            InbandToneEnded(
                                slot=slot,
                                digit=digit,
                                start=run_start,
                                duration=last_end - run_start,
                            )
                        )
                    elif action == _START_CODE:
                        events.append(InbandToneStarted(slot=slot, digit=digit, start=run_start))
                    if action in _TRACK_CODES:
                        tracked, run_start = strict_j, w_starts[j]
                        run_low, run_high = low, high
                if window_input == _SAME or action in _TRACK_CODES:
                    last_end = w_starts[j] + w_length
                if new_state == _IDLE:
                    tracked = -1
                state = new_state
            states[k], trackeds[k] = state, tracked
            run_starts[k], last_ends[k] = run_start, last_end
            run_offsets[k] = [run_low, run_high]
        self._state[busy] = states
        self._tracked[busy] = trackeds
        self._run_start[busy] = run_starts
        self._last_end[busy] = last_ends
        self._run_offsets[busy] = run_offsets
        return events

    @staticmethod
    def _events(
        busy: npt.NDArray[np.intp],
        action: I8,
        tracked: I8,
        run_start: npt.NDArray[np.float64],
        last_end: npt.NDArray[np.float64],
    ) -> list[InbandToneStarted | InbandToneEnded]:
        """The starts and ends one window's actions report, in slot order."""
        events: list[InbandToneStarted | InbandToneEnded] = []
        for k in np.flatnonzero(action).tolist():
            act = int(action[k])
            slot = int(busy[k])
            digit = DIGITS[int(tracked[k])]
            start = float(run_start[k])
            if act in _END_CODES:
                events.append(
                    InbandToneEnded(
                        slot=slot, digit=digit, start=start, duration=float(last_end[k]) - start
                    )
                )
            elif act == _START_CODE:
                events.append(InbandToneStarted(slot=slot, digit=digit, start=start))
        return events


def dbm0_to_amplitude(level_dbm0: float) -> float:
    """Peak amplitude (16-bit scale) of a sine at ``level_dbm0``."""
    return DBM0_SINE_PEAK * math.pow(10.0, level_dbm0 / 20.0)
