"""DTMF wired into calls: every anchored leg's keypad, reported once per keypress.

Theory of operation
-------------------
One ``DtmfWiring`` serves the whole engine.  It is a media tap
(docs/MEDIA-API.md ``AudioTap``) added to every anchored leg when the leg's
media is first configured and forgotten when it closes
(``CallController.add_media_observer``), and the INFO handler of the call
controller (``register_in_dialog("INFO", ...)``).

Per leg it keeps a ``DigitCollector`` (one report per keypress whichever way
it came), a ``TelephoneEventReceiver`` (RFC 4733 packets of the leg's
negotiated telephone-event PT), a ``FeatureMatcher`` (``[features]`` codes)
and, for in-band detection, a slot of the one shared ``InbandDetector``.  The
user's ``dtmf_mode`` picks the sources: ``auto`` all three, else only the one
named (packets or bodies of another kind are ignored, INFO still answered 200).
All four are made on first use — the collector and the matcher on the first
digit, the receiver on the first telephone-event, the slot on the first
audio — and the slot is given back after a second without audio
(``_RELEASE_TICKS``): a leg that never sends anything (signalling-only
calls, hold) costs a small record and the tap, nothing per tick.

In-band, batched (DESIGN.md "Media and DTMF"): the media engine calls
``on_audio`` per tapped leg per tick with that tick's decoded samples; each
slot's samples are written straight into its row of one ``[capacity,
_RING]`` ring, and at the end of the tick (``on_tick_end``) the detector
runs **once** for all legs on the ``[capacity, n]`` columns every row has
reached — a view, no copy — (not at all once no row has had audio for
``_IDLE_DETECTOR_TICKS``).  ``n`` follows the tick clock (samples of 8 kHz
audio elapsed since the previous tick) so every row advances in real time;
all rows share one read column, the columns read are zeroed for reuse, and
the ring is compacted (live columns moved to the front) when the read
column nears its end.  Packets do not arrive in step with the tick, so each
slot keeps a playout cushion: a slot's audio starts one frame (20 ms) past
the read column, so a short tick is made up from the cushion; a row the
tick read past (a late packet) just continues where the tick is (the
detector saw zeros meanwhile), and one starved for good (hold, the phone
stopped sending; ``_STARVED_TICKS``) builds its cushion again; a cushion
that grows past ``_MAX_CUSHION`` (sender clock drift, a burst after a loop
stall) drops its oldest samples.  Measured (bench/bench_media_costs.py:
1 000 legs each sending 20 ms a tick, fake time, wiring alone): 3.2–3.6 ms
a tick with a numpy array queued per leg and copied into a fresh block on
the tick, 1.2–1.6 ms with the ring — the rest being one slice assignment
per leg and the detector itself (~0.5 ms).

Timers: the receivers' end-of-event timeout and the matchers' inter-digit
timeout run on the tick's ``now`` in ``on_tick_end`` — never ``asyncio.sleep`` —
for the legs that may have one (a telephone-event seen, digits held), not all.

Each keypress: one ``dtmf.digit`` event (``call_id``, ``digit``, ``method``,
``leg_id``, ``extension``), one ``switch_dtmf_digits_total{method}``
increment, one log line with ``call_id``; then the digit goes to the leg's
feature matcher, whose actions go to ``CallController.feature_invoked``.

Digits of a feature code never reach the other party (docs/MEDIA-API.md
"Digit gate", docs/INTEROP.md "DTMF"), the way Asterisk's feature map and
FreeSWITCH's bind_meta_app behave.  With no ``[features]`` code nothing
below happens: no gate, packets and tones are relayed as they come.

- RFC 4733: a leg that takes telephone-events gets a gate in the relay
  (``set_digit_gate`` with the matcher's ``first_digits``): an event that
  may begin a code is not relayed, nor is any keypad event while the
  matcher holds digits (``set_digit_hold``, pushed after every tick that
  touched the leg).  The relay remembers which events it held
  (``held_telephone_event``).
- In-band: when the detector starts a tone that may begin a code, or any
  tone while digits are held, the leg's audio to the peer is replaced by
  silence until nothing is held and the tone has ended.  The detector needs
  two blocks and a tick to confirm a tone, so the first tens of
  milliseconds of the first tone of a code reach the peer.
- Every digit given to the matcher is remembered with whether the peer
  missed it (held by the gate, muted, or an INFO, which is never relayed
  as such).  Digits the matcher releases (not a code, or the inter-digit
  timeout) that the peer missed are passed on; digits it consumes are
  forgotten.  Passing on follows the receiving leg's ``dtmf_mode``:
  ``info`` → an INFO in its dialog (``CallController.send_in_dialog``; the
  received body type for an INFO digit, else ``application/dtmf-relay``);
  ``rfc4733`` → telephone-events; ``inband`` → G.711 tones; ``auto`` →
  telephone-events when the leg negotiated them, else an INFO for a digit
  that came by INFO, else tones.  Media digits are regenerated by the
  engine on its tick (``send_digits``).  A leg not bridged (hold, transfer
  in progress) gets nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
from structlog.typing import FilteringBoundLogger

from switch.call.media import LegConfig
from switch.call.model import Leg
from switch.config import FeaturesConfig
from switch.dtmf import (
    BlindTransferRequested,
    DigitCollector,
    DigitDetected,
    DigitsReleased,
    FeatureCode,
    FeatureInvoked,
    FeatureMatcher,
    InbandDetector,
    InbandToneStarted,
    InfoBodyError,
    TelephoneEventReceiver,
    TelephoneEventStarted,
    WarmTransferRequested,
    parse_info_body,
)
from switch.dtmf.info import info_body
from switch.dtmf.rfc4733 import MalformedTelephoneEvent
from switch.events import DTMF_DIGIT
from switch.metrics import Metrics
from switch.sip.message import Request, Response, make_response

__all__ = ["DtmfWiring", "FeatureHook", "TapHost"]

DTMF_INFO_TYPES: Final = frozenset({"application/dtmf-relay", "application/dtmf"})
SAMPLE_RATE: Final = 8000
_FRAME: Final = 160
"""20 ms: the cushion a slot builds before it starts consuming."""
_RING: Final = 4096
"""Columns of the audio ring (0.5 s): the cushions (at most ``_MAX_CUSHION`` +
a frame) plus the columns read between two compactions."""
_MAX_CUSHION: Final = 800
"""100 ms of audio left over after a tick at most."""
_MAX_TICK_SAMPLES: Final = 4000
"""Half a second: a longer gap between ticks (a stalled loop) restarts the tick clock."""
_STARVED_TICKS: Final = 5
"""Ticks with nothing received after which a slot primes again."""
# Ticks with no audio from any leg after which the detector is no longer run:
# 200 ms of zeros is enough for any tone in progress to end (two agreeing
# silent windows), and then a tick of only silent legs — signalling-only calls,
# calls on hold — costs nothing but the loop over the slots.
_IDLE_DETECTOR_TICKS: Final = 10
_RELEASE_TICKS: Final = 50
"""Ticks (1 s) without audio after which a leg gives its detector slot back.

