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

In-band, batched (DESIGN.md "Media and DTMF"): the media engine calls
``on_audio`` per tapped leg per tick with that tick's decoded samples; they
are only queued here.  At the end of the tick (``on_tick_end``) one
``[capacity, n]`` block is filled, one row per in-band slot, and the detector
runs **once** for all legs.  ``n`` follows the tick clock (samples of 8 kHz
audio elapsed since the previous tick) so every row advances in real time.
Packets do not arrive in step with the tick, so each slot keeps a playout
cushion: it starts consuming once it has one frame (20 ms) more than the
tick needs, a short tick is made up from the cushion, and a slot starved for
good (hold, the phone stopped sending) is padded with silence and primes
again; a cushion that grows past ``_MAX_CUSHION`` (sender clock drift, a
burst after a loop stall) drops its oldest samples.

Timers: the receivers' end-of-event timeout and the matchers' inter-digit
timeout run on the tick's ``now`` in ``on_tick_end`` — never ``asyncio.sleep`` —
for the legs that may have one (a telephone-event seen, digits held), not all.

Each keypress: one ``dtmf.digit`` event (``call_id``, ``digit``, ``method``,
``leg_id``, ``extension``), one ``switch_dtmf_digits_total{method}``
increment, one log line with ``call_id``; then the digit goes to the leg's
feature matcher, whose actions go to ``CallController.feature_invoked``.

What the relay does not offer (docs/INTEROP.md, "DTMF"): digits are not
regenerated towards the other party, so a feature code's digits are consumed
only in switch's own accounting — RFC 4733 packets and in-band tones are
relayed as they arrive, INFO requests are not relayed at all.
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
from switch.dtmf.rfc4733 import MalformedTelephoneEvent
from switch.events import DTMF_DIGIT
from switch.metrics import Metrics
from switch.sip.message import Request, Response, make_response

__all__ = ["DtmfWiring", "FeatureHook", "TapHost"]

DTMF_INFO_TYPES: Final = frozenset({"application/dtmf-relay", "application/dtmf"})
SAMPLE_RATE: Final = 8000
_FRAME: Final = 160
"""20 ms: the cushion a slot builds before it starts consuming."""
_MAX_CUSHION: Final = 800
"""100 ms of audio left over after a tick at most."""
_MAX_TICK_SAMPLES: Final = 4000
"""Half a second: a longer gap between ticks (a stalled loop) restarts the tick clock."""
_STARVED_TICKS: Final = 5
# Ticks with no audio from any leg after which the detector is no longer run:
# 200 ms of zeros is enough for any tone in progress to end (two agreeing
# silent windows), and then a tick of only silent legs — signalling-only calls,
# calls on hold — costs nothing but the loop over the slots.
_IDLE_DETECTOR_TICKS: Final = 10
"""Ticks with nothing received after which a slot primes again."""

Int16 = npt.NDArray[np.int16]


class TapHost(Protocol):
    """What the wiring needs of ``switch.media.MediaEngine``."""

    def add_tap(self, leg: Any, tap: Any) -> None: ...

    def remove_tap(self, leg: Any, tap: Any) -> None: ...


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


@dataclass(slots=True)
class _LegDtmf:
    leg: Leg
    mode: str
    collector: DigitCollector
    matcher: FeatureMatcher
    receiver: TelephoneEventReceiver | None = None
    slot: int | None = None
    media: Any = None
    """The media handle the wiring is tapped on (None: not tapped)."""
    queued: list[Int16] = field(default_factory=list)
    cushion: Int16 = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    primed: bool = False
    starved: int = 0

    @property
    def inband(self) -> bool:
        return self.mode in ("auto", "inband")

    @property
    def rfc4733(self) -> bool:
        return self.mode in ("auto", "rfc4733")

    @property
    def info(self) -> bool:
        return self.mode in ("auto", "info")


