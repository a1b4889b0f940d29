"""Helpers for the call tests: SIPp message traces, SDP, the engine's call state."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .harness import Engine, wait_until

_SEPARATOR = re.compile(r"^-{20,} .*$", re.M)


@dataclass(frozen=True)
class TracedMessage:
    direction: str  # "sent" | "received"
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        """Request method, or the CSeq method of a response."""
        if self.is_request:
            return self.first_line.split(" ", 1)[0]
        cseq = self.header("CSeq") or ""
        return cseq.split()[-1] if cseq else ""

    @property
    def status(self) -> int | None:
        if self.is_request:
            return None
        return int(self.first_line.split()[1])

    def header(self, name: str) -> str | None:
        for line in self.text.split("\n\n", 1)[0].splitlines()[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def body(self) -> str:
        parts = self.text.split("\n\n", 1)
        return parts[1] if len(parts) == 2 else ""


def parse_trace(text: str) -> list[TracedMessage]:
    """The messages of a SIPp ``-trace_msg`` file, in order."""
    out: list[TracedMessage] = []
    for chunk in _SEPARATOR.split(text.replace("\r\n", "\n")):
        chunk = chunk.strip("\n")
        if not chunk:
            continue
        head, _, rest = chunk.partition("\n")
        if "message sent" in head:
            direction = "sent"
        elif "message received" in head:
            direction = "received"
        else:
            continue
        out.append(TracedMessage(direction, rest.strip("\n") + "\n"))
    return out


def sdp_audio(body: str) -> tuple[str, int] | None:
    """(connection address, audio port) of an SDP body."""
    conn = re.search(r"^c=IN IP4 (\S+)", body, re.M)
    media = re.search(r"^m=audio (\d+) ", body, re.M)
    if not conn or not media:
        return None
    return conn.group(1), int(media.group(1))


def assert_sdp_points_at_engine(engine: Engine, body: str, what: str) -> tuple[str, int]:
    found = sdp_audio(body)
    assert found is not None, f"{what}: no c=/m=audio in\n{body}"
    host, port = found
    lo, hi = engine.rtp_range
    assert host == engine.host, f"{what}: c= {host}, not the engine's media host {engine.host}"
    assert lo <= port <= hi, f"{what}: m=audio port {port} outside switch's {lo}-{hi}"
    return found


def calls_list(engine: Engine) -> list[dict[str, Any]]:
    data = engine.api("GET", "/api/v1/calls")
    if isinstance(data, dict):
        for key in ("calls", "items", "data"):
            if isinstance(data.get(key), list):
                return list(data[key])
    assert isinstance(data, list), f"unexpected /api/v1/calls payload: {data!r}"
    return data


def wait_no_active_calls(engine: Engine, timeout: float = 15.0) -> None:
    wait_until(
        lambda: (engine.metric_value("switch_calls_active") or 0) == 0 and not calls_list(engine),
        timeout,
        "switch_calls_active 0 and /api/v1/calls empty",
        detail=lambda: (
            f"active={engine.metric_value('switch_calls_active')} "
            f"calls={calls_list(engine)}\n{engine.diagnostics(30)}"
        ),
    )


def calls_total(engine: Engine, result: str) -> float:
    return engine.metric_value("switch_calls_total", {"result": result}) or 0.0
