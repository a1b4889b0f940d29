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
    so that a row of results viewed as complex64 is the 8 complex DFT values.

    The phase reference is the half's centre (sample 25): a tone's response is
    then real (see :func:`_pair_tables`), which spares the tone fit the sines
    and cosines of the response's phase.  Magnitudes, so the first pass's
    bounds and the pre-checks, do not depend on the reference.
    """
    n = np.arange(HALF, dtype=np.float64)[None, :] - (HALF - 1) / 2
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


_FIT_ITERATIONS: Final = 2
"""Estimates of the two tones' phase steps and amplitudes in the tone fit, each
after removing the other tone's leakage as the previous one has it (the first
after removing it as a tone at its nominal frequency would leak).  Two are
converged: with both tones 1.5 % off and 8 dB normal or 4 dB reverse twist the
largest offset error is 0.46 % with two or three, 0.62 % with one (which still
passes the accuracy suite; tests/dtmf test_tone_fit_offsets_...)."""
_TINY: Final = np.float32(1e-30)
"""Floor of a bin's magnitude in the fit: a half of digital silence gives a zero
amplitude there, not 0/0."""
_SIN_TINY: Final = 1e-30
"""Added to a zero offset's sine arguments (sin(25.5 d) / sin(d / 2) is 0/0 at d = 0):
small enough to leave any nonzero argument unchanged in float32, large enough to give
the limit, 51."""


def _dirichlet(d: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """S(d) = sin(25.5 d) / sin(d / 2): a half's response to a tone ``d`` rad/sample
    off its bin (phase reference at the half's centre)."""
    d = np.where(d == 0.0, _SIN_TINY, d)
    return np.sin(25.5 * d) / np.sin(0.5 * d)


_COLUMNS: Final = {
    "inv_step": (0, 2),
    "sine_offset": (2, 10),
    "bin_offset": (10, 42),
    "others": (42, 50),
    # complex columns (pairs of float32)
    "first_leak": (50, 58),
    "leak_scale": (58, 66),
    "bin_turn": (66, 98),
}


def _pair_tables() -> F32:
    """Constants of the tone fit per tone pair ``low * 4 + high`` (``[16, 98]`` float32).

    The half-window DFT values have their phase reference at the half's centre
    (sample 25, see :func:`_build_table`) and the second half is rotated to the
    first half's, so a tone of frequency ``w`` and complex amplitude ``A``
    (``A = c / 2`` at the first half's centre) gives bin ``w0``, with ``d = w -
    w0``: first half ``A * S(d)``, second half ``A * S(d) * exp(j 51 d)``, where
    ``S(d) = sin(25.5 d) / sin(d / 2)`` is real.  Per pair and tone ``i`` of the
    pair (``j`` the other one), columns (:data:`_COLUMNS`):

    - inv_step ``[2]``: ``1 / (51 w_i)``, relative offset per phase step;
    - sine_offset ``[2, 2, 2]``: (numerator, denominator) x (own offset, the other
      tone's offset from this bin) x tone: what is added to the phase steps times
      (1/2, 1/102) to give S's sine arguments: 25.5 or 0.5 times 0 (own, plus
      :data:`_SIN_TINY`) or ``w_j - w_i`` (cross);
    - bin_offset ``[2, 2, 8]``: the same for (numerator, denominator) x tone x each
      of the 8 bins ``m``: 25.5 or 0.5 times ``w_i - w_m``;
    - others ``[8]``: 1 for the bins, 0 for the pair's two;
    - first_leak ``[2, 2]`` complex, (half, tone): the other tone's leakage into
      this bin per unit of the other tone's own bin, for tones at their nominal
      frequencies: ``S(w_j - w_i) / 51`` in the first half, times ``exp(j 51 (w_j -
      w_i))`` in the second;
    - leak_scale ``[2, 2]`` complex: 1/2 and ``exp(j 51 (w_j - w_i)) / 2``: the
      other tone's leakage per unit of its amplitudes ``2 A`` and ``2 A exp(j 51
      d_j)`` and of ``S(w_j + d_j - w_i)``;
    - bin_turn ``[2, 8]`` complex: ``exp(j 51 (w_i - w_m))``.
    """
    width = max(stop for _, stop in _COLUMNS.values())
    table = np.zeros((16, width), dtype=np.float64)

    def put(row: npt.NDArray[np.float64], name: str, values: npt.ArrayLike) -> None:
        start, stop = _COLUMNS[name]
        flat = np.asarray(values).reshape(-1)
        row[start:stop] = flat.view(np.float64) if np.iscomplexobj(flat) else flat

    for low in range(4):
        for high in range(4):
            w = np.array([_OMEGA[low], _OMEGA[4 + high]])
            cross = w[::-1] - w
            row = table[low * 4 + high]
            put(row, "inv_step", 1.0 / (HALF * w))
            own = np.full(2, _SIN_TINY)
            put(row, "sine_offset", [[25.5 * own, 25.5 * cross], [0.5 * own, 0.5 * cross]])
            bins = w[:, None] - _OMEGA[None, :]
            bins_tiny = np.where(bins == 0.0, _SIN_TINY, bins)
            put(row, "bin_offset", [25.5 * bins_tiny, 0.5 * bins_tiny])
            others = np.ones(8)
            others[[low, 4 + high]] = 0.0
            put(row, "others", others)
            turn = np.exp(1j * HALF * cross)
            leak = _dirichlet(cross) / HALF
            put(row, "first_leak", [leak + 0j, leak * turn])
            put(row, "leak_scale", [np.full(2, 0.5 + 0j), 0.5 * turn])
            put(row, "bin_turn", np.exp(1j * HALF * bins))
    return table.astype(np.float32)


_PAIR_TABLE: Final = _pair_tables()
_SINE_SCALES: Final = np.array([0.5, 1.0 / WINDOW], dtype=np.float32).reshape(2, 1, 1, 1)
"""Multiples of a phase step (51 times an offset) in the arguments of S's numerator
and denominator: 25.5 / 51 and 0.5 / 51."""


@functools.cache
def _gather_base(n: int) -> npt.NDArray[np.intp]:
    """``[2, n]``: flat index of window k's bin 0 (low group) and bin 4 (high group)
    in an ``[8, n]`` array raveled."""
    base: npt.NDArray[np.intp] = np.arange(n)[None, :] + np.array([[0], [4 * n]])
    return base


# digit code (index in DIGITS) for low row r, high column c
_PAIR_CODE: Final = np.array(
    [DIGITS.index(KEYPAD[r][c]) for r in range(4) for c in range(4)], dtype=np.int8
)
"""Digit code (index in DIGITS) per tone pair ``low * 4 + high``."""


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
        self._gate_twist = np.array(
            [self._gate_normal, self._gate_reverse], dtype=np.float32
        ).reshape(2, 1, 1)
        self._normal_twist = 10.0 ** (p.normal_twist_db / 10.0)
        self._reverse_twist = 10.0 ** (p.reverse_twist_db / 10.0)
        self._relative_peak = 10.0 ** (p.relative_peak_db / 10.0)
        # The tone fit's checks as limits on ratios of the fitted amplitudes A
        # (row order: see _classify; amplitudes there are 2 |A|, |A| * WINDOW being
        # a full-window bin's magnitude): a window is strict when every ratio is
        # within its strict limit, weak within the weak ones (no limit on twist
        # and level).  One comparison and one reduction each, where the checks
        # one by one took about 15 numpy calls.
        peak = WINDOW / math.sqrt(self._relative_peak)
        strict = [
            p.max_deviation,
            p.max_deviation,
            peak,
            peak,
            HALF / p.min_tone_share,
            math.sqrt(self._normal_twist),
            math.sqrt(self._reverse_twist),
            HALF / math.sqrt(self._level),
            HALF / math.sqrt(self._level),
        ]
        weak = [p.hold_deviation, p.hold_deviation, peak, peak, HALF / p.hold_tone_share]
        weak += [math.inf] * 4
        self._limits = np.array([strict, weak], dtype=np.float32)[:, :, None]

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
        cand_row, cand_window, s_code, w_code, offs = windows
        # Every window's results on the second pass's slots (rows of `slots`), then
        # the busy rows: slots holding or tracking a digit (all of them are among
        # `slots`), and idle slots with a strict window (an idle slot ignores weak
        # ones: IDLE + NONE changes nothing).  14 numpy calls where mapping the
        # candidates onto the busy slots (searchsorted, filtering) took 18.
        shape = (slots.size, n_halves)
        strict = np.full(shape, -1, dtype=np.int8)
        weak = np.full(shape, -1, dtype=np.int8)
        offsets = np.zeros(shape + (2,), dtype=np.float32)
        strict[cand_row, cand_window] = s_code
        weak[cand_row, cand_window] = w_code
        offsets[cand_row, cand_window] = offs
        busy_row = nonidle[slots]
        busy_row[cand_row[s_code >= 0]] = True
        busy = slots[busy_row]
        if busy.size == 0:
            return []
        return self._run_machine(
            busy, strict[busy_row], weak[busy_row], offsets[busy_row], buf_start
        )

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
        # energies: squares summed by a matrix-vector product (faster than einsum
        # here), squared in place (the samples are not needed after the product):
        # no second block-sized buffer through the caches, 4-5 % of a tick at
        # 1 000 channels (823 -> 781 µs, per-tick minima of an A/B), 2 % at 10 000
        np.square(halves, out=halves)
        energy = self._scratch("energy", (rows, n_halves))
        np.matmul(flat, _ONES, out=energy.reshape(-1))
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
        each window passing the pre-checks, its slot's index in ``slots``, its
        index, the strict and weak digit codes and the tones' offsets; None when
        none does.
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
        # [2, halves, slots]: each group's largest bin power
        maxima = np.maximum.reduce(power.reshape((2, 4) + power.shape[1:]), axis=1)
        low_max, high_max = maxima
        # Cheap pre-checks on the raw bins, loose enough never to drop a window
        # the full checks would accept (a 2.5 % offset costs the raw bin up to
        # 4.3 dB, cross-group leakage 2 dB): the strict bound for idle slots,
        # the hold bound for slots with a confirmed digit.  Both groups' level
        # in one minimum and both twist bounds in one product (12 numpy calls,
        # were 15; the same float operations, so the same windows).
        holding = self._state[slots] >= _ACTIVE
        gate = np.minimum(low_max, high_max) > self._level
        gate &= (low_max + high_max) > np.where(holding, self._gate_hold, self._gate_start) * energy
        # low < high * normal and high < low * reverse
        twist = np.multiply(maxima[::-1], self._gate_twist) > maxima
        twist_ok = twist[0] & twist[1]
        twist_ok |= holding
        gate &= twist_ok
        window, row = np.nonzero(gate)
        if row.size == 0:
            return None
        # the powers window-major ([n, 8]): the fit's argmax over each group's 4 bins
        # then runs on contiguous rows (2.5 µs, against 7.5 on [2, 4, n])
        s_code, w_code, offs = self._classify(
            power.transpose(1, 2, 0)[window, row], energy[window, row], pair[:, :, window, row]
        )
        return row, window, s_code, w_code, offs

    def _classify(self, pw: F32, tot: F32, pair: C64) -> tuple[I8, I8, F32]:
        """Full checks on the gated windows: strict digit, weak digit (-1 for none), offsets.

        ``pw`` is ``[n, 8]``: the windows' bin powers; ``pair`` ``[2, 8, n]``: the
        windows' first halves and their rotated second halves.  The offsets are
        the signed relative frequency offsets of the two tones, ``[n, 2]``: the
        digit machine uses them to tell a steady tone pair from a sweep passing
        through one.

        The two winning tones are fitted as sinusoids: each one's frequency
        from the phase step between the window's halves, its complex
        amplitude from the two halves together, and what each tone leaks
        into the other's bins (the rectangular window's sidelobes, -17 dB in
        a half at the nearest cross-group distance) is subtracted before
        re-estimating.  Twist, level and the relative-peak test then use the
        fitted amplitudes and the residual, not the raw bins: with 8 dB of
        twist the louder tone's sidelobe alone moves the weaker tone's raw bin
        by ±2 dB and its phase step by ±10 Hz, which is what makes spandsp
        miss tones at the twist and deviation limits.

        Cost.  About 90 windows a tick reach this at 1 000 channels, and on so
        few a numpy call costs 0.5-3 µs whatever its size (in the tick, after
        the first pass has evicted the caches) while the sines and arctangents
        themselves take under 0.01 µs a window: the fit's cost is its number of
        numpy calls, and it is written for few (about 75, was about 140; 180-190 →
        105 µs per tick on the benchmark's windows, alone; the fitted offsets
        agree with the previous fit's to 1e-6 in the median):

        - phase reference at each half's centre (:func:`_build_table`): a tone's
          response in a half is real, no sines and cosines of its phase;
        - amplitudes from magnitudes, ``2 A = a (|a| + |b|) / (|a| S(d))`` and
          ``2 A exp(j 51 d) = b (|a| + |b|) / (|b| S(d))``: no unit phase steps
          and no slow mixed complex-real calls (2.3 µs against 0.6);
        - a first leakage estimate from constants (each tone as if at its
          nominal frequency), so two fit iterations do what three from the raw
          bins did (two calls in place of one iteration's 20);
        - every per-pair constant from one gather of :data:`_PAIR_TABLE`;
        - the checks as ratios against one row of strict and one of weak limits
          (4 calls where the checks one by one took about 15).
        """
        n = tot.size
        # [2, n]: the winning bin of each group (0-3), and the tone pair
        best = np.argmax(pw.reshape(n, 2, 4), axis=2).T
        pair_id = best[0] * 4
        pair_id += best[1]
        gathered = _PAIR_TABLE[pair_id]  # [n, columns]; constant [k, n] views:
        const = gathered.T
        inv_step = const[slice(*_COLUMNS["inv_step"])]
        sine_offset = const[slice(*_COLUMNS["sine_offset"])].reshape(2, 2, 2, n)
        bin_offset = const[slice(*_COLUMNS["bin_offset"])].reshape(2, 2, 8, n)
        others = const[slice(*_COLUMNS["others"])]
        lo, hi = _COLUMNS["first_leak"][0], _COLUMNS["bin_turn"][1]
        const_c = gathered[:, lo:hi].view(np.complex64).T
        first_leak = const_c[0:4].reshape(2, 2, n)
        leak_scale = const_c[4:8].reshape(2, 2, n)
        bin_turn = const_c[8:24].reshape(2, 8, n)
        # [2 halves, 2 tones, n]: the winning bins' values
        index = best * n
        index += _gather_base(n)
        raw = np.take(pair.reshape(2, 8 * n), index, axis=1)
        # first estimate: without each tone's leakage as a tone at its nominal
        # frequency would leak, from the other tone's bins (two calls, where a
        # first estimate from the raw bins took one fit iteration)
        ab = np.multiply(first_leak, raw[:, ::-1])
        np.subtract(raw, ab, out=ab)
        # step[0]: each tone's phase step (51 times its offset from its bin),
        # step[1]: the other tone's
        step = np.empty((2, 2, n), dtype=np.float32)
        for k in range(_FIT_ITERATIONS):
            u = np.conjugate(ab[0])
            u *= ab[1]
            np.arctan2(u.imag, u.real, out=step[0])
            np.copyto(step[1], step[0, ::-1])
            # [2, 2, n]: S(d) of the own and the cross offsets
            sines = np.multiply(_SINE_SCALES, step)
            sines += sine_offset
            np.sin(sines, out=sines)
            response = np.divide(sines[0], sines[1])
            # a + b exp(-j 51 d) = 2 A S(d), and b + a exp(j 51 d) = 2 A exp(j 51 d)
            # S(d): each half's value times (|a| + |b|) / (|that half| S(d)), in real
            # numbers (no unit phase steps, no mixed complex-real calls)
            size = np.abs(ab)
            np.maximum(size, _TINY, out=size)
            total = size[0] + size[1]
            size *= response[0]
            scale = np.divide(total, size)
            if k == _FIT_ITERATIONS - 1:
                break
            # each tone's bins without the other's leakage: 2 A_j S(x) / 2 in the first
            # half, 2 A_j exp(j 51 d_j) S(x) exp(j 51 (w_j - w_i)) / 2 in the second
            scale = scale[:, ::-1] * response[1]
            leak = np.multiply(ab[:, ::-1], scale)
            leak *= leak_scale
            ab = np.subtract(raw, leak, out=leak)
        # [2 halves, 2 tones, n]: 2 A and 2 A exp(j 51 d)
        amp = np.multiply(ab, scale)
        # residual in the 8 bins of the full window after removing both fitted tones:
        # tone i gives bin m S(d) (A + A exp(j 51 d) exp(j 51 (w_i - w_m))), d = w_i - w_m
        sines_bins = np.multiply(_SINE_SCALES, step[0][:, None, :])
        sines_bins = np.add(bin_offset, sines_bins)
        np.sin(sines_bins, out=sines_bins)
        response_bins = np.divide(sines_bins[0], sines_bins[1])  # [2, 8, n]
        fitted = np.multiply(bin_turn, amp[1][:, None, :])
        fitted += amp[0][:, None, :]
        fitted *= response_bins
        residual = pair[0] + pair[1]
        residual *= np.float32(2.0)
        residual -= fitted[0]
        residual -= fitted[1]
        other = np.abs(residual)
        other *= others
        # ratios that must stay at or below a limit (_set_thresholds): each tone's
        # |offset|, each group's largest other bin over the tone, window energy over
        # the tones', the two twists, 1 over each tone's amplitude (level); |2 A| is
        # (|a| + |b|) / S(d)
        ratios = np.empty((9, n), dtype=np.float32)
        offsets = np.empty((n, 2), dtype=np.float32)
        np.multiply(step[0], inv_step, out=offsets.T)
        np.abs(offsets.T, out=ratios[0:2])
        tone = np.divide(total, response[0])
        np.divide(np.maximum.reduce(other.reshape(2, 4, n), axis=1), tone, out=ratios[2:4])
        power = np.square(tone)
        np.divide(tot, power[0] + power[1], out=ratios[4])
        np.divide(tone, tone[::-1], out=ratios[5:7])
        np.reciprocal(tone, out=ratios[7:9])
        # [2, n]: strict, then weak: every ratio within its limit
        passed = (ratios <= self._limits).all(axis=1)
        codes: I8 = np.where(passed, _PAIR_CODE[pair_id], np.int8(-1))
        return codes[0], codes[1], offsets

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
