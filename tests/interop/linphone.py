"""linphonec (Debian ``linphone-cli`` 5.1.65) driver, over stdin/stdout.

Quirks (details in docs/INTEROP.md):

* A ``[proxy_N]`` section in the rc file registers too early: linphonec
  tries to REGISTER before its SIP listening points exist ("No listening
  point matching"), marks the account failed and does not retry soon.  The
  driver therefore registers with the ``register`` command once the CLI
  is up.
* linphonec rewrites its rc file on exit: each peer gets its own copy in
  its own HOME (which also holds the zid cache, history and the message
  database under ``.local/share/linphone``).
* It listens on ``[::0]`` (all addresses) on the configured port; TLS is
  turned off with ``sip_tls_port=0``.
* No sound card here: mediastreamer falls back to no device, which is
  enough for signalling; calls need ``soundcard use files`` (issue 3).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from .harness import (
    LOOPBACK,
    OutputPump,
    free_port,
    require_binary,
    stop_process,
    tail,
    wait_until,
)


class LinphonePeer:
    def __init__(
        self,
        workdir: Path,
        *,
        extension: str,
        password: str,
        registrar: tuple[str, int],
        transport: str = "udp",
    ) -> None:
        self.binary = require_binary("linphonec")
        self.home = workdir / f"linphone-{extension}"
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.extension = extension
        self.password = password
        self.registrar = registrar
        self.transport = transport.lower()
        self.sip_port = free_port()
        self.rc = self.home / "linphonerc"
        self.logfile = self.home / "linphone.log"
        udp_port = self.sip_port if self.transport == "udp" else 0
        tcp_port = self.sip_port if self.transport == "tcp" else 0
        self.rc.write_text(
            f"""\
[sip]
sip_port={udp_port}
sip_tcp_port={tcp_port}
sip_tls_port=0
default_proxy=-1
register_only_when_network_is_up=0
register_only_when_upnp_is_ok=0
guess_hostname=0
contact=sip:{extension}@{LOOPBACK}
ping_with_options=0

[net]
ipv6_enabled=0
firewall_policy=0

[rtp]
audio_rtp_port={free_port()}
video_rtp_port={free_port()}
text_rtp_port={free_port()}

[video]
enabled=0
capture=0
display=0

[misc]
enable_basic_to_client_group_chat_room_migration=0
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> LinphonePeer:
        env = dict(os.environ, HOME=str(self.home))
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.rc), "-d", "5", "-l", str(self.logfile)],
            cwd=self.home,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.out = OutputPump(self.proc.stdout, f"linphonec-{self.extension}")
        # The listening points exist once `ports` reports the configured SIP port.
        mark = len(self.out.lines)
        self.send("ports")
        found = self.out.wait_for(lambda line: "sip port" in line.lower(), timeout, mark)
        if found is None:
            raise AssertionError("linphonec did not start\n" + self.diagnostics())
        return self

    def send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def register(self) -> None:
        host, port = self.registrar
        identity = f"sip:{self.extension}@{host}:{port}"
        proxy = f"sip:{host}:{port};transport={self.transport}"
        self.send(f"register {identity} {proxy} {self.password}")

    def registration_status(self) -> str:
        mark = len(self.out.lines)
        self.send("status register")
        found = self.out.wait_for(
            lambda line: "registered" in line.lower() or "no proxy" in line.lower(),
            5,
            mark,
        )
        return found[1] if found else ""

    def wait_registered(self, timeout: float = 20.0) -> None:
        wait_until(
            lambda: (
                re.search(r"(?i)\bregistered\b", self.registration_status())
                and "registered=0" not in self.registration_status().lower()
            ),
            timeout,
            f"linphonec {self.extension} registration",
            interval=0.3,
            detail=self.diagnostics,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc, 5)

    def __enter__(self) -> LinphonePeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def diagnostics(self) -> str:
        log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
        return (
            f"--- linphonec {self.extension} stdout ---\n{tail(self.out.text(), 40)}\n"
            f"--- linphonec log ---\n{tail(log, 40)}"
        )

    def wait_output(self, pattern: str, timeout: float = 20.0, start: int = 0) -> str:
        """The first stdout line from index ``start`` matching ``pattern`` (a regex).

        Call progress as linphonec prints it: ``Receiving new incoming call from
        <uri>, assigned id N``, ``Call N to <uri> ringing.``, ``Call N with <uri>
        connected.``, ``Call N with <uri> ended (<reason>).``"""
        found = self.out.wait_for(lambda line: re.search(pattern, line) is not None,
                                  timeout, start)
        if found is None:
            raise AssertionError(f"linphonec {self.extension}: no line matching {pattern!r} "
                                 f"in {timeout}s\n" + self.diagnostics())
        return found[1]

    def mark(self) -> int:
        """Where the output stands now, for ``wait_output(start=...)``."""
        return len(self.out.lines)

    # call control (issue 3 builds on these): linphonec CLI commands
    def dial(self, target: str) -> None:
        host, port = self.registrar
        self.send(f"call sip:{target}@{host}:{port}" if "@" not in target else f"call {target}")

    def answer(self) -> None:
        self.send("answer")

    def hangup(self) -> None:
        self.send("terminate")

    def send_dtmf(self, digits: str) -> None:
        for d in digits:
            self.send(d)  # a bare digit during a call sends it (RFC 2833 by default)

    def transfer(self, target: str) -> None:
        host, port = self.registrar
        self.send(f"transfer sip:{target}@{host}:{port}")
