"""Metrics (switch.metrics): names and labels of CONTRACT.md, promtool-clean output."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switch.metrics import Metrics

CONTRACT = {
    "switch_sip_messages": ("counter", {"direction", "method", "status"}),
    "switch_registrations": ("gauge", set()),
    "switch_calls_active": ("gauge", set()),
    "switch_calls": ("counter", {"result"}),
    "switch_call_setup_seconds": ("histogram", set()),
    "switch_transfers": ("counter", {"kind", "result"}),
    "switch_dtmf_digits": ("counter", {"method"}),
    "switch_recordings_active": ("gauge", set()),
    "switch_rtp_packets": ("counter", {"direction"}),
}


def families(metrics: Metrics) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    text = metrics.render().decode()
    return {f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples])
            for f in text_string_to_metric_families(text)}


def exercise(m: Metrics) -> None:
    m.sip_message("in", "INVITE")
    m.sip_message("out", "INVITE", 100)
    m.sip_message("out", "INVITE", "200")
    m.registrations.set(2)
    m.calls_active.inc()
    m.call_ended("answered")
    m.call_setup_seconds.observe(1.5)
    m.transfer_finished("blind", "completed")
    m.dtmf_digit("rfc4733")
    m.recordings_active.inc()
    m.rtp_packets_in(10)
    m.rtp_packets_out(9)
    m.parse_error("UDP")
    m.auth_failure("bad_credentials")
    m.sip_transactions_active.set(3)
    m.event_loop_lag_seconds.set(0.001)
    m.http_requests.labels(route="/healthz", status="200").inc()


def test_contract_metrics_exist_with_labels() -> None:
    m = Metrics()
    exercise(m)
    found = families(m)
    for name, (kind, labels) in CONTRACT.items():
        assert name in found, name
        assert found[name][0] == kind, name
        sample_labels = {k for _, lbl, _ in found[name][1] for k in lbl} - {"le"}
        assert sample_labels == labels, name


def test_render_passes_promtool(promtool_check: Callable[[bytes], None]) -> None:
    m = Metrics()
    exercise(m)
    promtool_check(m.render())
    promtool_check(Metrics().render())  # also before anything is counted


def test_sip_message_counts_and_clamps_labels() -> None:
    m = Metrics()
    for _ in range(3):
        m.sip_message("in", "REGISTER")
    m.sip_message("out", "REGISTER", 401)
    m.sip_message("in", "X-GARBAGE-" + "A" * 50)
    m.sip_message("in", "ANOTHER-ONE")
    m.sip_message("in", "INVITE", 9999)
    samples = {(s[1]["direction"], s[1]["method"], s[1]["status"]): s[2]
               for s in families(m)["switch_sip_messages"][1]}
    assert samples[("in", "REGISTER", "")] == 3
    assert samples[("out", "REGISTER", "401")] == 1
    assert samples[("in", "OTHER", "")] == 2  # unknown methods share one series
    assert samples[("in", "INVITE", "invalid")] == 1
    assert m.sip_message_count("in", "REGISTER") == 3


def test_enumerated_series_start_at_zero() -> None:
    found = families(Metrics())
    results = {s[1]["result"] for s in found["switch_calls"][1]}
    assert results == {"answered", "busy", "no_answer", "failed", "cancelled"}
    assert len(found["switch_transfers"][1]) == 3 * 4
    assert {s[1]["method"] for s in found["switch_dtmf_digits"][1]} == {
        "inband", "rfc4733", "info"}


def test_instances_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.sip_message("in", "OPTIONS")
    a.registrations.set(5)
    assert b.sip_message_count("in", "OPTIONS") == 0
    assert families(b)["switch_registrations"][1][0][2] == 0


def test_helpers_reject_unknown_label_values() -> None:
    m = Metrics()
    with pytest.raises(ValueError):
        m.call_ended("exploded")
    with pytest.raises(ValueError):
        m.transfer_finished("teleport", "completed")
    with pytest.raises(ValueError):
        m.dtmf_digit("smoke")
    with pytest.raises(ValueError):
        m.sip_message("sideways", "INVITE")
    with pytest.raises(ValueError):
        m.transfer_finished("blind", "exploded")
    with pytest.raises(ValueError):
        m.forced_release("whim")


def test_helpers_count_on_their_series() -> None:
    m = Metrics(process_metrics=False)
    get = m.registry.get_sample_value
    for _ in range(2):
        m.call_ended("busy")
        m.transfer_finished("warm", "rejected")
        m.dtmf_digit("info")
        m.auth_failure("stale_nonce")
        m.forced_release("shutdown")
    m.auth_failure("martian")
    assert get("switch_calls_total", {"result": "busy"}) == 2
    assert get("switch_calls_total", {"result": "answered"}) == 0
    assert get("switch_transfers_total", {"kind": "warm", "result": "rejected"}) == 2
    assert get("switch_dtmf_digits_total", {"method": "info"}) == 2
    assert get("switch_auth_failures_total", {"reason": "stale_nonce"}) == 2
    assert get("switch_auth_failures_total", {"reason": "other"}) == 1
    assert get("switch_calls_forced_release_total", {"reason": "shutdown"}) == 2