class DtmfWiring:
    """The engine-wide DTMF tap, INFO handler and per-leg DTMF state."""

    def __init__(self, features: FeaturesConfig, *, engine: TapHost | None, bus: EventSink,
                 metrics: Metrics, log: FilteringBoundLogger, clock: Callable[[], float],
                 feature_hook: FeatureHook | None = None) -> None:
        self._codes = tuple(FeatureCode(name=name, pattern=pattern)
                            for name, pattern in features.codes)
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
        self._detector = InbandDetector(capacity=16)
        self._last_tick: float | None = None
        self._carry = 0.0
        self._silent_ticks = 0
        self.detector_runs = 0
        """``InbandDetector.process`` calls so far (one per tick with in-band legs)."""

    def attach(self, controller: _Controller) -> None:
        """Register with the call controller (INFO, media observer, feature actions)."""
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
            if state.rfc4733 and config.telephone_event_pt is not None \
                    and state.receiver is None:
                state.receiver = TelephoneEventReceiver()
            if state.inband and state.slot is None:
                state.slot = self._detector.add_channel()
                self._slots[state.slot] = state
            if self._engine is not None and state.media is None and leg.media is not None:
                self._engine.add_tap(leg.media, self)
                state.media = leg.media
        except Exception:
            self._log.exception("dtmf.leg_failed", call_id=leg.call.id, leg_id=leg.id)

    def leg_media_closed(self, leg: Leg) -> None:
        state = self._legs.pop(leg.id, None)
        self._timed.pop(leg.id, None)
        if state is None:
            return
        if state.slot is not None:
            self._slots.pop(state.slot, None)
            self._detector.remove_channel(state.slot)
            state.slot = None
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
            state = _LegDtmf(leg=leg, mode=mode, collector=DigitCollector(),
                             matcher=FeatureMatcher(self._codes,
                                                    inter_digit_timeout=self._inter_digit))
            self._legs[leg.id] = state
        return state

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
                self._detected(state, state.collector.info(info, now), now)
        except Exception:
            self._log.exception("dtmf.info_failed", call_id=leg.call.id, leg_id=leg.id)
        return make_response(request, 200)

    # --- the media tap -----------------------------------------------------------------

    def on_audio(self, leg_id: str, pcm: Int16, now: float) -> None:
        state = self._legs.get(leg_id)
        if state is not None and state.slot is not None and pcm.size:
            state.queued.append(pcm)

    def on_telephone_event(self, leg_id: str, payload: bytes, ssrc: int, timestamp: int,
                           marker: bool, now: float) -> None:
        state = self._legs.get(leg_id)
        if state is None or state.receiver is None:
            return
        self._timed[leg_id] = state
        try:
            events = state.receiver.feed(payload, ssrc, timestamp, marker, now)
        except MalformedTelephoneEvent:
            return
        for event in events:
            if isinstance(event, TelephoneEventStarted):
                self._detected(state, state.collector.rfc4733(event, now), now)

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
            at = state.matcher.get_timer()
            if at is not None and at <= now:
                self._matched(state, state.matcher.handle_timer(now))
                at = state.matcher.get_timer()
            if not pending and at is None:
                del self._timed[leg_id]

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
        block = np.zeros((self._detector.capacity, n), dtype=np.int16)
        fed = False
        for slot, state in self._slots.items():
            if state.queued:
                parts = [state.cushion, *state.queued] if state.cushion.size else state.queued
                buffered = np.concatenate(parts) if len(parts) > 1 else parts[0]
                state.queued.clear()
                state.starved = 0
            else:
                buffered = state.cushion
                state.starved += 1
                if state.starved >= _STARVED_TICKS:
                    state.primed = False
            if not state.primed:
                if buffered.size < n + _FRAME:
                    state.cushion = buffered
                    continue
                state.primed = True
            take = min(n, buffered.size)
            block[slot, :take] = buffered[:take]
            fed = fed or take > 0
            rest = buffered[take:]
            if rest.size > _MAX_CUSHION:
                rest = rest[rest.size - _MAX_CUSHION:]
            state.cushion = rest
        if fed:
            self._silent_ticks = 0
        else:
            self._silent_ticks += 1
            if self._silent_ticks > _IDLE_DETECTOR_TICKS:
                return
        self.detector_runs += 1
        for event in self._detector.process(block, now):
            if isinstance(event, InbandToneStarted):
                owner = self._slots.get(event.slot)
                if owner is not None:
                    self._detected(owner, owner.collector.inband(event, now), now)

    # --- reports -----------------------------------------------------------------------

    def _detected(self, state: _LegDtmf, detected: DigitDetected | None, now: float) -> None:
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
        self._matched(state, state.matcher.digit(detected.digit, now))
        if state.matcher.get_timer() is not None:
            self._timed[leg.id] = state

    def _matched(self, state: _LegDtmf, outputs: list[Any]) -> None:
        leg = state.leg
        for output in outputs:
            number: str | None
            if isinstance(output, DigitsReleased):
                continue                  # the relay already passed them on (module docstring)
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

    def _code_digits(self, name: str, number: str | None) -> str:
        for code in self._codes:
            if code.name == name:
                return code.pattern.replace("{number}", number or "")
        return number or ""
