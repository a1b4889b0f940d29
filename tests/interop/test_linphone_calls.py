"""linphonec in a call through switch (issue 3): linphonec calls baresip, and
baresip calls linphonec; the callee answers, one side hangs up, both sides see
the call end, switch keeps no call and stores its record.

Signalling and SDP are what is checked here: linphonec runs without a sound
card (docs/INTEROP.md), so no audio is compared (test_media_calls.py does that
with baresip, pjsua2 and pyVoIP).  Like every interop test, a missing linphonec
or baresip skips locally and fails under CI=true (harness.require_binary).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .baresip import BaresipPeer
from .callcheck import calls_list, wait_no_active_calls
from .harness import Engine
from .linphone import LinphonePeer
from .test_call_gaps import wait_call_record
from .tones import sine, write_pcm_wav

pytestmark = pytest.mark.interop

LINPHONE, BARESIP = "1001", "1002"


def _peers(engine: Engine, peer_dir: Path) -> tuple[LinphonePeer, BaresipPeer]:
    linphone = LinphonePeer(peer_dir, extension=LINPHONE,
                            password=engine.user(LINPHONE).password, registrar=engine.sip_addr)
    wav = write_pcm_wav(peer_dir / "tone.wav", sine(440, 30))
    baresip = BaresipPeer(peer_dir / "baresip", extension=BARESIP,
                          password=engine.user(BARESIP).password, registrar=engine.sip_addr,
                          audio_source=f"aufile,{wav}")
    return linphone, baresip


@pytest.mark.parametrize("caller", ["linphonec", "baresip"])
def test_linphonec_call_through_switch(engine_factory, peer_dir: Path,  # type: ignore[no-untyped-def]
                                       caller: str) -> None:
    engine = engine_factory(rtp_ports=40).start()
    linphone, baresip = _peers(engine, peer_dir)
    with linphone, baresip:
        linphone.register()
        linphone.wait_registered()
        baresip.wait_registered()
        engine.wait_registered(LINPHONE)
        engine.wait_registered(BARESIP)
        mark = linphone.mark()
        if caller == "linphonec":
            linphone.dial(BARESIP)
            baresip.wait_event("CALL_INCOMING")
            baresip.answer()
        else:
            baresip.dial(LINPHONE)
            linphone.wait_output(r"(?i)receiving new incoming call from .*1002", start=mark)
            linphone.answer()
        linphone.wait_output(r"Call \d+ with .* connected\.", start=mark)
        baresip.wait_event("CALL_ESTABLISHED")
        (call,) = calls_list(engine)
        assert {str(p["extension_or_number"]) for p in call["parties"]} == {LINPHONE, BARESIP}
        linphone.hangup()                        # linphonec hangs up, caller or callee
        baresip.wait_event("CALL_CLOSED")
        linphone.wait_output(r"Call \d+ with .* ended", start=mark)
    wait_no_active_calls(engine)
    record = wait_call_record(engine)
    callers = {"linphonec": LINPHONE, "baresip": BARESIP}
    callee = BARESIP if caller == "linphonec" else LINPHONE
    assert (record["result"], record["caller"], record["callee"]) == (
        "answered", callers[caller], callee), record
    assert record["cause"] == ("caller_bye" if caller == "linphonec" else "callee_bye"), record
    assert record["answered_at"] is not None
    assert engine.metric_value("switch_calls_total", {"result": "answered"}) == 1
    assert engine.problems() == []
