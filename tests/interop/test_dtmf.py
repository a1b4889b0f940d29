"""DTMF through switch from real peers, seen on ``/api/v1/events`` (issue 4).

- baresip ``sndcode``: RFC 4733 telephone-event, the PT negotiated through
  switch's SDP; a feature code among the digits is reported as
  ``feature.invoked``.
- SIPp INFO after the call is up (``uac_call_info.xml``): ``application/dtmf-relay``
  and ``application/dtmf`` bodies, one bad body answered 400.
- In-band: baresip plays a WAV of DTMF tones (generated here with
  tests/dtmf/siggen.py, G.711 µ-law round-tripped) over PCMU; switch's batched
  detector hears them on the caller's leg.

Each keypress must appear exactly once, in order, with the method it came by.

What the *callee* hears (feature-code digits held back, the others passed on
once): baresip reports every DTMF it receives, RFC 4733 or INFO, as a
``CALL_DTMF_START`` event with the digit in ``param``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from .baresip import BaresipPeer
from .callcheck import wait_no_active_calls
from .harness import LOOPBACK, Engine, wait_until
from .sipp import registered_uas, run_sipp, write_callers_csv
from .tones import sine, write_pcm_wav

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dtmf"))
import siggen  # noqa: E402

pytestmark = pytest.mark.interop

CALLER, CALLEE = "1001", "1002"
INFO_CALLEE, INFO_PASSWORD = "1006", "secret1006"
# a user whose phone takes DTMF by SIP INFO only (the harness writes no dtmf_mode)
INFO_USER = f"""[[users]]
extension = "{INFO_CALLEE}"
name = "Info phone"
password = "{INFO_PASSWORD}"
dtmf_mode = "info"
"""


class EventStream:
    """``/api/v1/events`` read by a thread of its own; keeps DTMF and feature events."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.events: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        url = f"ws://{self.engine.host}:{self.engine.http_port}/api/v1/events"
        headers = {"Authorization": f"Bearer {self.engine.token}"}
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(url, headers=headers) as ws:
            self._ready.set()
            reader = asyncio.ensure_future(self._read(ws))
            await self._stop.wait()
            reader.cancel()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                return
            event = json.loads(message.data)
            if event["type"] in ("dtmf.digit", "feature.invoked"):
                self.events.append(event)

    def __enter__(self) -> EventStream:
        self._thread.start()
        assert self._ready.wait(10), "no WebSocket connection to /api/v1/events"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def digits(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "dtmf.digit"]

    def wait_digits(self, count: int, timeout: float = 15.0) -> str:
        wait_until(lambda: len(self.digits()) >= count, timeout, f"{count} dtmf.digit events",
                   detail=lambda: f"got {self.digits()}\n{self.engine.diagnostics()}")
        time.sleep(0.5)          # a duplicate report would arrive within this
        return "".join(e["digit"] for e in self.digits())


@pytest.fixture
def media_engine(engine_factory: Callable[..., Engine]) -> Engine:
    return engine_factory(rtp_ports=64, extra_config=INFO_USER).start()


def _tone(peer_dir: Path, freq: float) -> str:
    # baresip 1.0.0's ausine runs at 48 kHz only (start_source fails on a G.711 call)
    return f"aufile,{write_pcm_wav(peer_dir / f'tone{freq:g}.wav', sine(freq, 30, 0.1))}"


def _baresip(engine: Engine, peer_dir: Path, ext: str, source: str) -> BaresipPeer:
    return BaresipPeer(peer_dir / f"baresip-{ext}", extension=ext,
                       password=engine.user(ext).password, registrar=engine.sip_addr,
                       audio_source=source)


def _call(engine: Engine, a: BaresipPeer, b: BaresipPeer) -> None:
    a.wait_registered()
    b.wait_registered()
    engine.wait_registered(CALLEE)
    a.dial(CALLEE)
    b.wait_event("CALL_INCOMING")
    b.answer()
    a.wait_event("CALL_ESTABLISHED")
    b.wait_event("CALL_ESTABLISHED")


