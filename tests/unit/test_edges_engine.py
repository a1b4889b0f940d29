"""The composition root in-process (switch.app.Engine): wiring, start/stop order, failures."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from structlog.typing import FilteringBoundLogger

from switch.app import Engine, StartupError, Store, prepare_data_dir
from switch.config import Config, HttpConfig, SipConfig
from switch.events import EventBus
from switch.metrics import Metrics
from switch.model import RegistrationView

TOKEN = "test-token-123"


def make_config(tmp_path: Path, **http: object) -> Config:
    return Config(
        data_dir=tmp_path / "data",
        sip=SipConfig(host="127.0.0.1", port=0),
        http=replace(HttpConfig(host="127.0.0.1", port=0, token=TOKEN),
                     **http),  # type: ignore[arg-type]
    )


class RecordingStore:
    def __init__(self, journal: list[str], fail: bool = False) -> None:
        self.journal = journal
        self.fail = fail

    def open(self) -> None:
        if self.fail:
            raise RuntimeError("database is locked")
        self.journal.append("store.open")

    def close(self) -> None:
        self.journal.append("store.close")


class FakeSip:
    def __init__(self, journal: list[str], bus: EventBus, metrics: Metrics,
                 fail: OSError | None = None) -> None:
        self.journal = journal
        self.bus = bus
        self.metrics = metrics
        self.fail = fail

    async def start(self) -> tuple[str, int]:
        if self.fail is not None:
            raise self.fail
        self.journal.append("sip.start")
        return "127.0.0.1", 5999

    async def stop(self) -> None:
        self.journal.append("sip.stop")

    def list_registrations(self) -> Sequence[RegistrationView]:
        return [RegistrationView(extension="1001", contact="sip:1001@127.0.0.1:5062",
                                 expires_at=4e9, user_agent="test", source="udp:127.0.0.1:5062")]


def engine_with(config: Config, journal: list[str], *, store_fails: bool = False,
                sip_fails: OSError | None = None) -> Engine:
    def store_factory(config: Config, log: FilteringBoundLogger) -> Store:
        return RecordingStore(journal, store_fails)

    def sip_factory(config: Config, store: Store, bus: EventBus, metrics: Metrics,
                    log: FilteringBoundLogger) -> FakeSip:
        return FakeSip(journal, bus, metrics, sip_fails)

    return Engine(config, store_factory=store_factory, sip_factory=sip_factory)


async def test_start_wires_http_to_sip_and_stops_in_reverse(tmp_path: Path) -> None:
    journal: list[str] = []
    engine = engine_with(make_config(tmp_path), journal)
    ready = await engine.start()
    assert (ready.sip_host, ready.sip_port) == ("127.0.0.1", 5999)
    assert ready.http_port > 0
    base = f"http://127.0.0.1:{ready.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["sip"]["tcp"] == {"host": "127.0.0.1", "port": 5999}
        async with http.get(base + "/api/v1/registrations",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            (registration,) = await resp.json()
            assert registration["extension"] == "1001"
        async with http.ws_connect(base + f"/api/v1/events?token={TOKEN}") as ws:
            while engine.bus.subscriber_count == 0:
                await asyncio.sleep(0.01)
            engine.bus.publish("registration.added", extension="1001",
                               contact="sip:1001@127.0.0.1:5062")
            event = await ws.receive_json()
            assert event["type"] == "registration.added"
            assert event["extension"] == "1001"
            await engine.stop()
            # The engine closes the stream on shutdown.
            assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE,
                                                 aiohttp.WSMsgType.CLOSED,
                                                 aiohttp.WSMsgType.CLOSING)
    assert journal == ["store.open", "sip.start", "sip.stop", "store.close"]
    await engine.stop()  # idempotent
    assert journal.count("store.close") == 1


async def test_placeholder_sip_service_binds_udp_and_tcp(tmp_path: Path) -> None:
    engine = Engine(make_config(tmp_path))
    ready = await engine.start()
    try:
        assert ready.sip_port > 0
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as probe, pytest.raises(OSError):
                probe.bind(("127.0.0.1", ready.sip_port))
    finally:
        await engine.stop()
    # Released again after stop.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", ready.sip_port))


async def test_http_port_in_use_undoes_the_start(tmp_path: Path) -> None:
    journal: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        engine = engine_with(make_config(tmp_path, port=port), journal)
        with pytest.raises(StartupError) as info:
            await engine.start()
    assert str(info.value) == (f"http.port: cannot listen on 127.0.0.1:{port}: "
                               "address already in use")
    assert journal == ["store.open", "sip.start", "sip.stop", "store.close"]


async def test_sip_bind_errors_name_the_key(tmp_path: Path) -> None:
    journal: list[str] = []
    engine = engine_with(make_config(tmp_path), journal,
                         sip_fails=OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"))
    with pytest.raises(StartupError, match=r"^sip\.host: cannot listen on 127\.0\.0\.1:0 "
                                           r"\(UDP/TCP\): cannot assign requested address$"):
        await engine.start()
    # stop() runs after a failed start() too, to release a partial bind.
    assert journal == ["store.open", "sip.stop", "store.close"]


async def test_store_failure_is_one_line(tmp_path: Path) -> None:
    engine = engine_with(make_config(tmp_path), [], store_fails=True)
    with pytest.raises(StartupError, match=r'^storage\.path: cannot open ".*switch\.db": '
                                           r"database is locked$"):
        await engine.start()


def test_prepare_data_dir(tmp_path: Path) -> None:
    prepare_data_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the write probe is gone
    (tmp_path / "file").write_text("")
    with pytest.raises(StartupError, match="not a directory"):
        prepare_data_dir(tmp_path / "file")
    with pytest.raises(StartupError, match=r"^data_dir: cannot use .*: not a directory$"):
        prepare_data_dir(tmp_path / "file" / "sub")