Measured under 300 signalling-only calls/s (SIPp sends SDP, no RTP): a slot
taken per leg at configure time (numpy resets, ``flatnonzero``; with the
matcher and collector, 3.5 % of the engine's samples) and the per-tick loop
and ``[capacity, n]`` block over every slot (2.8 %).  A slot is now taken on
a leg's first audio and given back after this silence (checked every half of
it) — long after any tone in progress has ended on the zeros the starved row
is fed (``_IDLE_DETECTOR_TICKS``) — so a signalling-only or held leg costs
the detector nothing."""

_INFO_DURATION_MS: Final = 100
"""``Duration=`` of an INFO for a digit whose length switch does not know."""

Int16 = npt.NDArray[np.int16]


class TapHost(Protocol):
    """What the wiring needs of ``switch.media.MediaEngine``."""

    def add_tap(self, leg: Any, tap: Any) -> None: ...

    def remove_tap(self, leg: Any, tap: Any) -> None: ...

    def peer(self, leg: Any) -> Any: ...

    def set_digit_gate(self, leg: Any, first_digits: str | None) -> None: ...

    def set_digit_hold(self, leg: Any, *, hold: bool, mute: bool = False) -> None: ...

    def held_telephone_event(self, leg: Any, timestamp: int) -> bool: ...

    def send_digits(self, leg: Any, digits: str, method: str | None = None) -> str: ...


class EventSink(Protocol):
    def publish(self, type: str, **fields: object) -> Any: ...


class FeatureHook(Protocol):
    """``CallController.feature_invoked``."""

    def __call__(self, leg: Leg, name: str, number: str | None, digits: str) -> None: ...


class _Controller(Protocol):
    def register_in_dialog(
        self, method: str, handler: Callable[[Leg, Request, int], Response | None]) -> None: ...

    def add_media_observer(self, observer: Any) -> None: ...

    def feature_invoked(self, leg: Leg, name: str, number: str | None, digits: str) -> None: ...

    def send_in_dialog(self, leg: Leg, method: str, body: bytes, content_type: str) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class _Fed:
    """A digit given to the feature matcher and not yet released or consumed."""

    digit: str
    missed: bool
    """The peer did not get it the way it came (held, muted, or an INFO)."""
    info_type: str | None = None
    """The INFO body type it came in, if it came by INFO."""
    duration: float | None = None


@dataclass(slots=True)
class _LegDtmf:
    # Made per leg at configure time, so it is kept small: the collector, the
    # matcher, the RFC 4733 receiver and the detector slot are made on first use
    # (most calls never press a key; a signalling-only call never sends audio).
    leg: Leg
    mode: str
    collector: DigitCollector | None = None
    matcher: FeatureMatcher | None = None
    events: bool = False
    """RFC 4733 is taken on the leg (its mode allows it and it negotiated telephone-event)."""
    receiver: TelephoneEventReceiver | None = None
    slot: int | None = None
    media: Any = None
    """The media handle the wiring is tapped on (None: not tapped)."""
    write: int = 0
    """Ring column after the slot's last sample."""
    fed_tick: int = -_STARVED_TICKS - 1
    """Tick number of the slot's last audio."""
    te_pt: int | None = None
    """The leg's negotiated telephone-event PT (how digits are passed on to it)."""
    fed: list[_Fed] = field(default_factory=list)
    """Digits the matcher holds, oldest first (as many as ``matcher.held``)."""
    gated: bool = False
    """The relay's digit gate is set on the leg's media."""
    muting: bool = False
    """In-band digits of a code may be in progress: the peer hears silence."""
    mute_pushed: bool = False
    tone_on: bool = False
    """The in-band detector is in a tone on the leg."""

    @property
    def inband(self) -> bool:
        return self.mode in ("auto", "inband")

    @property
    def rfc4733(self) -> bool:
        return self.mode in ("auto", "rfc4733")

    @property
    def info(self) -> bool:
        return self.mode in ("auto", "info")

    @property
    def held(self) -> str:
        """Digits the feature matcher holds ("" before the first digit)."""
        return self.matcher.held if self.matcher is not None else ""


