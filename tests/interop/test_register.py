"""REGISTER, OPTIONS and the registrations API, driven by real SIP peers.

CONTRACT.md: digest 401 with qop="auth" (MD5 by default); 200 lists the
bound contacts with their expiries; Expires 0 removes; too short -> 423 with
Min-Expires; wrong password and unknown user look the same; registrations
survive a restart; GET /api/v1/registrations; switch_registrations gauge.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .baresip import BaresipPeer
from .harness import Engine, free_port, metric_value, require_binary, wait_until
from .linphone import LinphonePeer
from .pjsua_peer import PjsuaPeer
from .pyvoip_peer import PyVoipPeer
from .sipmsg import SipClient, parse_challenge
from .sipp import run_sipp, write_users_csv

pytestmark = pytest.mark.interop

TRANSPORTS = ["udp", "tcp"]


def _users_csv(engine: Engine, path: Path, extensions: list[str]) -> Path:
    return write_users_csv(path, [(e, engine.user(e).password) for e in extensions])


# --------------------------------------------------------------------------
# SIPp
# --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sipp_digest_register(engine: Engine, peer_dir: Path, transport: str) -> None:
    csv = _users_csv(engine, peer_dir / "users.csv", ["1001", "1002"])
    result = run_sipp(peer_dir, "register", engine.sip_addr, transport=transport, calls=2,
                      users_csv=csv)  # fmt: skip
    assert result.returncode == 0, result.describe()
    assert result.successful == 2, result.describe()

    regs = {r["extension"]: r for r in engine.registrations()}
    assert {"1001", "1002"} <= set(regs), regs
    for ext in ("1001", "1002"):
        reg = regs[ext]
        assert f"sip:{ext}@127.0.0.1" in reg["contact"], reg
        assert 0 < int(reg["expires"]) <= 3600, reg
        assert reg["user_agent"] == "SIPp", reg


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sipp_unregister_expires_zero(engine: Engine, peer_dir: Path, transport: str) -> None:
    csv = _users_csv(engine, peer_dir / "users.csv", ["1003"])
    # RFC 3261 §10.3 step 8: expires 0 removes the binding of *that* Contact URI,
    # so the unregister must come from the same address as the register.
    local_port = free_port("127.0.0.1")
    reg = run_sipp(peer_dir, "register", engine.sip_addr, transport=transport, users_csv=csv,
                   local_port=local_port)
    assert reg.returncode == 0, reg.describe()
    engine.wait_registered("1003")

    unreg = run_sipp(peer_dir, "unregister", engine.sip_addr, transport=transport, users_csv=csv,
                     tag="unreg", local_port=local_port)  # fmt: skip
    assert unreg.returncode == 0, unreg.describe()
    assert "1003" not in engine.registered_extensions()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sipp_wrong_password_and_unknown_user_refused(
    engine: Engine, peer_dir: Path, transport: str
) -> None:
    csv = write_users_csv(peer_dir / "bad.csv", [("1001", "not-the-password"), ("4711", "x")])
    result = run_sipp(peer_dir, "register_wrong_password", engine.sip_addr, transport=transport,
                      calls=2, users_csv=csv)  # fmt: skip
    assert result.returncode == 0, result.describe()
    assert result.successful == 2, result.describe()
    assert not engine.registrations()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sipp_options(engine: Engine, peer_dir: Path, transport: str) -> None:
    result = run_sipp(peer_dir, "options", engine.sip_addr, transport=transport, calls=20,
                      rate=50)  # fmt: skip
    assert result.returncode == 0, result.describe()
    assert result.successful == 20, result.describe()


# --------------------------------------------------------------------------
# raw client: details of the REGISTER responses
# --------------------------------------------------------------------------


def _shape(resp: object) -> tuple[int, str, list[str], list[str]]:
    """What an observer can compare without the per-request values."""
    from .sipmsg import SipResponse

    assert isinstance(resp, SipResponse)
    names = sorted(set(resp.header_names()))
    chal = resp.header("www-authenticate") or resp.header("proxy-authenticate") or ""
    params = sorted(parse_challenge(chal)) if chal else []
    return resp.status, resp.reason, names, params


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_challenge_is_md5_digest_with_qop_auth(engine: Engine, transport: str) -> None:
    with SipClient(engine.sip_addr, transport) as client:
        first, _ = client.register("1001", None)
    assert first.status == 401, first.raw
    chal = first.header("www-authenticate")
    assert chal is not None and chal.lower().startswith("digest "), first.raw
    params = parse_challenge(chal)
    assert params.get("realm") == engine.realm
    assert params.get("nonce")
    assert "auth" in [q.strip() for q in params.get("qop", "").split(",")], chal
    assert params.get("algorithm", "MD5").upper() == "MD5", chal


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_password_looks_like_unknown_user(engine: Engine, transport: str) -> None:
    with SipClient(engine.sip_addr, transport) as client:
        wrong = client.register("1002", "definitely-wrong")
    with SipClient(engine.sip_addr, transport) as client:
        unknown = client.register("4242", "definitely-wrong")
    assert wrong[1] is not None and unknown[1] is not None
    assert wrong[1].status in (401, 403), wrong[1].raw
    assert _shape(wrong[0]) == _shape(unknown[0])
    assert _shape(wrong[1]) == _shape(unknown[1])
    assert not engine.registrations()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_register_200_lists_contact_with_expiry(engine: Engine, transport: str) -> None:
    with SipClient(engine.sip_addr, transport) as client:
        _, ok = client.register("1004", engine.user("1004").password, expires=1800)
        assert ok is not None and ok.status == 200, ok.raw if ok else None
        contacts = ok.all("contact")
        joined = ",".join(contacts)
        assert f"sip:1004@{client.local[0]}:{client.local[1]}" in joined, ok.raw
        expiry = re.search(r"expires=(\d+)", joined, re.I)
        assert expiry is not None or ok.header("expires") is not None, ok.raw
        value = int(expiry.group(1) if expiry else ok.header("expires") or 0)
        assert 0 < value <= 1800, ok.raw

        reg = engine.wait_registered("1004")
        assert 0 < int(reg["expires"]) <= 1800

        _, gone = client.register("1004", engine.user("1004").password, expires=0)
        assert gone is not None and gone.status == 200, gone.raw if gone else None
    assert "1004" not in engine.registered_extensions()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_too_short_expiry_is_423(engine: Engine, transport: str) -> None:
    with SipClient(engine.sip_addr, transport) as client:
        first, second = client.register("1005", engine.user("1005").password, expires=5)
    final = second or first
    assert final.status == 423, final.raw
    min_expires = final.header("min-expires")
    assert min_expires is not None and int(min_expires) >= 60, final.raw
    assert "1005" not in engine.registered_extensions()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options_200(engine: Engine, transport: str) -> None:
    with SipClient(engine.sip_addr, transport) as client:
        assert client.options().status == 200


# --------------------------------------------------------------------------
# API, metrics, restart
# --------------------------------------------------------------------------


def test_api_needs_the_token(engine: Engine) -> None:
    assert engine.http("GET", "/api/v1/registrations", token=None).status == 401
    bad = engine.http("GET", "/api/v1/registrations", token="wrong-token")
    assert bad.status == 401
    err = bad.json()
    assert isinstance(err.get("error"), dict) and "code" in err["error"], err
    assert engine.http("GET", "/healthz", token=None).status == 200


def test_registrations_survive_restart(engine: Engine, peer_dir: Path) -> None:
    csv = _users_csv(engine, peer_dir / "users.csv", ["1001", "1002", "1003"])
    result = run_sipp(peer_dir, "register", engine.sip_addr, calls=3, users_csv=csv)
    assert result.returncode == 0, result.describe()
    before = {r["extension"]: r for r in engine.registrations()}
    assert {"1001", "1002", "1003"} <= set(before)

    engine.restart()

    after = {r["extension"]: r for r in engine.registrations()}
    assert {"1001", "1002", "1003"} <= set(after), after
    for ext in ("1001", "1002", "1003"):
        assert after[ext]["contact"] == before[ext]["contact"]
        assert 0 < int(after[ext]["expires"]) <= int(before[ext]["expires"])
    gauge = engine.metric_value("switch_registrations")
    assert gauge is not None and gauge >= 3


def test_metrics_registrations_and_messages(engine: Engine, peer_dir: Path) -> None:
    assert engine.metric_value("switch_registrations") == 0
    csv = _users_csv(engine, peer_dir / "users.csv", ["1001", "1002"])
    result = run_sipp(peer_dir, "register", engine.sip_addr, calls=2, users_csv=csv)
    assert result.returncode == 0, result.describe()

    text = engine.metrics()
    assert metric_value(text, "switch_registrations") == 2
    registers_in = metric_value(
        text, "switch_sip_messages_total", {"direction": "in", "method": "REGISTER"}
    )
    assert registers_in is not None and registers_in >= 4, text
    out_200 = metric_value(text, "switch_sip_messages_total", {"direction": "out", "status": "200"})
    assert out_200 is not None and out_200 >= 2, text
    assert "# TYPE switch_registrations gauge" in text

    promtool = shutil.which("promtool") or require_binary("promtool")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    # promtool exits 1 for lint warnings too; only "error" lines are fatal.
    errors = [ln for ln in (check.stdout + check.stderr).splitlines() if "error" in ln.lower()]
    assert not errors, check.stdout + check.stderr


# --------------------------------------------------------------------------
# softphones
# --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_baresip_registers(engine: Engine, peer_dir: Path, transport: str) -> None:
    user = engine.user("1001")
    with BaresipPeer(peer_dir, extension=user.extension, password=user.password,
                     registrar=engine.sip_addr, transport=transport) as peer:  # fmt: skip
        peer.wait_registered()
        reg = engine.wait_registered("1001")
        assert "baresip" in reg["user_agent"].lower(), reg
        assert "127.0.0.1" in reg["contact"], reg
        if transport == "tcp":
            assert "transport=tcp" in reg["contact"].lower(), reg
    # baresip un-REGISTERs (Expires: 0) when it quits.
    engine.wait_unregistered("1001")


def test_baresip_wrong_password_is_refused(engine: Engine, peer_dir: Path) -> None:
    with BaresipPeer(peer_dir, extension="1001", password="wrong",
                     registrar=engine.sip_addr) as peer:  # fmt: skip
        wait_until(lambda: peer.registration_state() == "ERR", 20, "baresip registration error",
                   detail=peer.diagnostics)  # fmt: skip
    assert "1001" not in engine.registered_extensions()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_linphonec_registers(engine: Engine, peer_dir: Path, transport: str) -> None:
    user = engine.user("1002")
    with LinphonePeer(peer_dir, extension=user.extension, password=user.password,
                      registrar=engine.sip_addr, transport=transport) as peer:  # fmt: skip
        peer.register()
        reg = engine.wait_registered("1002")
        peer.wait_registered()
        assert "linphone" in reg["user_agent"].lower(), reg
        assert "127.0.0.1" in reg["contact"], reg


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pjsua2_registers_and_unregisters(engine: Engine, peer_dir: Path, transport: str) -> None:
    user = engine.user("1003")
    with PjsuaPeer(peer_dir, extension=user.extension, password=user.password,
                   registrar=engine.sip_addr, transport=transport) as peer:  # fmt: skip
        state = peer.wait_registered()
        assert 0 < state["expires"] <= 600
        reg = engine.wait_registered("1003")
        assert reg["user_agent"] == "pjsua2-interop", reg
        peer.unregister()
        engine.wait_unregistered("1003")


def test_pyvoip_registers(engine: Engine, peer_dir: Path) -> None:
    user = engine.user("1004")
    with PyVoipPeer(peer_dir, extension=user.extension, password=user.password,
                    registrar=engine.sip_addr) as peer:  # fmt: skip
        peer.wait_registered()
        reg = engine.wait_registered("1004")
        assert "pyvoip" in reg["user_agent"].lower(), reg


def test_all_peers_registered_at_once(engine: Engine, peer_dir: Path) -> None:
    """Five different stacks on one engine; the API and the gauge agree."""
    u = engine.user
    peers = [
        BaresipPeer(peer_dir / "b", extension="1001", password=u("1001").password,
                    registrar=engine.sip_addr),
        LinphonePeer(peer_dir / "l", extension="1002", password=u("1002").password,
                     registrar=engine.sip_addr, transport="tcp"),
        PjsuaPeer(peer_dir / "p", extension="1003", password=u("1003").password,
                  registrar=engine.sip_addr),
        PyVoipPeer(peer_dir / "v", extension="1004", password=u("1004").password,
                   registrar=engine.sip_addr),
    ]  # fmt: skip
    started: list[object] = []
    try:
        for peer in peers:
            peer.start()
            started.append(peer)
        peers[1].register()  # type: ignore[union-attr]
        csv = _users_csv(engine, peer_dir / "users.csv", ["1005"])
        result = run_sipp(peer_dir, "register", engine.sip_addr, users_csv=csv)
        assert result.returncode == 0, result.describe()
        for ext in ("1001", "1002", "1003", "1004", "1005"):
            engine.wait_registered(ext)
        assert engine.metric_value("switch_registrations") == 5
    finally:
        for peer in reversed(started):
            peer.stop()  # type: ignore[attr-defined]