def _hang_up(a: BaresipPeer, b: BaresipPeer) -> None:
    a.hangup()
    b.wait_event("CALL_CLOSED")
    a.wait_event("CALL_CLOSED")


def _caller_leg(engine: Engine) -> str:
    (call,) = engine.api("GET", "/api/v1/calls")
    legs = {p["extension_or_number"]: p["leg_id"] for p in call["parties"]}
    return str(legs[CALLER])


def test_baresip_rfc4733_digits_and_a_feature_code(media_engine: Engine,
                                                    peer_dir: Path) -> None:
    engine = media_engine
    sent = "159*11003#"          # "*1" + 1003 + "#": blind transfer to 1003
    a = _baresip(engine, peer_dir, CALLER, _tone(peer_dir, 440))
    b = _baresip(engine, peer_dir, CALLEE, _tone(peer_dir, 880))
    with a, b, EventStream(engine) as stream:
        _call(engine, a, b)
        leg = _caller_leg(engine)
        for digit in sent:
            a.send_dtmf(digit)
            time.sleep(0.25)
        got = stream.wait_digits(len(sent))
        _hang_up(a, b)
    wait_no_active_calls(engine)
    assert got == sent, stream.digits()
    for event in stream.digits():
        assert event["method"] == "rfc4733" and event["leg_id"] == leg, event
        assert event["extension"] == CALLER and event["call_id"]
    (feature,) = [e for e in stream.events if e["type"] == "feature.invoked"]
    assert feature["feature"] == "blind_transfer" and feature["number"] == "1003"
    assert engine.metric_value("switch_dtmf_digits_total", {"method": "rfc4733"}) == len(sent)


def test_sipp_info_digits(media_engine: Engine, peer_dir: Path) -> None:
    engine = media_engine
    callee = registered_uas(peer_dir, "uas_call", engine.sip_addr, CALLEE,
                            engine.user(CALLEE).password, calls=1)
    csv = write_callers_csv(peer_dir / "caller.csv", [(CALLER, engine.user(CALLER).password)])
    with EventStream(engine) as stream:
        result = run_sipp(peer_dir, "uac_call_info", engine.sip_addr, users_csv=csv,
                          service=CALLEE, auth_uri=f"{CALLEE}@{LOOPBACK}:{engine.sip_port}",
                          tag="caller", calls=1, duration_ms=300)
        got = stream.wait_digits(4)
    callee.wait(10)
    assert result.returncode == 0, result.describe() + engine.diagnostics()
    wait_no_active_calls(engine)
    assert got == "7*0#", stream.digits()
    assert {e["method"] for e in stream.digits()} == {"info"}
    assert {e["extension"] for e in stream.digits()} == {CALLER}
    assert engine.metric_value("switch_dtmf_digits_total", {"method": "info"}) == 4


def test_baresip_inband_tones_from_a_wav(media_engine: Engine, peer_dir: Path) -> None:
    engine = media_engine
    sent = "2580#*"
    case = siggen.dtmf_case(np.random.default_rng(4), category="interop", name="wav",
                            digits=sent, on_ms=90, off_ms=110, low_dbm0=-12, high_dbm0=-10)
    lead = np.zeros(8000, dtype=np.int16)           # 1 s: the call settles, RTP latches
    wav = write_pcm_wav(peer_dir / "dtmf.wav",
                        np.concatenate([lead, case.linear, np.zeros(16000, np.int16)]))
    a = _baresip(engine, peer_dir, CALLER, f"aufile,{wav}")
    b = _baresip(engine, peer_dir, CALLEE, _tone(peer_dir, 880))
    with a, b, EventStream(engine) as stream:
        _call(engine, a, b)
        leg = _caller_leg(engine)
        got = stream.wait_digits(len(sent))
        _hang_up(a, b)
    wait_no_active_calls(engine)
    assert got == sent, stream.digits()
    for event in stream.digits():
        assert event["method"] == "inband" and event["leg_id"] == leg, event
    assert engine.metric_value("switch_dtmf_digits_total", {"method": "inband"}) == len(sent)


