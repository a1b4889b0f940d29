"""The WebSocket event stream (CONTRACT.md: GET /api/v1/events) seen from outside.

A client subscribes with the bearer token, a real SIPp peer registers and
unregisters, and the stream carries ``registration.added`` then
``registration.removed`` for that extension, each with ``type`` and ``time``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .harness import Engine, free_port
from .sipp import run_sipp, write_users_csv

pytestmark = pytest.mark.interop


async def _collect(engine: Engine, ready: asyncio.Event, want: int,
                   received: list[dict[str, Any]], *, query_token: bool) -> None:
    url = f"ws://{engine.host}:{engine.http_port}/api/v1/events"
    headers = {} if query_token else {"Authorization": f"Bearer {engine.token}"}
    params = {"token": engine.token} if query_token else None
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(url, headers=headers, params=params) as ws:
        ready.set()
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            event = json.loads(message.data)
            if event["type"].startswith("registration."):
                received.append(event)
            if len(received) >= want:
                return


@pytest.mark.parametrize("query_token", [False, True])
def test_registration_events_on_the_stream(engine: Engine, peer_dir: Path,
                                           query_token: bool) -> None:
    csv = write_users_csv(peer_dir / "users.csv", [("1004", engine.user("1004").password)])
    local_port = free_port("127.0.0.1")
    received: list[dict[str, Any]] = []

    async def scenario() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(_collect(engine, ready, 2, received,
                                            query_token=query_token))
        await asyncio.wait_for(ready.wait(), 10)
        loop = asyncio.get_running_loop()
        for name in ("register", "unregister"):
            result = await loop.run_in_executor(None, lambda n=name: run_sipp(
                peer_dir, n, engine.sip_addr, users_csv=csv, local_port=local_port, tag=n))
            assert result.returncode == 0, result.describe()
        await asyncio.wait_for(task, 20)

    asyncio.run(scenario())
    assert [e["type"] for e in received] == ["registration.added", "registration.removed"]
    for event in received:
        assert event["extension"] == "1004"
        assert "time" in event
        assert f":{local_port}" in event["contact"]


def test_event_stream_refuses_without_token(engine: Engine) -> None:
    async def attempt() -> int:
        url = f"ws://{engine.host}:{engine.http_port}/api/v1/events"
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(attempt()) == 401
