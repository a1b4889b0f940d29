"""baresip (Debian ``baresip-core`` 1.0.0) driver.

baresip runs headless with a config directory of its own (``-f DIR``):
no ``stdio`` module (stdin is not a terminal here), no sound card
(``aubridge`` as player, ``ausine``/``aufile`` as source), and the
``ctrl_tcp`` module as control channel: netstring-framed JSON commands in,
responses and UA events (``REGISTER_OK``, ``CALL_INCOMING``,
``CALL_ESTABLISHED``, ``CALL_CLOSED``, ...) out.  ``ctrl_tcp`` serves one
client at a time, so the driver keeps one connection open and a reader
thread that files every event.

Commands (menu module, usable through :meth:`BaresipPeer.command`):
``dial``, ``accept``, ``hangup``, ``transfer``, ``sndcode`` (DTMF),
``listcalls``, ``reginfo``, ``uareg``, ``callstat``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .harness import (
    LOOPBACK,
    OutputPump,
    free_port,
    require_binary,
    stop_process,
    tail,
    wait_until,
)


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


class BaresipPeer:
    def __init__(
        self,
        workdir: Path,
        *,
        extension: str,
        password: str,
        registrar: tuple[str, int],
        transport: str = "udp",
        regint: int = 600,
        audio_source: str = "ausine,440",
        answermode: str = "manual",
        display_name: str | None = None,
        record_dir: Path | None = None,
    ) -> None:
        self.binary = require_binary("baresip")
        self.workdir = workdir
        self.cfgdir = workdir / "baresip"
        self.cfgdir.mkdir(parents=True, exist_ok=True)
        self.extension = extension
        self.password = password
        self.registrar = registrar
        self.transport = transport.lower()
        self.sip_port = free_port()
        self.ctrl_port = free_port()
        self.aor = f"sip:{extension}@{registrar[0]}:{registrar[1]}"
        self.events: list[dict[str, Any]] = []
        self.responses: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        #: sndfile's dumps: ``dump-<peer>-enc.wav`` (what this phone sent) and
        #: ``dump-<peer>-dec.wav`` (what it received and decoded), per call
        self.record_dir = record_dir
        if record_dir is not None:
            record_dir.mkdir(parents=True, exist_ok=True)
        self._write_config(regint, audio_source, answermode, display_name)

    def _write_config(
        self, regint: int, audio_source: str, answermode: str, display_name: str | None
    ) -> None:
        # sndfile (an audio filter) writes every call's sent and received audio
        # to WAV files in snd_path: baresip 1.0.0 has no file *player*, so this
        # is how a test hears what the phone received.
        recording = (
            f"module\t\t\tsndfile.so\nsnd_path\t\t{self.record_dir}\n"
            if self.record_dir is not None
            else ""
        )
        # net_interface takes an interface name or an address; without it baresip
        # picks the default route's address (e.g. eth0) for Contact and SDP.
        config = f"""\