class DtmfWiring:
    """The engine-wide DTMF tap, INFO handler and per-leg DTMF state."""

    def __init__(self, features: FeaturesConfig, *, engine: TapHost | None, bus: EventSink,
                 metrics: Metrics, log: FilteringBoundLogger, clock: Callable[[], float],
                 feature_hook: FeatureHook | None = None) -> None:
        self._codes = tuple(FeatureCode(name=name, pattern=pattern)
                            for name, pattern in features.codes)
        self._first = FeatureMatcher(self._codes).first_digits
        """Digits a code may begin with; "" (no codes): nothing is ever held."""
        self._inter_digit = float(features.inter_digit_timeout)
        self._engine = engine
        self._bus = bus
        self._metrics = metrics
        self._log = log
        self._clock = clock
        self._feature_hook = feature_hook
        self._legs: dict[str, _LegDtmf] = {}
        self._slots: dict[int, _LegDtmf] = {}
        self._timed: dict[str, _LegDtmf] = {}
        """Legs whose receiver or matcher may have a timer: the tick looks at these only."""
        self._touched: dict[str, _LegDtmf] = {}
        """Legs whose digit gate / mute is pushed to the relay at the end of the tick."""
        self._controller: _Controller | None = None
        self._detector = InbandDetector(capacity=16)
        self._ring = np.zeros((self._detector.capacity, _RING), dtype=np.int16)
        """Row ``slot``: the slot's audio from column ``_read`` to its ``write``; zeros after."""
        self._read = 0
        self._max_write = 0
        """The largest ``write`` of any slot (no audio anywhere past ``_read`` if not more)."""
        self._tick_no = 0
        self._next_sweep = 0
        self._last_tick: float | None = None
        self._carry = 0.0
        self._silent_ticks = 0
        self.detector_runs = 0
        """``InbandDetector.process`` calls so far (one per tick with in-band legs)."""

    def attach(self, controller: _Controller) -> None:
        """Register with the call controller (INFO, media observer, feature actions)."""
        self._controller = controller
        controller.register_in_dialog("INFO", self.on_info)
        controller.add_media_observer(self)
        if self._feature_hook is None:
            self._feature_hook = controller.feature_invoked

    @property
    def legs(self) -> int:
        return len(self._legs)

    # --- legs (LegMediaObserver) -------------------------------------------------------

    def leg_media_configured(self, leg: Leg, config: LegConfig) -> None:
        try:
            state = self._state(leg)
            if state.rfc4733 and config.telephone_event_pt is not None:
                state.events = True
            state.te_pt = config.telephone_event_pt
            if self._engine is not None and state.media is None and leg.media is not None:
                self._engine.add_tap(leg.media, self)
                state.media = leg.media
            if self._first and state.events and state.media is not None \
                    and self._engine is not None and not state.gated:
                self._engine.set_digit_gate(state.media, self._first)
                state.gated = True
        except Exception:
            self._log.exception("dtmf.leg_failed", call_id=leg.call.id, leg_id=leg.id)

    def leg_media_closed(self, leg: Leg) -> None:
        state = self._legs.pop(leg.id, None)
        self._timed.pop(leg.id, None)
        self._touched.pop(leg.id, None)
        if state is None:
            return
        if state.slot is not None:
            self._release_slot(state)
        if self._engine is not None and state.media is not None:
            try:
                self._engine.remove_tap(state.media, self)
            except Exception:
                self._log.exception("dtmf.leg_failed", call_id=leg.call.id, leg_id=leg.id)
            state.media = None

    def _state(self, leg: Leg) -> _LegDtmf:
        state = self._legs.get(leg.id)
        if state is None:
            mode = leg.user.dtmf_mode if leg.user is not None else "auto"
            state = _LegDtmf(leg=leg, mode=mode)
            self._legs[leg.id] = state
        return state

    @staticmethod
    def _collector(state: _LegDtmf) -> DigitCollector:
        collector = state.collector
        if collector is None:
            collector = state.collector = DigitCollector()
        return collector

    def _matcher(self, state: _LegDtmf) -> FeatureMatcher:
        matcher = state.matcher
        if matcher is None:
            matcher = state.matcher = FeatureMatcher(self._codes,
                                                     inter_digit_timeout=self._inter_digit)
        return matcher

    def _take_slot(self, state: _LegDtmf) -> int:
        slot = state.slot = self._detector.add_channel()
        self._slots[slot] = state
        capacity = self._detector.capacity
        ring = self._ring
        if ring.shape[0] < capacity:
            grown = np.zeros((capacity, _RING), dtype=np.int16)
            grown[:ring.shape[0]] = ring
            self._ring = grown
        state.write = self._read
        state.fed_tick = -_STARVED_TICKS - 1
        return slot

    def _release_slot(self, state: _LegDtmf) -> None:
        slot = state.slot
        if slot is None:
            return
        self._slots.pop(slot, None)
        self._detector.remove_channel(slot)
        self._ring[slot] = 0
        state.slot = None
        state.write = 0

    def _compact(self) -> None:
        """Move every row's live columns (``_read`` on) to the front of the ring."""
        read = self._read
        if read == 0:
            return
        end = self._max_write
        width = max(0, end - read)
        ring = self._ring
        if width:
            ring[:, :width] = ring[:, read:end]     # numpy copies overlapping ranges safely
            ring[:, width:end] = 0
        for state in self._slots.values():
            state.write = max(0, state.write - read)
        self._max_write = width
        self._read = 0

    # --- SIP INFO ----------------------------------------------------------------------

    def on_info(self, leg: Leg, request: Request, txn: int) -> Response | None:
        """INFO in a leg's dialog: DTMF bodies are taken (200, or 400/413/415 for a
        body switch cannot use); other bodies get 200 as before."""
        content_type = request.headers.get("content-type") or ""
        if content_type.split(";", 1)[0].strip().lower() not in DTMF_INFO_TYPES:
            return make_response(request, 200)
        try:
            info = parse_info_body(content_type, request.body)
        except InfoBodyError as exc:
            self._log.info("dtmf.info_rejected", call_id=leg.call.id, leg_id=leg.id,
                           status=exc.status, reason=str(exc))
            return make_response(request, exc.status)
        try:
            state = self._state(leg)
            if state.info:
                now = self._clock()
                media_type = content_type.split(";", 1)[0].strip().lower()
                self._detected(state, self._collector(state).info(info, now), now, missed=True,
                               info_type=media_type)
                self._push(state)
        except Exception:
            self._log.exception("dtmf.info_failed", call_id=leg.call.id, leg_id=leg.id)
        return make_response(request, 200)

    # --- the media tap -----------------------------------------------------------------

    def on_audio(self, leg_id: str, pcm: Int16, now: float) -> None:
        state = self._legs.get(leg_id)
        if state is None or not pcm.size or not state.inband:
            return
        slot = state.slot
        if slot is None:
            slot = self._take_slot(state)       # the leg's first audio (after a silence)
        read = self._read
        write = state.write
        if self._tick_no - state.fed_tick > _STARVED_TICKS:
            write = max(write, read + _FRAME)   # (re)start: a frame of cushion
        elif write < read:
            write = read                        # the tick read past it (zeros): go on from there
        state.fed_tick = self._tick_no
        k = pcm.size
        excess = write + k - read - (_MAX_CUSHION + _FRAME)
        if excess > 0:                          # drop the oldest samples
            ring = self._ring
            held = write - read
            if excess >= held:
                ring[slot, read:write] = 0
                pcm = pcm[excess - held:]
                write = read
            else:
                ring[slot, read:write - excess] = ring[slot, read + excess:write]
                ring[slot, write - excess:write] = 0
                write -= excess
            k = pcm.size
        if write + k > _RING:
            state.write = write
            self._compact()
            write -= read
            read = 0
        end = write + k
        self._ring[slot, write:end] = pcm
        state.write = end
        if end > self._max_write:
            self._max_write = end

    def on_telephone_event(self, leg_id: str, payload: bytes, ssrc: int, timestamp: int,
                           marker: bool, now: float) -> None:
        state = self._legs.get(leg_id)
        if state is None or not state.events:
            return
        receiver = state.receiver
        if receiver is None:
            receiver = state.receiver = TelephoneEventReceiver()
        self._timed[leg_id] = state
        try:
            events = receiver.feed(payload, ssrc, timestamp, marker, now)
        except MalformedTelephoneEvent:
            return
        for event in events:
            if isinstance(event, TelephoneEventStarted):
                missed = state.gated and self._engine is not None and state.media is not None \
                    and self._engine.held_telephone_event(state.media, event.timestamp)
                self._detected(state, self._collector(state).rfc4733(event, now), now,
                               missed=missed)
                if state.gated:
                    self._touched[leg_id] = state

    def on_tick_end(self, now: float) -> None:
        """Once per media tick: the batched in-band detector over every slot, then timers."""
        if self._slots:
            self._run_detector(now)
        else:
            self._last_tick = None
        for leg_id, state in list(self._timed.items()):
            receiver = state.receiver
            pending = False
            if receiver is not None:
                at = receiver.get_timer()
                if at is not None and at <= now:
                    receiver.handle_timer(now)
                    at = receiver.get_timer()
                pending = at is not None
            matcher = state.matcher
            at = matcher.get_timer() if matcher is not None else None
            if matcher is not None and at is not None and at <= now:
                self._matched(state, matcher.handle_timer(now))
                self._touched[leg_id] = state
                at = matcher.get_timer()
            if not pending and at is None:
                del self._timed[leg_id]
        if self._touched:
            for state in self._touched.values():
                self._push(state)
            self._touched.clear()

    def _tick_samples(self, now: float) -> int:
        last = self._last_tick
        self._last_tick = now
        if last is None or not 0 <= now - last <= _MAX_TICK_SAMPLES / SAMPLE_RATE:
            self._carry = 0.0
            return _FRAME
        exact = (now - last) * SAMPLE_RATE + self._carry
        n = int(exact)
        self._carry = exact - n
        return n

    def _run_detector(self, now: float) -> None:
        n = self._tick_samples(now)
        if n <= 0:
            return
        self._tick_no += 1
        if self._tick_no >= self._next_sweep:
            self._next_sweep = self._tick_no + _RELEASE_TICKS // 2
            for state in [s for s in self._slots.values()
                          if self._tick_no - s.fed_tick > _RELEASE_TICKS and not s.tone_on]:
                self._release_slot(state)
        if self._read + n > _RING:
            self._compact()
        read = self._read
        self._read = read + n
        if self._max_write > read:
            self._silent_ticks = 0
        else:
            self._silent_ticks += 1
            if self._silent_ticks > _IDLE_DETECTOR_TICKS or not self._slots:
                return                  # nothing past ``read`` in any row: no zeroing either
        block = self._ring[:, read:read + n]
        self.detector_runs += 1
        events = self._detector.process(block, now)
        block[...] = 0                  # read: zeros again for the columns' next use
        for event in events:
            owner = self._slots.get(event.slot)
            if owner is None:
                continue
            if isinstance(event, InbandToneStarted):
                if self._first:
                    owner.tone_on = True
                    if event.digit in self._first or owner.held:
                        owner.muting = True       # the rest of this tone is not heard
                    self._touched[owner.leg.id] = owner
                self._detected(owner, self._collector(owner).inband(event, now), now,
                               missed=owner.muting)
            elif owner.tone_on:
                owner.tone_on = False
                self._touched[owner.leg.id] = owner

    # --- reports -----------------------------------------------------------------------

    def _detected(self, state: _LegDtmf, detected: DigitDetected | None, now: float, *,
                  missed: bool, info_type: str | None = None) -> None:
        if detected is None:
            return
        leg = state.leg
        method = detected.method.value
        extension = leg.user.extension if leg.user is not None else leg.party
        self._metrics.dtmf_digit(method)
        self._log.info("dtmf.digit", call_id=leg.call.id, leg_id=leg.id, digit=detected.digit,
                       method=method)
        self._bus.publish(DTMF_DIGIT, call_id=leg.call.id, digit=detected.digit, method=method,
                          leg_id=leg.id, extension=extension)
        # a due inter-digit timeout first: its releases concern the digits before this one
        matcher = self._matcher(state)
        self._matched(state, matcher.handle_timer(now))
        state.fed.append(_Fed(digit=detected.digit, missed=missed, info_type=info_type,
                              duration=detected.duration))
        self._matched(state, matcher.digit(detected.digit, now))
        if matcher.get_timer() is not None:
            self._timed[leg.id] = state

    def _matched(self, state: _LegDtmf, outputs: list[Any]) -> None:
        leg = state.leg
        for output in outputs:
            number: str | None
            if isinstance(output, DigitsReleased):
                count = len(output.digits)
                released, state.fed = state.fed[:count], state.fed[count:]
                self._pass_on(state, [fed for fed in released if fed.missed])
                continue
            state.fed.clear()                       # an action consumed every digit fed
            if isinstance(output, BlindTransferRequested):
                name, number, digits = "blind_transfer", output.number, ""
            elif isinstance(output, WarmTransferRequested):
                name, number, digits = "warm_transfer", output.number, ""
            elif isinstance(output, FeatureInvoked):
                name, number, digits = output.name, output.number, output.digits
            else:
                continue
            if not digits:
                digits = self._code_digits(name, number)
            if self._feature_hook is not None:
                try:
                    self._feature_hook(leg, name, number, digits)
                except Exception:
                    self._log.exception("dtmf.feature_failed", call_id=leg.call.id,
                                        leg_id=leg.id, feature=name)
        held = len(state.held)
        if len(state.fed) > held:
            del state.fed[:len(state.fed) - held]

    # --- the digit gate and passing digits on (module docstring) --------------------------

    def _push(self, state: _LegDtmf) -> None:
        """Tell the relay whether a code may be in progress on the leg."""
        engine, media = self._engine, state.media
        if engine is None or media is None:
            return
        held = bool(state.held)
        if state.muting and not held and not state.tone_on:
            state.muting = False
        if state.gated or state.muting != state.mute_pushed:
            try:
                engine.set_digit_hold(media, hold=held, mute=state.muting)
            except Exception:
                self._log.exception("dtmf.gate_failed", call_id=state.leg.call.id,
                                    leg_id=state.leg.id)
            state.mute_pushed = state.muting

    def _pass_on(self, state: _LegDtmf, digits: list[_Fed]) -> None:
        """Send released digits the peer missed to the peer, the way it takes them."""
        engine, media = self._engine, state.media
        if not digits or engine is None or media is None:
            return
        leg = state.leg
        try:
            peer_media = engine.peer(media)
            peer = self._legs.get(peer_media.id) if peer_media is not None else None
            if peer_media is None or peer is None:
                self._log.info("dtmf.not_passed_on", call_id=leg.call.id, leg_id=leg.id,
                               digits="".join(fed.digit for fed in digits), reason="no peer")
                return
            for fed in digits:
                how = self._method_for(peer, fed)
                if how == "info" and self._send_info(peer, fed):
                    sent = "info"
                else:
                    method = how if how in ("rfc4733", "inband") else None
                    sent = engine.send_digits(peer_media, fed.digit, method) or "dropped"
                self._log.info("dtmf.passed_on", call_id=leg.call.id, leg_id=leg.id,
                               to_leg=peer.leg.id, digit=fed.digit, method=sent)
        except Exception:
            self._log.exception("dtmf.pass_on_failed", call_id=leg.call.id, leg_id=leg.id)

    @staticmethod
    def _method_for(peer: _LegDtmf, fed: _Fed) -> str:
        if peer.mode in ("info", "rfc4733", "inband"):
            return peer.mode
        if peer.te_pt is not None:
            return "rfc4733"
        return "info" if fed.info_type is not None else "inband"

    def _send_info(self, peer: _LegDtmf, fed: _Fed) -> bool:
        if self._controller is None:
            return False
        content_type = "application/dtmf" if fed.info_type == "application/dtmf" \
            else "application/dtmf-relay"
        ms = round(1000 * fed.duration) if fed.duration is not None else _INFO_DURATION_MS
        return self._controller.send_in_dialog(
            peer.leg, "INFO", info_body(fed.digit, content_type, ms), content_type)

    def _code_digits(self, name: str, number: str | None) -> str:
        for code in self._codes:
            if code.name == name:
                return code.pattern.replace("{number}", number or "")
        return number or ""
