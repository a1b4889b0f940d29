"""A stand-in engine for validating the interop harness and peer drivers.

NOT the product.  It implements only what the registration interop tests
need from CONTRACT.md (REGISTER with MD5 digest, OPTIONS, the
registrations API, two metrics, persistence across restarts, the
``switch.ready`` line, SIGTERM -> exit 0) so that the harness, the SIPp
scenarios and the softphone drivers can be checked before the real engine
runs.  Use it with::

    SWITCH_ENGINE_CMD="python tests/interop/stub_engine.py" \
        .venv/bin/python -m pytest -m interop tests/interop
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import secrets
import signal
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from aiohttp import web

MIN_EXPIRES = 60


def log(event: str, **kw: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "level": "info", **kw}) + "\n")
    sys.stdout.flush()


class Stub:
    def __init__(self, cfg: dict[str, Any], data_dir: Path) -> None:
        self.realm = cfg["sip"].get("realm", "switch.local")
        self.users = {str(u["extension"]): str(u["password"]) for u in cfg.get("users", [])}
        self.token = cfg["http"]["token"]
        self.store = data_dir / "stub_registrations.json"
        self.regs: dict[str, dict[str, Any]] = {}
        if self.store.exists():
            self.regs = json.loads(self.store.read_text())
        self.nonces: set[str] = set()
        self.counts: dict[tuple[str, str, str], int] = {}
        self.host = ""
        self.port = 0

    def save(self) -> None:
        self.store.write_text(json.dumps(self.regs))

    def count(self, direction: str, method: str, status: str) -> None:
        key = (direction, method, status)
        self.counts[key] = self.counts.get(key, 0) + 1

    def live(self) -> list[dict[str, Any]]:
        now = time.time()
        return [r for r in self.regs.values() if r["until"] > now]

    # -- SIP -----------------------------------------------------------------

    def handle(self, data: bytes, transport: str, peer: tuple[str, int]) -> bytes | None:
        try:
            head, _, _body = data.partition(b"\r\n\r\n")
            lines = head.decode("utf-8").split("\r\n")
            while lines and not lines[0]:
                lines.pop(0)
            method, ruri, version = lines[0].split(" ")
            if version != "SIP/2.0":
                return None
            hdrs: list[tuple[str, str]] = []
            for line in lines[1:]:
                if line[:1] in (" ", "\t") and hdrs:
                    hdrs[-1] = (hdrs[-1][0], hdrs[-1][1] + " " + line.strip())
                    continue
                k, _, v = line.partition(":")
                k = k.strip().lower()
                k = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact"}.get(k, k)
                hdrs.append((k, v.strip()))
        except (ValueError, IndexError, UnicodeDecodeError):
            return None
        self.count("in", method, "")

        def get(name: str) -> str | None:
            return next((v for k, v in hdrs if k == name), None)

        def reply(code: int, reason: str, extra: list[str] | None = None) -> bytes:
            out = [f"SIP/2.0 {code} {reason}"]
            canonical = {"via": "Via", "from": "From", "call-id": "Call-ID", "cseq": "CSeq"}
            for k, v in hdrs:
                if k in canonical:
                    out.append(f"{canonical[k]}: {v}")
            to = get("to") or ""
            if code > 100 and "tag=" not in to:
                to += ";tag=stub" + secrets.token_hex(4)
            out.append(f"To: {to}")
            out += extra or []
            out.append("Server: switch-stub")
            out.append("Content-Length: 0")
            self.count("out", method, str(code))
            return ("\r\n".join(out) + "\r\n\r\n").encode()

        if None in (get("via"), get("from"), get("to"), get("call-id"), get("cseq")):
            return None
        if method == "OPTIONS":
            return reply(200, "OK", ["Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER"])
        if method != "REGISTER":
            return reply(501, "Not Implemented")
        to = get("to") or ""
        m = re.search(r"sips?:([^@;>]+)@", to)
        ext = m.group(1) if m else ""
        auth = get("authorization")
        challenge = self._challenge()
        if auth is None:
            return reply(401, "Unauthorized", [challenge])
        params = {
            mm.group(1).lower(): (mm.group(3) if mm.group(3) is not None else mm.group(2))
            for mm in re.finditer(r'(\w+)\s*=\s*("([^"]*)"|[^,\s]+)', auth.partition(" ")[2])
        }
        password = self.users.get(ext)
        if password is None or params.get("username") != ext or not self._ok(params, password):
            return reply(401, "Unauthorized", [challenge])
        contact = get("contact") or ""
        expires_hdr = get("expires")
        cm = re.search(r";\s*expires=(\d+)", contact)
        expires = int(cm.group(1)) if cm else int(expires_hdr) if expires_hdr else 3600
        key = ext
        if contact.strip() == "*" or expires == 0:
            if key in self.regs:
                del self.regs[key]
                self.save()
            return reply(200, "OK", [])
        if contact and expires < MIN_EXPIRES:
            return reply(423, "Interval Too Brief", [f"Min-Expires: {MIN_EXPIRES}"])
        if contact:
            uri = contact.split(";expires")[0]
            self.regs[key] = {
                "extension": ext, "contact": uri, "until": time.time() + expires,
                "user_agent": get("user-agent") or "",
            }  # fmt: skip
            self.save()
        extra = [f"Contact: {r['contact']};expires={int(r['until'] - time.time())}"
                 for r in self.live() if r["extension"] == ext]  # fmt: skip
        return reply(200, "OK", extra)

    def _challenge(self) -> str:
        nonce = secrets.token_hex(16)
        self.nonces.add(nonce)
        return (f'WWW-Authenticate: Digest realm="{self.realm}", nonce="{nonce}", '
                'qop="auth", algorithm=MD5')

    def _ok(self, p: dict[str, str], password: str) -> bool:
        if p.get("nonce") not in self.nonces or p.get("realm") != self.realm:
            return False

        def h(s: str) -> str:
            return hashlib.md5(s.encode()).hexdigest()

        ha1 = h(f"{p['username']}:{self.realm}:{password}")
        ha2 = h(f"REGISTER:{p.get('uri', '')}")
        if p.get("qop"):
            want = h(f"{ha1}:{p['nonce']}:{p.get('nc')}:{p.get('cnonce')}:{p['qop']}:{ha2}")
        else:
            want = h(f"{ha1}:{p['nonce']}:{ha2}")
        return secrets.compare_digest(want, p.get("response", ""))

    # -- HTTP ------------------------------------------------------------------

    async def api_regs(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "token"}}, status=401
            )
        now = time.time()
        return web.json_response([
            {"extension": r["extension"], "contact": r["contact"],
             "expires": int(r["until"] - now), "user_agent": r["user_agent"]}
            for r in self.live()
        ])  # fmt: skip

    async def metrics(self, request: web.Request) -> web.Response:
        out = ["# HELP switch_registrations Live registrations.",
               "# TYPE switch_registrations gauge",
               f"switch_registrations {len(self.live())}",
               "# HELP switch_sip_messages_total SIP messages.",
               "# TYPE switch_sip_messages_total counter"]
        for (d, m, s), n in sorted(self.counts.items()):
            out.append(
                f'switch_sip_messages_total{{direction="{d}",method="{m}",status="{s}"}} {n}'
            )
        return web.Response(text="\n".join(out) + "\n", content_type="text/plain")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


class Udp(asyncio.DatagramProtocol):
    def __init__(self, stub: Stub) -> None:
        self.stub = stub

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.stub.handle(data, "UDP", addr)
        if out:
            self.transport.sendto(out, addr)  # type: ignore[attr-defined]


async def tcp_conn(stub: Stub, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    buf = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buf += chunk
            while True:
                buf = buf.lstrip(b"\r\n")
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > 65536:
                        return
                    break
                m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", buf[:end])
                total = end + 4 + (int(m.group(1)) if m else 0)
                if len(buf) < total:
                    break
                msg, buf = buf[:total], buf[total:]
                out = stub.handle(msg, "TCP", writer.get_extra_info("peername"))
                if out:
                    writer.write(out)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main_async(args: argparse.Namespace) -> int:
    cfg = tomllib.loads(Path(args.config).read_text())
    data_dir = Path(args.data_dir or cfg.get("data_dir", "var"))
    data_dir.mkdir(parents=True, exist_ok=True)
    stub = Stub(cfg, data_dir)
    loop = asyncio.get_running_loop()
    host = args.sip_host or cfg["sip"]["host"]
    port = args.sip_port if args.sip_port is not None else cfg["sip"]["port"]
    udp, _ = await loop.create_datagram_endpoint(lambda: Udp(stub), local_addr=(host, port))
    port = udp.get_extra_info("sockname")[1]
    tcp = await asyncio.start_server(lambda r, w: tcp_conn(stub, r, w), host, port)
    app = web.Application()
    app.router.add_get("/api/v1/registrations", stub.api_regs)
    app.router.add_get("/metrics", stub.metrics)
    app.router.add_get("/healthz", stub.healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    hhost = args.http_host or cfg["http"]["host"]
    hport = args.http_port if args.http_port is not None else cfg["http"]["port"]
    site = web.TCPSite(runner, hhost, hport)
    await site.start()
    hport = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    log("switch.ready", sip=f"{host}:{port}", http=f"{hhost}:{hport}", stub=True)
    await stop.wait()
    udp.close()
    tcp.close()
    await runner.cleanup()
    log("switch.stopped")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--config", required=True)
    run.add_argument("--data-dir")
    run.add_argument("--sip-host")
    run.add_argument("--sip-port", type=int)
    run.add_argument("--http-host")
    run.add_argument("--http-port", type=int)
    run.add_argument("--rtp-ports")
    run.add_argument("--log-format")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
