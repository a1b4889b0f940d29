"""`switch run` / `switch check-config` as a user runs them: subprocesses on free ports.

No port is assumed free (everything binds port 0 and reads the actual ports
from the `switch.ready` log line); the only timeouts are hang guards.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

TOKEN = "test-token-123"
# Hang guards only: a healthy engine is far quicker; these just stop a broken one
# from wedging the test run.
HANG_GUARD = 60.0


class SwitchProcess:
    """`python -m switch ...` with stdout collected line by line in a thread."""

    def __init__(self, args: Sequence[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "switch", *args], cwd=cwd, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_line(self, needle: str) -> str:
        """The first stdout line containing ``needle`` (any format)."""
        deadline = time.monotonic() + HANG_GUARD
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line with {needle!r}; stdout so far:\n{''.join(self.stdout)}")
            if line is None:
                pytest.fail(f"engine exited before a line with {needle!r}")
            self.stdout.append(line)
            if needle in line:
                return line

    def wait_event(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + HANG_GUARD
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {name} line; stdout so far:\n{''.join(self.stdout)}")
            if line is None:
                self.proc.wait(timeout=HANG_GUARD)
                pytest.fail(f"engine exited ({self.proc.returncode}) before {name}:\n"
                            f"{''.join(self.stdout)}\nstderr:\n{self.stderr()}")
            self.stdout.append(line)
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"stdout line is not JSON: {line!r}")
            if event.get("event") == name:
                return event  # type: ignore[no-any-return]

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else ""

    def finish(self) -> tuple[int, str, str]:
        """Wait for exit; (code, rest of stdout, stderr)."""
        # Not communicate(): the reader thread owns stdout.
        self.proc.wait(timeout=HANG_GUARD)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self._reader.join(timeout=HANG_GUARD)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.stdout.append(line)
        return self.proc.returncode, "".join(self.stdout), err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=HANG_GUARD)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., SwitchProcess]]:
    procs: list[SwitchProcess] = []

    def run(*args: str) -> SwitchProcess:
        proc = SwitchProcess(args, cwd=tmp_path)
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        proc.kill()


def run_to_exit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "switch", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=HANG_GUARD, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def http_get(port: int, path: str, token: str | None = None) -> tuple[int, bytes, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=HANG_GUARD) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def loopback_args(config: Path, data_dir: Path) -> list[str]:
    return ["run", "--config", str(config), "--data-dir", str(data_dir),
            "--sip-host", "127.0.0.1", "--sip-port", "0",
            "--http-host", "127.0.0.1", "--http-port", "0"]


# ------------------------------------------------------------------ a real run


def test_run_serves_and_stops_on_sigterm(
        start: Callable[..., SwitchProcess], write_config: Callable[..., Path], tmp_path: Path,
        promtool_check: Callable[[bytes], None]) -> None:
    proc = start(*loopback_args(write_config(), tmp_path / "data"))
    ready = proc.wait_event("switch.ready")
    sip, http = ready["sip"], ready["http"]
    assert sip["udp"]["port"] == sip["tcp"]["port"] > 0
    assert sip["udp"]["host"] == "127.0.0.1"
    assert http["port"] > 0
    assert ready["level"] == "info"
    assert (tmp_path / "data").is_dir()

    # The SIP port is really held, UDP and TCP.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, pytest.raises(OSError):
        probe.bind(("127.0.0.1", sip["udp"]["port"]))

    status, body, _ = http_get(http["port"], "/healthz")
    assert status == 200
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["sip"]["udp"]["port"] == sip["udp"]["port"]

    status, body, content_type = http_get(http["port"], "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    promtool_check(body)

    status, body, _ = http_get(http["port"], "/api/v1/registrations")
    assert status == 401
    assert json.loads(body)["error"]["code"] == "unauthorized"
    status, body, _ = http_get(http["port"], "/api/v1/registrations", token=TOKEN)
    assert status == 200
    assert json.loads(body) == []

    proc.proc.send_signal(signal.SIGTERM)
    code, stdout, stderr = proc.finish()
    assert code == 0, stderr
    assert "Traceback" not in stdout + stderr
    events = [json.loads(line)["event"] for line in stdout.splitlines()]
    assert events.count("switch.ready") == 1
    assert events[-1] == "switch.stopped"
    assert TOKEN not in stdout


def test_sigint_stops_cleanly(start: Callable[..., SwitchProcess],
                              write_config: Callable[..., Path], tmp_path: Path) -> None:
    proc = start(*loopback_args(write_config(), tmp_path / "data"), "--log-format", "json")
    proc.wait_event("switch.ready")
    proc.proc.send_signal(signal.SIGINT)
    code, _, stderr = proc.finish()
    assert code == 0
    assert "Traceback" not in stderr


def test_console_log_format(start: Callable[..., SwitchProcess],
                            write_config: Callable[..., Path], tmp_path: Path) -> None:
    proc = start(*loopback_args(write_config(), tmp_path / "data"), "--log-format", "console")
    line = proc.wait_line("switch.ready")
    assert not line.lstrip().startswith("{")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.finish()[0] == 0


def test_without_config_flag_falls_back_to_packaged_config(
        start: Callable[..., SwitchProcess], tmp_path: Path) -> None:
    # tmp_path has no config/switch.toml, so the packaged one is used.
    proc = start("run", "--data-dir", str(tmp_path / "var"), "--sip-port", "0",
                 "--http-port", "0")
    note = proc.wait_event("config.packaged_fallback")
    assert note["using"].endswith("config/switch.toml")
    ready = proc.wait_event("switch.ready")
    assert ready["users"] == 3
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.finish()[0] == 0


def test_help_mentions_the_fallback(tmp_path: Path) -> None:
    result = run_to_exit(tmp_path, "run", "--help")
    assert result.returncode == 0
    assert "config/switch.toml" in result.stdout
    assert "shipped with the package" in result.stdout


# ------------------------------------------------------------------ cannot start: one line, exit 2


def test_bad_config_one_line_exit_2(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    path = write_config('[sip]\nport = "abc"\nrealm = ""\n')
    line = assert_one_line_error(run_to_exit(tmp_path, "run", "--config", str(path)),
                                 "sip.port", '"abc"')
    assert "1 more" in line


def test_missing_config_file_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run_to_exit(tmp_path, "run", "--config", str(tmp_path / "no.toml")),
                          "no.toml", "cannot read")


def test_bad_flag_value_exit_2(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    result = run_to_exit(tmp_path, "run", "--config", str(write_config()), "--sip-port", "abc")
    assert_one_line_error(result, "--sip-port", "sip.port")
    result = run_to_exit(tmp_path, "run", "--config", str(write_config()),
                         "--rtp-ports", "20000")
    assert_one_line_error(result, "--rtp-ports")


def test_unknown_argument_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run_to_exit(tmp_path, "run", "--frobnicate"), "--frobnicate")
    assert_one_line_error(run_to_exit(tmp_path), "required")


def test_http_port_in_use_exit_2(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = loopback_args(write_config(), tmp_path / "data")
        args[args.index("--http-port") + 1] = str(port)
        line = assert_one_line_error(run_to_exit(tmp_path, *args), "http.port", str(port),
                                     "address already in use")
    assert line.startswith("switch: error: ")


def test_sip_port_in_use_exit_2(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        args = loopback_args(write_config(), tmp_path / "data")
        args[args.index("--sip-port") + 1] = str(port)
        assert_one_line_error(run_to_exit(tmp_path, *args), "sip.port", str(port),
                              "address already in use")


def test_unwritable_data_dir_exit_2(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    # A path below a regular file can never be created, even by root (whom
    # file modes would not stop).
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = run_to_exit(tmp_path, *loopback_args(write_config(), blocker / "data"))
    assert_one_line_error(result, "data_dir", str(blocker / "data"))
    result = run_to_exit(tmp_path, *loopback_args(write_config(), blocker))
    assert_one_line_error(result, "data_dir", "not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_data_dir_exit_2(tmp_path: Path, write_config: Callable[..., Path]) -> None:
    data = tmp_path / "ro"
    data.mkdir()
    data.chmod(0o500)
    try:
        result = run_to_exit(tmp_path, *loopback_args(write_config(), data))
        assert_one_line_error(result, "data_dir", "ermission denied")
    finally:
        data.chmod(0o700)
