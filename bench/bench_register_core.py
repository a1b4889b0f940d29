#!/usr/bin/env python3
"""CPU cost of an authenticated REGISTER through the whole service, without sockets.

Drives ``SwitchSipService`` exactly as the UDP driver does (``endpoint.receive``
then the driver's pump) with REGISTER -> 401 -> REGISTER+Authorization -> 200
for N distinct users, and prints µs per registration (two transactions) and
per transaction.  ``--profile`` prints the top of a cProfile.  The socket
path is measured end to end by ``bench/bench_sip.py``; this isolates the
Python work so its hot spots can be found.

    .venv/bin/python bench/bench_register_core.py -n 20000 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from switch.config import Config, SipConfig, User  # noqa: E402
from switch.events import EventBus  # noqa: E402
from switch.logs import configure_logging, get_logger  # noqa: E402
from switch.metrics import Metrics  # noqa: E402
from switch.service import SwitchSipService  # noqa: E402
from switch.sip.headers import parse_auth  # noqa: E402
from switch.sip.transaction import Source  # noqa: E402
from switch.store.sqlite import SqliteStore  # noqa: E402

REALM = "switch.local"


def register(ext: str, port: int, seq: int, auth: str = "") -> bytes:
    lines = [
        "REGISTER sip:127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{ext}-{seq};rport",
        f"From: <sip:{ext}@127.0.0.1>;tag=t{ext}",
        f"To: <sip:{ext}@127.0.0.1>",
        f"Call-ID: reg-{ext}@127.0.0.1",
        f"CSeq: {seq} REGISTER",
        f"Contact: <sip:{ext}@127.0.0.1:{port}>",
        "Max-Forwards: 70",
        "Expires: 3600",
        "User-Agent: bench",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def digest(ext: str, password: str, challenge: str) -> str:
    params = parse_auth(challenge).params
    nonce = params["nonce"]
    ha1 = hashlib.md5(f"{ext}:{REALM}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(b"REGISTER:sip:127.0.0.1").hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}".encode()).hexdigest()
    return (f'Digest username="{ext}", realm="{REALM}", nonce="{nonce}", '
            f'uri="sip:127.0.0.1", response="{response}", algorithm=MD5, '
            f'cnonce="c0ffee", qop=auth, nc=00000001')


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000, help="registrations")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    configure_logging("json", "warning")
    users = tuple(User(extension=str(10000 + i), name=f"u{i}", password=f"pw{i}")
                  for i in range(args.users))
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(data_dir=Path(tmp), sip=SipConfig(host="127.0.0.1", port=0),
                        users=users)
        store = SqliteStore(Path(tmp) / "switch.db")
        store.open()
        service = SwitchSipService(config, store, EventBus(), Metrics(process_metrics=False),
                                   get_logger("bench"))
        await service._writer.start()
        service._loop = asyncio.get_running_loop()
        driver = service.driver
        endpoint = driver.endpoint
        captured: list[bytes] = []
        driver._send = lambda out: captured.extend(o.data for o in out)  # type: ignore[method-assign]
        source_port = 40000

        def one(i: int) -> None:
            user = users[i % len(users)]
            ext = user.extension
            seq = 2 * (i // len(users)) + 1
            src = Source(transport="udp", host="127.0.0.1", port=source_port)
            captured.clear()
            endpoint.receive(register(ext, source_port, seq), src, time.monotonic())
            driver._pump()
            challenge = captured[-1].split(b"WWW-Authenticate: ", 1)[1].split(b"\r\n", 1)[0]
            auth = digest(ext, user.password, challenge.decode())
            captured.clear()
            endpoint.receive(register(ext, source_port, seq + 1, auth), src, time.monotonic())
            driver._pump()
            assert captured[-1].startswith(b"SIP/2.0 200"), captured[-1][:200]

        # The client's own work (building messages, hashing) is measured apart
        # and subtracted so the figure is the engine's.
        start = time.perf_counter()
        for i in range(args.n):
            u = users[i % len(users)]
            digest(u.extension, u.password, 'Digest realm="x", nonce="abc", qop="auth"')
            register(u.extension, source_port, 1)
            register(u.extension, source_port, 2, "x")
        client = time.perf_counter() - start

        profiler = cProfile.Profile() if args.profile else None
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        for i in range(args.n):
            one(i)
        if profiler:
            profiler.disable()
        total = time.perf_counter() - start
        await service._writer.close()
        store.close()
    engine = total - client
    print(f"registrations: {args.n}  users: {args.users}")
    print(f"engine: {engine / args.n * 1e6:.1f} µs per authenticated REGISTER "
          f"({engine / args.n / 2 * 1e6:.1f} µs per transaction), "
          f"{args.n / engine:.0f} registrations/s on one core (no sockets)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())