poll_method		epoll
sip_listen		{LOOPBACK}:{self.sip_port}
net_interface		{LOOPBACK}
call_local_timeout	120
call_max_calls		4
audio_player		aubridge,nil
audio_source		{audio_source}
audio_alert		aubridge,nil
audio_buffer		20-160
rtp_stats		no
module_path		/usr/lib/baresip/modules
module			g711.so
module			aubridge.so
module			ausine.so
module			aufile.so
module			ctrl_tcp.so
module_tmp		uuid.so
module_tmp		account.so
module_app		menu.so
ctrl_tcp_listen		{LOOPBACK}:{self.ctrl_port}
{recording}"""
        (self.cfgdir / "config").write_text(config)
        transport = "" if self.transport == "udp" else f";transport={self.transport}"
        name = f'"{display_name}" ' if display_name else ""
        account = (
            f"{name}<sip:{self.extension}@{self.registrar[0]}:{self.registrar[1]}{transport}>"
            f";auth_pass={self.password};regint={regint};answermode={answermode}"
            f";audio_codecs=pcmu,pcma;medianat=;mwi=no;pubint=0\n"
        )
        (self.cfgdir / "accounts").write_text(account)
        (self.cfgdir / "contacts").write_text("")

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> BaresipPeer:
        self.proc = subprocess.Popen(
            [self.binary, "-f", str(self.cfgdir), "-v"],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.out = OutputPump(self.proc.stdout, f"baresip-{self.extension}")
        wait_until(self._connect, timeout, "baresip ctrl_tcp", detail=self.diagnostics)
        return self

    def _connect(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"baresip exited with {self.proc.returncode}")
        try:
            sock = socket.create_connection((LOOPBACK, self.ctrl_port), timeout=1)
        except OSError:
            return False
        sock.settimeout(None)
        self._sock = sock
        self._reader = threading.Thread(target=self._read_loop, args=(sock,), daemon=True)
        self._reader.start()
        return True

    def _read_loop(self, sock: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:
                colon = buf.find(b":")
                if colon < 0 or not buf[:colon].isdigit():
                    break
                length = int(buf[:colon])
                end = colon + 1 + length
                if len(buf) < end + 1:
                    break
                payload, buf = buf[colon + 1 : end], buf[end + 1 :]
                try:
                    msg = json.loads(payload)
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                with self._cond:
                    if msg.get("response"):
                        self.responses[str(msg.get("token", ""))] = msg
                    else:
                        self.events.append(msg)
                    self._cond.notify_all()

    def stop(self) -> None:
        if self._sock is not None:
            try:
                self.command("quit", timeout=2)
            except (AssertionError, OSError):
                pass
            self._sock.close()
            self._sock = None
        if self.proc is not None:
            stop_process(self.proc, 5)

    def __enter__(self) -> BaresipPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def diagnostics(self) -> str:
        return f"--- baresip {self.extension} output ---\n{tail(self.out.text(), 60)}"

    # -- control ---------------------------------------------------------------------

    def command(self, name: str, params: str = "", timeout: float = 10.0) -> dict[str, Any]:
        assert self._sock is not None, "not started"
        token = uuid.uuid4().hex[:8]
        msg = {"command": name, "params": params, "token": token}
        self._sock.sendall(_netstring(json.dumps(msg).encode()))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self.responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"baresip: no response to {name!r}\n{self.diagnostics()}")
                self._cond.wait(remaining)
            return self.responses.pop(token)

    def wait_event(self, type_: str, timeout: float = 20.0, start: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events[start:]:
                    if ev.get("type") == type_:
                        return ev
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [e.get("type") for e in self.events]
                    raise AssertionError(
                        f"baresip {self.extension}: no {type_} event in {timeout:.0f}s "
                        f"(saw {seen})\n{self.diagnostics()}"
                    )
                self._cond.wait(remaining)

    def registration_state(self) -> str:
        """``OK``, ``ERR`` or ``zzz`` (not registered) from ``reginfo``.

        The REGISTER_OK event is often emitted before the control connection
        is up (ctrl_tcp drops events while no client is connected), so the
        registration state is polled instead.
        """
        data = str(self.command("reginfo").get("data", ""))
        for line in data.splitlines():
            if f"sip:{self.extension}@" in line:
                plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
                for state in ("OK", "ERR", "zzz"):
                    if re.search(rf"\s{state}\s", plain + " "):
                        return state
        return "?"

    def wait_registered(self, timeout: float = 20.0) -> str:
        return (
            wait_until(
                lambda: self.registration_state() == "OK",
                timeout,
                f"baresip {self.extension} registration",
                interval=0.2,
                detail=self.diagnostics,
            )
            and "OK"
        )

    # call control (issue 3 builds on these)
    def dial(self, target: str) -> dict[str, Any]:
        uri = (
            target
            if target.startswith("sip:")
            else f"sip:{target}@{self.registrar[0]}:{self.registrar[1]}"
        )
        return self.command("dial", uri)

    def answer(self) -> dict[str, Any]:
        return self.command("accept")

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def send_dtmf(self, digits: str) -> None:
        for d in digits:
            self.command("sndcode", d)

    def transfer(self, target: str) -> dict[str, Any]:
        uri = (
            target
            if target.startswith("sip:")
            else f"sip:{target}@{self.registrar[0]}:{self.registrar[1]}"
        )
        return self.command("transfer", uri)

    # -- media (what the tests check) ------------------------------------------------

    def recordings(self) -> tuple[Path, Path]:
        """(sent, received) WAVs of the latest call, from the sndfile module.

        sndfile names them ``dump-<local time to the second>-enc.wav`` / ``-dec.wav``:
        one call per peer per second at most, or the files collide.
        """
        assert self.record_dir is not None, "started without record_dir"
        enc = sorted(self.record_dir.glob("dump-*-enc.wav"))
        dec = sorted(self.record_dir.glob("dump-*-dec.wav"))
        assert enc and dec, f"no sndfile dumps in {self.record_dir}\n{self.diagnostics()}"
        return enc[-1], dec[-1]

    def rtp_peers(self) -> dict[str, tuple[str, int]]:
        """Where the latest call's media went/came from, from baresip's own log:
        ``rtcp_remote`` (the SDP's RTP port + 1) and ``rtp_source`` (latched)."""
        out: dict[str, tuple[str, int]] = {}
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.out.text())
        for key, pattern in (
            ("rtcp_remote", r"starting RTCP with remote ([\d.]+):(\d+)"),
            ("rtp_source", r"incoming rtp for 'audio' established, receiving from ([\d.]+):(\d+)"),
        ):
            found = re.findall(pattern, text)
            if found:
                out[key] = (found[-1][0], int(found[-1][1]))
        return out
