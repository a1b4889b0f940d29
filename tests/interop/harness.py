"""Interop harness: run the engine as a subprocess and talk to it.

Everything here is plain synchronous Python (threads + subprocess), so that
it can be used from pytest fixtures, from peer drivers and from the
benchmark scripts alike.  Nothing assumes a fixed port: ports are picked
free (UDP and TCP on the same number for SIP).

Environment knobs:

* ``SWITCH_ENGINE_CMD`` -- command prefix that replaces
  ``python -m switch`` (shell syntax, split with :mod:`shlex`).  Used to run
  the harness against ``tests/interop/stub_engine.py`` while the real engine
  is not there; never set in CI.
* ``CI=true`` -- a missing peer is a test failure instead of a skip.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
INTEROP_DIR = Path(__file__).resolve().parent
SCENARIO_DIR = INTEROP_DIR / "scenarios"
LOOPBACK = "127.0.0.1"

READY_TIMEOUT = 30.0
#: CONTRACT.md: SIGTERM -> exit 0 within 10 s.  A little slack for a loaded CI box.
STOP_TIMEOUT = 12.0

T = TypeVar("T")


# --------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _udp_tcp_free(port: int, host: str = LOOPBACK) -> bool:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind((host, port))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        udp.close()
        tcp.close()


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both UDP and TCP on *host*, never handed out twice."""
    for _ in range(200):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        finally:
            probe.close()
        with _ports_lock:
            if port in _handed_out:
                continue
            if _udp_tcp_free(port, host):
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free UDP+TCP port")


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port_range(count: int, host: str = LOOPBACK) -> tuple[int, int]:
    """A block of *count* consecutive UDP ports (even start), for RTP ranges.

    Taken below the kernel's ephemeral range when there is room: free_port()
    hands out ephemeral ports (bind to 0), which end up scattered over that
    range and would make a large block hard to find.
    """
    eph_lo, eph_hi = _ephemeral_range()
    windows = []
    if eph_lo - 10000 > count:
        windows.append((10000, eph_lo - count))
    windows.append((30000, 59000 - count))
    for _ in range(400):
        lo, hi = windows[0] if len(windows) == 1 or random.random() < 0.8 else windows[1]
        base = random.randrange(lo, hi) & ~1
        with _ports_lock:
            block = range(base, base + count)
            if any(p in _handed_out for p in block):
                continue
            if all(_udp_tcp_free(p, host) for p in block[:: max(1, count // 8)]):
                _handed_out.update(block)
                return base, base + count - 1
    raise RuntimeError("could not find a free port range")


# --------------------------------------------------------------------------
# waiting
# --------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.1,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll *predicate* until it returns something truthy; fail with *what*."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported below
            last_exc = exc
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.0f}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            if detail is not None:
                msg += "\n" + detail()
            raise AssertionError(msg)
        time.sleep(interval)


# --------------------------------------------------------------------------
# peers
# --------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def missing_peer(what: str) -> None:
    """A peer is not installed: a failure in CI, a skip on a dev machine."""
    import pytest  # only the tests need it; bench/ uses this module too

    msg = f"interop peer not available: {what}"
    if in_ci():
        pytest.fail(msg + " (CI=true: peers must be installed, see .ci/run)")
    pytest.skip(msg)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing_peer(f"binary {name!r} not on PATH")
        raise AssertionError("unreachable")
    return path


def require_module(name: str) -> None:
    """Check a Python module can be imported -- in a child, not in pytest."""
    proc = subprocess.run(
        [sys.executable, "-c", f"import {name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        missing_peer(f"python module {name!r}: {proc.stderr.strip()[-300:]}")


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------


class OutputPump:
    """Reads a pipe in a thread, keeps every line, lets callers wait for one."""

    def __init__(self, stream: Any, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, args=(stream,), name=f"pump-{name}", daemon=True
        )
        self._thread.start()

    def _run(self, stream: Any) -> None:
        try:
            for raw in iter(stream.readline, b"" if "b" in getattr(stream, "mode", "") else ""):
                line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                with self._cond:
                    self.lines.append(line.rstrip("\r\n"))
                    self._cond.notify_all()
        except (ValueError, OSError):
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(
        self, predicate: Callable[[str], bool], timeout: float, start: int = 0
    ) -> tuple[int, str] | None:
        """Index and line of the first line from *start* matching, or None."""
        deadline = time.monotonic() + timeout
        idx = start
        with self._cond:
            while True:
                while idx < len(self.lines):
                    if predicate(self.lines[idx]):
                        return idx, self.lines[idx]
                    idx += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return None
                self._cond.wait(min(remaining, 0.5))

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


def kill_process_group(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """Signal the whole process group of *proc* (started with start_new_session)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """SIGTERM the group, then SIGKILL after *timeout*; returns the exit code."""
    if proc.poll() is None:
        kill_process_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_process_group(proc, signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
    return proc.returncode


def tail(text: str, lines: int = 60) -> str:
    parts = text.splitlines()
    return "\n".join(parts[-lines:])


# --------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    extension: str
    password: str
    name: str = ""
    numbers: tuple[str, ...] = ()
    voicemail: bool = True


def default_users(count: int = 5, first: int = 1001) -> list[User]:
    users = []
    for i in range(count):
        ext = str(first + i)
        users.append(
            User(
                extension=ext,
                password=f"secret{ext}",
                name=f"User {ext}",
                numbers=(f"+1415555{first + i:04d}"[-12:],) if i < 10 else (),
            )
        )
    return users


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_config(
    *,
    sip_host: str,
    sip_port: int,
    http_host: str,
    http_port: int,
    token: str,
    data_dir: Path,
    rtp_range: tuple[int, int],
    users: Sequence[User],
    realm: str = "switch.local",
    auth_algorithms: Sequence[str] = ("MD5",),
    extra: str = "",
) -> str:
    out = [
        f"data_dir = {_toml_str(str(data_dir))}",
        "",
        "[sip]",
        f"host = {_toml_str(sip_host)}",
        f"port = {sip_port}",
        f"realm = {_toml_str(realm)}",
        "auth_algorithms = [" + ", ".join(_toml_str(a) for a in auth_algorithms) + "]",
        "",
        "[http]",
        f"host = {_toml_str(http_host)}",
        f"port = {http_port}",
        f"token = {_toml_str(token)}",
        "",
        "[media]",
        f"host = {_toml_str(sip_host)}",
        f"rtp_port_min = {rtp_range[0]}",
        f"rtp_port_max = {rtp_range[1]}",
        "",
    ]
    for u in users:
        out += [
            "[[users]]",
            f"extension = {_toml_str(u.extension)}",
            f"name = {_toml_str(u.name or u.extension)}",
            f"password = {_toml_str(u.password)}",
            "numbers = [" + ", ".join(_toml_str(n) for n in u.numbers) + "]",
            f"voicemail = {'true' if u.voicemail else 'false'}",
            "",
        ]
    if extra:
        out.append(extra)
    return "\n".join(out) + "\n"


def engine_command() -> list[str]:
    override = os.environ.get("SWITCH_ENGINE_CMD")
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "switch"]


def _parse_hostport(value: Any) -> tuple[str, int] | None:
    """Accept "h:p", "udp:h:p", "sip:h:p", {"host":..,"port":..}, or a list of those."""
    if isinstance(value, dict):
        host = value.get("host") or value.get("address") or LOOPBACK
        port = value.get("port")
        if port is not None:
            return str(host), int(port)
        for sub in value.values():
            found = _parse_hostport(sub)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _parse_hostport(item)
            if found:
                return found
        return None
    if isinstance(value, str):
        text = value.strip()
        if "://" in text:
            text = text.split("://", 1)[1]
        text = text.rstrip("/").split("/", 1)[0]
        host, sep, port = text.rpartition(":")
        if sep and port.isdigit():
            host = host.split(":")[-1] if host.count(":") == 1 else host
            return host.strip("[]") or LOOPBACK, int(port)
    return None


def parse_ready(event: dict[str, Any]) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(sip, http) addresses from a ``switch.ready`` event, tolerant of its shape."""

    def pick(prefix: str) -> tuple[str, int] | None:
        for key in (prefix, f"{prefix}_addr", f"{prefix}_address", f"{prefix}_listen"):
            if key in event:
                found = _parse_hostport(event[key])
                if found:
                    return found
        port = event.get(f"{prefix}_port")
        if port is not None:
            return str(event.get(f"{prefix}_host", LOOPBACK)), int(port)
        return None

    return pick("sip"), pick("http")


def log_problems(lines: Iterable[str]) -> list[str]:
    """Lines that show the engine crashed or lost control of an error."""
    bad: list[str] = []
    for line in lines:
        low = line.lower()
        compact = low.replace(" ", "")
        if (
            "traceback (most recent call last)" in low
            or '"level":"critical"' in compact
            or '"level":"fatal"' in compact
            or "unhandled" in low
        ):
            bad.append(line)
    return bad


@dataclass
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Engine:
    """One engine subprocess with its own config and data directory."""

    workdir: Path
    users: list[User] = field(default_factory=default_users)
    realm: str = "switch.local"
    auth_algorithms: tuple[str, ...] = ("MD5",)
    extra_config: str = ""
    extra_args: tuple[str, ...] = ()
    cpu: int | None = None  # pin with taskset (bench)
    host: str = LOOPBACK
    #: size of the RTP port range given to this engine (RTP + RTCP per leg: two
    #: ports per leg, four per call); each engine gets a free block of its own
    rtp_ports: int = 64

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.config_path = self.workdir / "switch.toml"
        self.token = "tok-" + uuid.uuid4().hex
        self.sip_port = free_port(self.host)
        self.http_port = free_port(self.host)
        self.rtp_range = free_port_range(self.rtp_ports, self.host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout: OutputPump | None = None
        self.stderr: OutputPump | None = None
        self.ready_event: dict[str, Any] | None = None
        self.runs: list[tuple[str, str]] = []  # (stdout, stderr) of finished runs
        self.write_config()

    # -- config ---------------------------------------------------------------

    def user(self, extension: str) -> User:
        for u in self.users:
            if u.extension == extension:
                return u
        raise KeyError(extension)

    def write_config(self) -> None:
        self.config_path.write_text(
            render_config(
                sip_host=self.host,
                sip_port=self.sip_port,
                http_host=self.host,
                http_port=self.http_port,
                token=self.token,
                data_dir=self.data_dir,
                rtp_range=self.rtp_range,
                users=self.users,
                realm=self.realm,
                auth_algorithms=self.auth_algorithms,
                extra=self.extra_config,
            )
        )

    # -- lifecycle --------------------------------------------------------------

    @property
    def command(self) -> list[str]:
        cmd = engine_command() + [
            "run",
            "--config", str(self.config_path),
            "--data-dir", str(self.data_dir),
            "--sip-host", self.host,
            "--sip-port", str(self.sip_port),
            "--http-host", self.host,
            "--http-port", str(self.http_port),
            "--rtp-ports", f"{self.rtp_range[0]}-{self.rtp_range[1]}",
            "--log-format", "json",
            *self.extra_args,
        ]  # fmt: skip
        if self.cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        return cmd

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = READY_TIMEOUT) -> Engine:
        assert self.proc is None or self.proc.poll() is not None, "engine already running"
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.stdout = OutputPump(self.proc.stdout, "engine-stdout")
        self.stderr = OutputPump(self.proc.stderr, "engine-stderr")
        found = None
        for pump in (self.stdout,):
            found = pump.wait_for(_is_ready_line, timeout)
        if found is None:
            # Some loggers write to stderr; accept a ready line there too.
            found = self.stderr.wait_for(_is_ready_line, 0.5)
        if found is None:
            rc = self.proc.poll()
            out = self.diagnostics()
            stop_process(self.proc)
            raise AssertionError(
                f"engine did not log switch.ready within {timeout:.0f}s "
                f"(exit code {rc}); command: {shlex.join(self.command)}\n{out}"
            )
        self.ready_event = json.loads(found[1][found[1].index("{") :])
        sip, http = parse_ready(self.ready_event)
        # We asked for explicit ports; the ready line must agree when it names them.
        if sip is not None and sip[1] not in (0, self.sip_port):
            self.sip_port = sip[1]
        if http is not None and http[1] not in (0, self.http_port):
            self.http_port = http[1]
        return self

    def stop(self, timeout: float = STOP_TIMEOUT, check: bool = True) -> int | None:
        """SIGTERM; with *check*, assert exit code 0 within *timeout*."""
        if self.proc is None:
            return None
        proc = self.proc
        rc: int | None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_process_group(proc)
                proc.wait(5)
                self._archive()
                if check:
                    raise AssertionError(
                        f"engine did not exit within {timeout:.0f}s of SIGTERM\n"
                        + self.diagnostics()
                    ) from None
                return None
        else:
            rc = proc.returncode
        kill_process_group(proc)  # strays in the group, if any
        self._archive()
        if check and rc != 0:
            raise AssertionError(f"engine exited with {rc} after SIGTERM\n" + self.diagnostics())
        return rc

    def kill(self) -> None:
        if self.proc is not None:
            kill_process_group(self.proc)
            self.proc.wait(5)
            self._archive()

    def restart(self, timeout: float = READY_TIMEOUT) -> Engine:
        """Stop (asserting a clean exit) and start again on the same ports and data dir."""
        self.stop()
        # The ports were just released by the engine itself; wait until both are bindable.
        wait_until(
            lambda: (
                _udp_tcp_free(self.sip_port, self.host) and _tcp_free(self.http_port, self.host)
            ),
            15,
            "engine ports to be released",
        )
        return self.start(timeout)

    def _archive(self) -> None:
        if self.stdout is not None and self.stderr is not None:
            self.stdout.join(2)
            self.stderr.join(2)
            entry = (self.stdout.text(), self.stderr.text())
            if not self.runs or self.runs[-1] is not entry:
                self.runs.append(entry)
            self.stdout = self.stderr = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- output -------------------------------------------------------------------

    def all_lines(self) -> list[str]:
        lines: list[str] = []
        for out, err in self.runs:
            lines += out.splitlines() + err.splitlines()
        if self.stdout is not None and self.stderr is not None:
            lines += self.stdout.lines + self.stderr.lines
        return lines

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.all_lines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
        return events

    def problems(self) -> list[str]:
        return log_problems(self.all_lines())

    def diagnostics(self, lines: int = 80) -> str:
        out = self.stdout.text() if self.stdout else (self.runs[-1][0] if self.runs else "")
        err = self.stderr.text() if self.stderr else (self.runs[-1][1] if self.runs else "")
        return (
            f"--- engine stdout (tail) ---\n{tail(out, lines)}\n"
            f"--- engine stderr (tail) ---\n{tail(err, lines)}"
        )

    # -- HTTP -----------------------------------------------------------------------

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def sip_addr(self) -> tuple[str, int]:
        return self.host, self.sip_port

    def http(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None | bool = True,
        timeout: float = 10.0,
    ) -> HttpResponse:
        """HTTP request; token=True uses the engine's token, a str uses that, None/False none."""
        headers = {"Accept": "application/json"}
        if token is True:
            headers["Authorization"] = f"Bearer {self.token}"
        elif isinstance(token, str):
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            self.http_base + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return HttpResponse(resp.status, resp.read(), dict(resp.headers.items()))
        except urllib.error.HTTPError as err:
            return HttpResponse(err.code, err.read(), dict(err.headers.items()))

    def api(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.http(method, path, body)
        assert 200 <= resp.status < 300, f"{method} {path} -> {resp.status}: {resp.text}"
        return resp.json() if resp.body else None

    def registrations(self) -> list[dict[str, Any]]:
        data = self.api("GET", "/api/v1/registrations")
        if isinstance(data, dict):  # tolerate {"registrations": [...]}
            for key in ("registrations", "items", "data"):
                if isinstance(data.get(key), list):
                    return list(data[key])
        assert isinstance(data, list), f"unexpected registrations payload: {data!r}"
        return data

    def registered_extensions(self) -> set[str]:
        return {str(r.get("extension")) for r in self.registrations()}

    def wait_registered(self, extension: str, timeout: float = 20.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for r in self.registrations():
                if str(r.get("extension")) == extension:
                    return r
            return None

        return wait_until(
            find, timeout, f"{extension} in /api/v1/registrations",
            detail=lambda: self.diagnostics(30),
        )  # fmt: skip

    def wait_unregistered(self, extension: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: extension not in self.registered_extensions(),
            timeout,
            f"{extension} to leave /api/v1/registrations",
            detail=lambda: self.diagnostics(30),
        )

    def metrics(self) -> str:
        resp = self.http("GET", "/metrics", token=None)
        assert resp.status == 200, f"/metrics -> {resp.status}"
        return resp.text

    def metric_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return metric_value(self.metrics(), name, labels)


def _tcp_free(port: int, host: str) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _is_ready_line(line: str) -> bool:
    if "switch.ready" not in line or "{" not in line:
        return False
    try:
        event = json.loads(line[line.index("{") :])
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("event") == "switch.ready"


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Sum of the samples of *name* whose labels include *labels*; None if absent."""
    total: float | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        metric, _, rest = line.partition(" ")
        base, brace, label_text = metric.partition("{")
        if base != name:
            continue
        if labels:
            have = _parse_labels(label_text.rstrip("}")) if brace else {}
            if any(have.get(k) != v for k, v in labels.items()):
                continue
        value = float(rest.split()[0])
        total = value if total is None else total + value
    return total


def _parse_labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        key = text[i:eq].strip().lstrip(",").strip()
        assert text[eq + 1] == '"'
        j = eq + 2
        val = []
        while text[j] != '"':
            if text[j] == "\\":
                j += 1
            val.append(text[j])
            j += 1
        out[key] = "".join(val)
        i = j + 1
        while i < len(text) and text[i] in ", ":
            i += 1
    return out
