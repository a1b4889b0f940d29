"""Audio through switch between real softphones (issue 3).

- baresip A calls baresip B by extension and by direct number; each plays a
  different tone from a WAV (``aufile`` source) and records what it receives
  (``sndfile``); each must have received the *other's* tone, from switch's RTP
  ports (baresip's log names the address it latched and the RTCP peer).
- pjsua2 puts the call on hold and resumes it (re-INVITE a=sendonly, then
  a=sendrecv): the held side hears the other's tone before, not during, and
  again after.
- pyVoIP (a second client family) answers a baresip call: tones both ways.

Tones are generated at test time (tones.py); the checks are FFT/Goertzel
energies per 100 ms window, never timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .baresip import BaresipPeer
from .callcheck import wait_no_active_calls
from .harness import Engine, wait_until
from .pjsua_peer import PjsuaPeer
from .pyvoip_peer import PyVoipPeer
from .tones import TONE_A, TONE_B, ToneReport, read_wav, sine, tone_report, write_pcm_wav

pytestmark = pytest.mark.interop

#: seconds of audio each test lets through the call (the checks count windows)
TALK = 3.0


def _received(path: Path, freq: float) -> ToneReport:
    samples, rate = read_wav(path)
    return tone_report(samples, rate, freq)


def _in_engine_range(engine: Engine, port: int) -> bool:
    lo, hi = engine.rtp_range
    return lo <= port <= hi


def _assert_heard(report: ToneReport, other: ToneReport, who: str) -> None:
    # at least a second of the other side's tone, and it is what dominates
    assert report.tone_windows >= 10, f"{who}: {report} (own-tone check: {other})"
    assert report.tone_windows > other.tone_windows, f"{who}: {report} vs {other}"


@pytest.fixture
def media_engine(engine_factory: Callable[..., Engine]) -> Engine:
    return engine_factory(rtp_ports=200).start()


def _baresip(engine: Engine, peer_dir: Path, ext: str, freq: float) -> BaresipPeer:
    wav = write_pcm_wav(peer_dir / f"tone_{ext}.wav", sine(freq, 60))
    return BaresipPeer(
        peer_dir / f"baresip-{ext}", extension=ext, password=engine.user(ext).password,
        registrar=engine.sip_addr, audio_source=f"aufile,{wav}",
        record_dir=peer_dir / f"rec-{ext}",
    )  # fmt: skip


@pytest.mark.parametrize("dialled", ["extension", "number"])
def test_baresip_calls_baresip_tones_both_ways(
    media_engine: Engine, peer_dir: Path, dialled: str
) -> None:
    engine = media_engine
    a = _baresip(engine, peer_dir, "1001", TONE_A)
    b = _baresip(engine, peer_dir, "1002", TONE_B)
    target = "1002" if dialled == "extension" else engine.user("1002").numbers[0]
    with a, b:
        a.wait_registered()
        b.wait_registered()
        engine.wait_registered("1002")
        a.dial(target)
        b.wait_event("CALL_INCOMING")
        b.answer()
        a.wait_event("CALL_ESTABLISHED")
        b.wait_event("CALL_ESTABLISHED")
        time.sleep(TALK)  # let audio flow; what arrived is checked below, not when
        peers = {"A": a.rtp_peers(), "B": b.rtp_peers()}
        a.hangup()
        b.wait_event("CALL_CLOSED")
        a.wait_event("CALL_CLOSED")
    wait_no_active_calls(engine)

    for name, seen in peers.items():
        assert "rtcp_remote" in seen and "rtp_source" in seen, (name, seen)
        host, rtcp = seen["rtcp_remote"]
        assert host == engine.host and _in_engine_range(engine, rtcp - 1), (
            f"{name}: SDP media address {host}:{rtcp - 1} is not switch's "
            f"{engine.host} {engine.rtp_range}"
        )
        src_host, src_port = seen["rtp_source"]
        assert src_host == engine.host and _in_engine_range(engine, src_port), (
            f"{name}: RTP came from {src_host}:{src_port}, not from switch's ports"
        )
    _, a_dec = a.recordings()
    _, b_dec = b.recordings()
    _assert_heard(_received(a_dec, TONE_B), _received(a_dec, TONE_A), "A hears B")
    _assert_heard(_received(b_dec, TONE_A), _received(b_dec, TONE_B), "B hears A")


def _media_event(peer: PjsuaPeer, status: str, after: int) -> Callable[[dict[str, Any]], bool]:
    def match(m: dict[str, Any]) -> bool:
        if m.get("event") != "media_state":
            return False
        later = any(m is x for x in peer.messages[after:])  # identical dicts repeat
        return later and any(s.get("status") == status for s in m.get("streams", []))

    return match


def test_pjsua2_hold_and_resume(media_engine: Engine, peer_dir: Path) -> None:
    engine = media_engine
    wav_a = write_pcm_wav(peer_dir / "a.wav", sine(TONE_A, 10))
    wav_b = write_pcm_wav(peer_dir / "b.wav", sine(TONE_B, 10))
    a = PjsuaPeer(peer_dir / "pj-1001", extension="1001", password=engine.user("1001").password,
                  registrar=engine.sip_addr)  # fmt: skip
    b = PjsuaPeer(peer_dir / "pj-1002", extension="1002", password=engine.user("1002").password,
                  registrar=engine.sip_addr)  # fmt: skip
    rec = {k: peer_dir / f"a_{k}.wav" for k in ("before", "hold", "after")}
    with a, b:
        a.wait_registered()
        b.wait_registered()
        a.play(wav_a)
        b.play(wav_b)
        a.record(rec["before"])
        a.dial("1002")
        b.wait_event("incoming_call")
        b.answer(180)
        b.answer(200)
        a.wait_event("call_state", state="CONFIRMED")
        a.wait_message(_media_event(a, "ACTIVE", 0), 10, "media ACTIVE")
        time.sleep(TALK)

        mark = len(a.messages)
        a.record(rec["hold"])
        a.hold()
        a.wait_message(_media_event(a, "LOCAL_HOLD", mark), 10, "LOCAL_HOLD after re-INVITE")
        b.wait_message(lambda m: m.get("event") == "media_state"
                       and any(s.get("status") == "REMOTE_HOLD" for s in m.get("streams", [])),
                       10, "B sees the hold")  # fmt: skip
        time.sleep(TALK)

        mark = len(a.messages)
        a.record(rec["after"])
        a.resume()
        a.wait_message(_media_event(a, "ACTIVE", mark), 10, "ACTIVE after resume")
        time.sleep(TALK)
        a.stop_record()
        states = a.media_states() + b.media_states()
        a.hangup()
        b.wait_event("call_state", state="DISCONNECTED")
    wait_no_active_calls(engine)

    for m in states:
        for s in m["streams"]:
            if s.get("remote_rtp"):
                host, port = s["remote_rtp"].rsplit(":", 1)
                assert host == engine.host and _in_engine_range(engine, int(port)), m
    before = _received(rec["before"], TONE_B)
    hold = _received(rec["hold"], TONE_B)
    after = _received(rec["after"], TONE_B)
    detail = f"before: {before}\nhold: {hold}\nafter: {after}"
    assert before.tone_windows >= 10, detail
    # on hold (A sendonly, B recvonly) B's tone must stop reaching A; a few
    # windows of tail while the re-INVITEs cross are tolerated
    assert hold.tone_windows <= 5, detail
    assert hold.tone_windows < before.tone_windows / 3, detail
    assert after.tone_windows >= 10, "audio did not resume\n" + detail


def test_baresip_calls_pyvoip_tones_both_ways(media_engine: Engine, peer_dir: Path) -> None:
    engine = media_engine
    a = _baresip(engine, peer_dir, "1001", TONE_A)
    p = PyVoipPeer(peer_dir / "pyvoip-1005", extension="1005",
                   password=engine.user("1005").password, registrar=engine.sip_addr)  # fmt: skip
    heard = peer_dir / "pyvoip_heard.wav"
    with a, p:
        a.wait_registered()
        p.wait_registered()
        engine.wait_registered("1005")
        a.dial("1005")
        p.wait_event("incoming_call")
        p.answer()
        a.wait_event("CALL_ESTABLISHED")
        p.wait_message(lambda m: m.get("event") == "call_state" and m.get("state") == "ANSWERED",
                       10, "pyVoIP ANSWERED")  # fmt: skip
        p.tone(TONE_B, TALK + 2)
        p.record(heard, TALK)
        p.wait_event("recorded", TALK + 10)
        a.hangup()
        a.wait_event("CALL_CLOSED")
        wait_until(lambda: any(m.get("state") == "ENDED" for m in p.events("call_state")),
                   10, "pyVoIP call ENDED")  # fmt: skip
    wait_no_active_calls(engine)
    _, a_dec = a.recordings()
    _assert_heard(_received(a_dec, TONE_B), _received(a_dec, TONE_A), "baresip hears pyVoIP")
    _assert_heard(_received(heard, TONE_A), _received(heard, TONE_B), "pyVoIP hears baresip")
