"""Every Prometheus metric of the engine, defined once (CONTRACT.md "Metrics").

Each :class:`Metrics` instance owns its own ``CollectorRegistry`` rather than
the process-global one, so tests can build engines repeatedly without
"duplicated timeseries" errors and two engines in one process do not mix.

Hot path: ``switch_sip_messages_total`` is counted for every SIP message,
in and out (≥15k messages/s target).  A ``prometheus_client`` child's
``inc()`` takes a lock and costs ~0.5 µs here; :meth:`Metrics.sip_message`
instead bumps a plain ``dict`` entry (~0.2 µs) and a custom collector turns
the dict into the counter family at scrape time.  That is safe because both
the counting and the scrape run on the event-loop thread (call it from there).
Methods and statuses coming from the network are clamped to known values
first: a peer sending random method names must not create unbounded series.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from switch import __version__

__all__ = [
    "CALL_RESULTS",
    "CONTENT_TYPE",
    "DTMF_METHODS",
    "FORCED_RELEASE_REASONS",
    "SIP_METHODS",
    "TRANSFER_KINDS",
    "TRANSFER_RESULTS",
    "Metrics",
]

# The `_created` companion series double the output and no dashboard uses
# them. This switch is process-wide in prometheus_client (there is no
# per-registry option); the engine owns the process, so that is acceptable.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

SIP_METHODS: Final = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
    "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})
OTHER_METHOD: Final = "OTHER"
DIRECTIONS: Final = ("in", "out")
CALL_RESULTS: Final = ("answered", "busy", "no_answer", "failed", "cancelled")
TRANSFER_KINDS: Final = ("blind", "warm", "voicemail")
TRANSFER_RESULTS: Final = ("completed", "failed", "cancelled", "rejected")
DTMF_METHODS: Final = ("inband", "rfc4733", "info")
PARSE_ERROR_TRANSPORTS: Final = ("udp", "tcp")
# Why a call leg was forgotten without its SIP dialog ending normally:
# ending_timeout — its phone answered neither our BYE/CANCEL nor anything else
# within 64*T1 + T2 (the call controller's ending guard); shutdown — still
# unanswered when the shutdown grace ran out; error — its session raised while
# being hung up.
FORCED_RELEASE_REASONS: Final = ("ending_timeout", "shutdown", "error")
AUTH_FAILURE_REASONS: Final = (
    "bad_credentials", "unknown_user", "stale_nonce", "malformed", "blocked",
)

# Call setup (INVITE to answer) spans ringing time, hence buckets up to minutes.
_SETUP_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


# (direction, method, status label — "" for requests, count) of every series.
SipMessageSource = Callable[[], Iterable[tuple[str, str, str, int]]]


class Metrics:
    """The engine's metrics on a private registry.  Create one per engine."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)

        # --- CONTRACT.md metrics (names and labels are stable) ---
        # (direction, method, status) -> count; see the module docstring.
        self._sip_counts: dict[tuple[str, str, str], int] = {}
        self._sip_keys: dict[tuple[str, str, int | str | None], tuple[str, str, str]] = {}
        self._sip_sources: list[SipMessageSource] = []
        r.register(_SipMessagesCollector(self._sip_counts, self._sip_sources, self._sip_label))
        self.registrations = Gauge(
            "switch_registrations", "Contacts currently registered.", registry=r)
        self.calls_active = Gauge(
            "switch_calls_active", "Calls in progress (ringing or answered).", registry=r)
        self.calls = Counter(
            "switch_calls", "Calls ended, by outcome.", ["result"], registry=r)
        self.call_setup_seconds = Histogram(
            "switch_call_setup_seconds", "Time from INVITE received to call answered.",
            buckets=_SETUP_BUCKETS, registry=r)
        self.transfers = Counter(
            "switch_transfers", "Transfers finished, by kind and outcome.",
            ["kind", "result"], registry=r)
        self.dtmf_digits = Counter(
            "switch_dtmf_digits", "DTMF digits detected, by method.", ["method"], registry=r)
        self.recordings_active = Gauge(
            "switch_recordings_active", "Recordings being written.", registry=r)
        self.rtp_packets = Counter(
            "switch_rtp_packets", "RTP packets relayed.", ["direction"], registry=r)

        # --- extras ---
        self.sip_parse_errors = Counter(
            "switch_sip_parse_errors", "SIP messages that could not be parsed.",
            ["transport"], registry=r)
        self.auth_failures = Counter(
            "switch_auth_failures", "Failed digest authentications, by reason.",
            ["reason"], registry=r)
        self.call_errors = Counter(
            "switch_call_errors",
            "Calls ended because their handling raised an unexpected exception.", registry=r)
        self.calls_forced_release = Counter(
            "switch_calls_forced_release",
            "Call legs released without their dialog ending normally, by reason.",
            ["reason"], registry=r)
        self.sip_transactions_active = Gauge(
            "switch_sip_transactions_active", "SIP transactions in progress.", registry=r)
        self.event_loop_lag_seconds = Gauge(
            "switch_event_loop_lag_seconds",
            "Delay of the last event-loop lag probe beyond its scheduled time.", registry=r)
        self.event_subscribers = Gauge(
            "switch_event_subscribers", "Connected event-stream (WebSocket) clients.",
            registry=r)
        self.event_subscribers_dropped = Counter(
            "switch_event_subscribers_dropped",
            "Event-stream clients disconnected for falling behind.", registry=r)
        self.http_requests = Counter(
            "switch_http_requests", "HTTP API requests, by route and status.",
            ["route", "status"], registry=r)
        self.build_info = Gauge(
            "switch_build_info", "Build information; the value is always 1.",
            ["version", "python"], registry=r)
        self.build_info.labels(version=__version__, python=platform.python_version()).set(1)

        # Zero-initialise enumerable label sets so rate() works from the start
        # and dashboards show 0 rather than "no data".
        # The children are kept: ``labels()`` (sort, lock, dict) is not redone per event.
        self._call_results = {result: self.calls.labels(result=result)
                              for result in CALL_RESULTS}
        self._transfer_results = {(kind, tresult): self.transfers.labels(kind=kind,
                                                                          result=tresult)
                                  for kind in TRANSFER_KINDS for tresult in TRANSFER_RESULTS}
        self._dtmf_methods = {method: self.dtmf_digits.labels(method=method)
                              for method in DTMF_METHODS}
        for transport in PARSE_ERROR_TRANSPORTS:
            self.sip_parse_errors.labels(transport=transport)
        self._auth_reasons = {reason: self.auth_failures.labels(reason=reason)
                              for reason in AUTH_FAILURE_REASONS}
        self._forced_reasons = {reason: self.calls_forced_release.labels(reason=reason)
                                for reason in FORCED_RELEASE_REASONS}

        self._rtp_in = self.rtp_packets.labels(direction="in")
        self._rtp_out = self.rtp_packets.labels(direction="out")

    # ---------------------------------------------------------------- hot path

    def sip_message(self, direction: str, method: str, status: int | str | None = None) -> None:
        """Count one SIP message.  ``status`` is None/"" for requests, the code for responses.

        For responses ``method`` is the CSeq method.
        """
        key = self._sip_keys.get((direction, method, status))
        if key is None:
            key = self._sip_key(direction, method, status)
        self._sip_counts[key] += 1

    def sip_message_count(self, direction: str, method: str, status: int | str | None = None,
                          ) -> int:
        """Current value of one series (for tests and the API)."""
        return self._sip_counts.get(self._sip_key(direction, method, status), 0)

    def use_sip_message_source(self, source: SipMessageSource) -> None:
        """Also expose counts kept elsewhere (the SIP endpoint counts messages in
        plain ints on its hot path); read at scrape time, labels normalised."""
        self._sip_sources.append(source)

    @staticmethod
    def _sip_label(direction: str, method: str, status: int | str | None,
                   ) -> tuple[str, str, str]:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'in' or 'out', got {direction!r}")
        label_method = method if method in SIP_METHODS else OTHER_METHOD
        label_status = ""
        if status:
            try:
                code = int(status)
            except ValueError:
                code = 0
            # Out-of-range codes from peers collapse into one series.
            label_status = str(code) if 100 <= code <= 699 else "invalid"
        return direction, label_method, label_status

    def _sip_key(self, direction: str, method: str, status: int | str | None,
                 ) -> tuple[str, str, str]:
        key = self._sip_label(direction, method, status)
        self._sip_counts.setdefault(key, 0)
        # The raw-key cache is bounded: raw keys are peer-controlled strings.
        if len(self._sip_keys) < 4096:
            self._sip_keys[(direction, method, status)] = key
        return key

    def rtp_packets_in(self, count: int = 1) -> None:
        self._rtp_in.inc(count)

    def rtp_packets_out(self, count: int = 1) -> None:
        self._rtp_out.inc(count)

    # ---------------------------------------------------------------- helpers

    def call_ended(self, result: str) -> None:
        child = self._call_results.get(result)
        if child is None:
            raise ValueError(f"call result must be one of {CALL_RESULTS}, got {result!r}")
        child.inc()

    def transfer_finished(self, kind: str, result: str) -> None:
        child = self._transfer_results.get((kind, result))
        if child is None:
            raise ValueError(f"unknown transfer kind/result {kind!r}/{result!r}")
        child.inc()

    def dtmf_digit(self, method: str) -> None:
        child = self._dtmf_methods.get(method)
        if child is None:
            raise ValueError(f"DTMF method must be one of {DTMF_METHODS}, got {method!r}")
        child.inc()

    def auth_failure(self, reason: str) -> None:
        child = self._auth_reasons.get(reason)
        if child is None:       # "other" is made on its first use, as before
            child = self.auth_failures.labels(reason="other")
        child.inc()

    def forced_release(self, reason: str) -> None:
        child = self._forced_reasons.get(reason)
        if child is None:
            raise ValueError(f"forced release reason must be one of {FORCED_RELEASE_REASONS}, "
                             f"got {reason!r}")
        child.inc()

    def parse_error(self, transport: str) -> None:
        self.sip_parse_errors.labels(transport=transport.lower()).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


class _SipMessagesCollector(Collector):
    """Exposes the plain-dict SIP message counts as ``switch_sip_messages_total``."""

    def __init__(self, counts: dict[tuple[str, str, str], int],
                 sources: list[SipMessageSource],
                 label: Callable[[str, str, str | None], tuple[str, str, str]]) -> None:
        self._counts = counts
        self._sources = sources
        self._label = label

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("switch_sip_messages", "SIP messages sent and received.",
                                  labels=["direction", "method", "status"])

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "switch_sip_messages", "SIP messages sent and received.",
            labels=["direction", "method", "status"])
        totals = dict(self._counts)
        for source in self._sources:
            for direction, method, status, value in source():
                key = self._label(direction, method, status or None)
                totals[key] = totals.get(key, 0) + value
        for labels, value in sorted(totals.items()):
            family.add_metric(list(labels), value)
        yield family