def _received_dtmf(peer: BaresipPeer, count: int) -> str:
    """The digits ``peer`` reported receiving, once ``count`` have arrived."""
    def got() -> list[str]:
        return [str(e.get("param")) for e in list(peer.events)
                if e.get("type") == "CALL_DTMF_START"]
    wait_until(lambda: len(got()) >= count, 15, f"{count} CALL_DTMF_START at the callee",
               detail=lambda: f"got {got()}\n{peer.diagnostics()}")
    time.sleep(0.5)          # a duplicate or a leaked code digit would arrive within this
    return "".join(got())


def test_feature_code_digits_do_not_reach_the_callee(media_engine: Engine,
                                                     peer_dir: Path) -> None:
    """RFC 4733 from A: "5" passes as it comes, "*4" (warm_transfer_cancel) is
    consumed, "*7" is no code: held, then regenerated towards B."""
    engine = media_engine
    sent = "5*4*7"
    a = _baresip(engine, peer_dir, CALLER, _tone(peer_dir, 440))
    b = _baresip(engine, peer_dir, CALLEE, _tone(peer_dir, 880))
    with a, b, EventStream(engine) as stream:
        _call(engine, a, b)
        for digit in sent:
            a.send_dtmf(digit)
            time.sleep(0.25)
        got = stream.wait_digits(len(sent))
        heard = _received_dtmf(b, 3)
        _hang_up(a, b)
    wait_no_active_calls(engine)
    assert got == sent, stream.digits()
    (feature,) = [e for e in stream.events if e["type"] == "feature.invoked"]
    assert feature["feature"] == "warm_transfer_cancel" and feature["digits"] == "*4"
    assert heard == "5*7", b.diagnostics()


@pytest.mark.parametrize(("callee", "heard"), [
    # auto, telephone-event negotiated: INFO digits regenerated as RFC 4733
    (CALLEE, "7*0#"),
    # dtmf_mode "info": relayed as INFO with the body type they came in; baresip
    # 1.0.0 takes application/dtmf-relay only (488 to the application/dtmf "0")
    (INFO_CALLEE, "7*#"),
])
def test_sipp_info_digits_reach_the_callee(media_engine: Engine, peer_dir: Path,
                                           callee: str, heard: str) -> None:
    """INFO 7, *, (bad), 0, #: "*" is held (it may begin a code) until "0" shows
    it is none; every digit reaches the callee once, in order."""
    engine = media_engine
    password = INFO_PASSWORD if callee == INFO_CALLEE else engine.user(callee).password
    b = BaresipPeer(peer_dir / f"baresip-{callee}", extension=callee, password=password,
                    registrar=engine.sip_addr, audio_source=_tone(peer_dir, 880),
                    answermode="auto")
    csv = write_callers_csv(peer_dir / "caller.csv", [(CALLER, engine.user(CALLER).password)])
    with b, EventStream(engine) as stream:
        b.wait_registered()
        engine.wait_registered(callee)
        # the call stays up 2 s after the last INFO: room for the regenerated digits
        result = run_sipp(peer_dir, "uac_call_info", engine.sip_addr, users_csv=csv,
                          service=callee, auth_uri=f"{callee}@{LOOPBACK}:{engine.sip_port}",
                          tag="caller", calls=1, duration_ms=2000)
        assert result.returncode == 0, result.describe() + engine.diagnostics()
        got = stream.wait_digits(4)
        received = "".join(str(e.get("param")) for e in list(b.events)
                           if e.get("type") == "CALL_DTMF_START")
    wait_no_active_calls(engine)
    assert got == "7*0#", stream.digits()
    assert received == heard, b.diagnostics()
