"""Gauges the SIP service exposes are read at scrape time, not only at shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

from switch.config import Config, SipConfig, User
from switch.events import EventBus
from switch.logs import get_logger
from switch.metrics import Metrics
from switch.service import SwitchSipService
from switch.sip.transaction import Source
from switch.store.sqlite import SqliteStore

OPTIONS = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-gauge-1\r\n"
    b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
    b"Call-ID: gauge-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def test_transactions_gauge_and_message_counter_follow_the_endpoint(tmp_path: Path) -> None:
    async def scenario() -> tuple[float | None, float | None]:
        config = Config(data_dir=tmp_path, sip=SipConfig(host="127.0.0.1", port=0),
                        users=(User(extension="1001", name="A", password="secret1001"),))
        store = SqliteStore(tmp_path / "switch.db")
        store.open()
        metrics = Metrics(process_metrics=False)
        service = SwitchSipService(config, store, EventBus(), metrics, get_logger("test"))
        driver = service.driver
        driver._send = lambda out: None  # type: ignore[method-assign]  # no sockets here
        driver.endpoint.receive(OPTIONS, Source(transport="udp", host="127.0.0.1", port=5061),
                                asyncio.get_running_loop().time())
        driver._pump()
        registry = metrics.registry
        active = registry.get_sample_value("switch_sip_transactions_active")
        answered = registry.get_sample_value(
            "switch_sip_messages_total", {"direction": "out", "method": "OPTIONS",
                                          "status": "200"})
        store.close()
        return active, answered

    active, answered = asyncio.run(scenario())
    # The server transaction waits out Timer J (RFC 3261 §17.2.2) after its 200.
    assert active == 1.0
    assert answered == 1.0
