"""The call scenarios (scenarios/uac_*.xml, uas_*.xml) checked SIPp against SIPp.

No engine here: each UAC scenario runs against the UAS scenario it is written
for, directly, so that a failure of the call tests (test_calls.py) or of
bench/bench_calls.py points at the engine and not at a scenario.  The 407
path of the UAC scenarios is checked against uas_auth_call.xml, a SIPp
stand-in for the engine's caller-side challenge.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import LOOPBACK
from .sipp import SCENARIO_DIR, SippServer, run_sipp, write_callers_csv
from .tones import TONE_A, TONE_B, sine, write_ulaw_wav

pytestmark = pytest.mark.interop

CALLER = ("1001", "secret1001")


def _callers(workdir: Path) -> Path:
    return write_callers_csv(workdir / "callers.csv", [CALLER])


def _pair(
    workdir: Path, uac: str, uas: str, calls: int = 3, **uac_kwargs: object
) -> tuple[object, object]:
    server = SippServer(workdir, uas, calls=calls, tag="uas")
    try:
        result = run_sipp(
            workdir, uac, server.addr, calls=calls, rate=20, users_csv=_callers(workdir),
            service="1002", auth_uri=f"1002@{LOOPBACK}:{server.port}", tag="uac",
            trace_msg=True, **uac_kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
    finally:
        uas_result = server.wait(10)
    return result, uas_result


@pytest.mark.parametrize("uas", ["uas_call", "uas_auth_call"])
def test_call_and_bye(sipp_binary: str, peer_dir: Path, uas: str) -> None:
    result, uas_result = _pair(peer_dir, "uac_call", uas, duration_ms=100)
    assert result.returncode == 0, result.describe()  # type: ignore[attr-defined]
    assert result.successful == 3, result.describe()  # type: ignore[attr-defined]
    assert result.late_180s == 0, result.describe()  # type: ignore[attr-defined]
    assert result.received(407) == (3 if uas == "uas_auth_call" else 0)  # type: ignore[attr-defined]
    assert uas_result.successful == 3, uas_result.describe()  # type: ignore[attr-defined]
    if uas == "uas_auth_call":
        # -auth_uri: the digest uri is the Request-URI, not SIPp's remote_ip:port default
        assert 'uri="sip:1002@127.0.0.1:' in result.messages  # type: ignore[attr-defined]


def test_call_with_rtp(sipp_binary: str, peer_dir: Path) -> None:
    write_ulaw_wav(peer_dir / "caller.wav", sine(TONE_A, 2))
    write_ulaw_wav(peer_dir / "callee.wav", sine(TONE_B, 2))
    result, uas_result = _pair(peer_dir, "uac_call_rtp", "uas_call_rtp", calls=2,
                               duration_ms=500)  # fmt: skip
    assert result.returncode == 0, result.describe()  # type: ignore[attr-defined]
    assert uas_result.successful == 2, uas_result.describe()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("uas", "code"), [("uas_busy", 486), ("uas_decline", 603)])
def test_rejected(sipp_binary: str, peer_dir: Path, uas: str, code: int) -> None:
    result, _ = _pair(peer_dir, "uac_reject", uas)
    assert result.returncode == 0, result.describe()  # type: ignore[attr-defined]
    assert result.received(code) == 3, result.describe()  # type: ignore[attr-defined]


def test_cancel_while_ringing(sipp_binary: str, peer_dir: Path) -> None:
    result, uas_result = _pair(peer_dir, "uac_cancel", "uas_ring")
    assert result.returncode == 0, result.describe()  # type: ignore[attr-defined]
    assert result.received(487) == 3, result.describe()  # type: ignore[attr-defined]
    assert uas_result.successful == 3, uas_result.describe()  # type: ignore[attr-defined]


def test_late_180_is_counted_not_failed(sipp_binary: str, peer_dir: Path) -> None:
    """A UAS that sends 180 after its 200 (what Sippy's sender threads can do)."""
    text = (SCENARIO_DIR / "uas_call.xml").read_text()
    ringing_start = text.index("  <send>\n    <![CDATA[\n      SIP/2.0 180 Ringing")
    ringing_end = text.index("  </send>\n", ringing_start) + len("  </send>\n")
    ringing = text[ringing_start:ringing_end]
    ok_end = text.index("  </send>\n", ringing_end) + len("  </send>\n")
    # 200, ACK, then the 180: SIPp defers a send that follows another send to its
    # next scheduling round, so a 180 right after the 200 would race the ACK.
    ok = text[ringing_end:ok_end].replace(' retrans="500"', "")
    ack = '  <recv request="ACK" crlf="true" />\n'
    rest = text[ok_end:].replace(ack, "", 1)
    # after the ACK, [last_CSeq:] is the ACK's: give the 180 the INVITE's CSeq
    ringing = ringing.replace("[last_CSeq:]", "CSeq: [$invcseq]")
    head = text[:ringing_start].replace(
        '<recv request="INVITE" crlf="true" rrs="true" />',
        '<recv request="INVITE" crlf="true" rrs="true">\n    <action>\n'
        '      <ereg regexp="[0-9]+ INVITE" search_in="hdr" header="CSeq:" '
        'assign_to="invcseq" />\n    </action>\n  </recv>',
    )
    swapped = head + ok + ack + ringing + rest
    path = peer_dir / "uas_late180.xml"
    path.write_text(swapped.replace('name="uas_call"', 'name="uas_late180"'))
    result, _ = _pair(peer_dir, "uac_call", str(path), duration_ms=100)
    assert result.returncode == 0, result.describe()  # type: ignore[attr-defined]
    assert result.late_180s == 3, result.describe()  # type: ignore[attr-defined]
