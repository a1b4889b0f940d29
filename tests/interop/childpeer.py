"""Library softphones (pjsua2, pyVoIP) run in a child Python process.

Why a child: pjsua2 owns threads and global state that do not survive
pytest's teardown in the same process (crashes in ``libDestroy`` while
objects are still referenced), and pyVoIP's threads do not always stop.
A crashed or hung child is just killed.

Protocol on the child's stdin/stdout, one JSON object per line, prefixed
so library chatter on stdout cannot be mistaken for it:

* parent -> child: ``{"id": N, "cmd": "...", ...args}``
* child -> parent: ``@@ {"reply": N, "ok": true|false, ...}`` and
  ``@@ {"event": "...", ...}`` (e.g. ``registered``, ``reg_failed``,
  ``incoming_call``, ``call_state``).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .harness import INTEROP_DIR, OutputPump, stop_process, tail

PREFIX = "@@ "


class ChildPeer:
    """Parent side of a child softphone."""

    module: str = ""  # e.g. "interop.pjsua_peer"

    def __init__(self, workdir: Path, name: str, args: dict[str, Any]) -> None:
        self.workdir = workdir
        self.name = name
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self._next_id = 0
        self.messages: list[dict[str, Any]] = []
        self._seen = 0

    def start(self, timeout: float = 30.0) -> ChildPeer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(INTEROP_DIR.parent) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, json.dumps(self.args)],
            cwd=self.workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.out = OutputPump(self.proc.stdout, self.name)
        self.err = OutputPump(self.proc.stderr, self.name + "-err")
        self.wait_event("started", timeout)
        return self

    def _messages(self) -> list[dict[str, Any]]:
        for line in self.out.lines[self._seen :]:
            self._seen += 1
            if line.startswith(PREFIX):
                try:
                    self.messages.append(json.loads(line[len(PREFIX) :]))
                except ValueError:
                    pass
        return self.messages

    def wait_message(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for msg in self._messages():
                if predicate(msg):
                    return msg
            if self.proc is not None and self.proc.poll() is not None:
                self.out.join(1)
                for msg in self._messages():
                    if predicate(msg):
                        return msg
                raise AssertionError(
                    f"{self.name} exited ({self.proc.returncode}) while waiting for {what}\n"
                    + self.diagnostics()
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.name}: no {what} in {timeout:.0f}s\n" + self.diagnostics()
                )
            self.out.wait_for(lambda _l: True, 0.2, len(self.out.lines))

    def wait_event(self, event: str, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        return self.wait_message(
            lambda m: m.get("event") == event and all(m.get(k) == v for k, v in match.items()),
            timeout,
            f"event {event!r} {match or ''}",
        )

    def events(self, event: str) -> list[dict[str, Any]]:
        return [m for m in self._messages() if m.get("event") == event]

    def command(self, cmd: str, timeout: float = 20.0, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self._next_id += 1
        ident = self._next_id
        self.proc.stdin.write((json.dumps({"id": ident, "cmd": cmd, **args}) + "\n").encode())
        self.proc.stdin.flush()
        reply = self.wait_message(lambda m: m.get("reply") == ident, timeout, f"reply to {cmd}")
        if not reply.get("ok"):
            raise AssertionError(f"{self.name}: {cmd} failed: {reply.get('error')}")
        return reply

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.command("quit", timeout=timeout)
                self.proc.wait(timeout)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc, 3)

    def __enter__(self) -> ChildPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def diagnostics(self) -> str:
        log = ""
        logfile = self.workdir / "peer.log"
        if logfile.exists():
            log = tail(logfile.read_text(errors="replace"), 40)
        return (
            f"--- {self.name} stdout ---\n{tail(self.out.text(), 40)}\n"
            f"--- {self.name} stderr ---\n{tail(self.err.text(), 40)}\n"
            f"--- {self.name} log ---\n{log}"
        )


class ChildIO:
    """Child side: commands from stdin on a thread, replies/events to stdout."""

    def __init__(self) -> None:
        self.commands: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            line = line.strip()
            if line:
                try:
                    self.commands.put(json.loads(line))
                except ValueError:
                    pass
        self.commands.put(None)  # parent went away

    def emit(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self._out.write(PREFIX + json.dumps(obj) + "\n")
            self._out.flush()

    def event(self, name: str, **data: Any) -> None:
        self.emit({"event": name, **data})

    def reply(self, ident: Any, ok: bool = True, **data: Any) -> None:
        self.emit({"reply": ident, "ok": ok, **data})
