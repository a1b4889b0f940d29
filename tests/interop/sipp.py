"""SIPp driver: run a scenario from ``scenarios/`` headless and read its verdict.

SIPp's exit code is the verdict: 0 = every call succeeded, 1 = at least one
failed, 97/99 = it was stopped / a fatal error.  Statistics (successful,
failed, retransmissions) come from ``-trace_stat``'s CSV, last row.

Calls, transfers and DTMF are scenario files too (issue 3): add
``scenarios/*.xml`` and drive them with :func:`run_sipp` / :class:`SippServer`.
"""

from __future__ import annotations

import csv
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .harness import (
    LOOPBACK,
    SCENARIO_DIR,
    OutputPump,
    free_port,
    kill_process_group,
    require_binary,
    stop_process,
    tail,
)

TRANSPORTS = {"udp": "u1", "tcp": "t1"}


def write_users_csv(
    path: Path, users: Sequence[tuple[str, str]], order: str = "SEQUENTIAL"
) -> Path:
    """A SIPp injection file for the REGISTER scenarios from (extension, password) pairs.

    Field 0 is the extension, field 1 the whole ``[authentication ...]``
    keyword: SIPp 3.6.1 mangles ``[authentication username=[field0] ...]``
    (nested keywords) but expands a keyword that arrives in an injected field.
    """
    rows = [(ext, f"[authentication username={ext} password={pw}]") for ext, pw in users]
    path.write_text(order + "\n" + "".join(";".join(r) + "\n" for r in rows))
    return path


@dataclass
class SippResult:
    returncode: int
    command: list[str]
    stdout: str
    stderr: str
    errors: str
    stats: dict[str, str] = field(default_factory=dict)

    def stat(self, name: str) -> int:
        """A cumulative counter from the stats CSV, e.g. ``SuccessfulCall``."""
        for key in (f"{name}(C)", name):
            if key in self.stats:
                try:
                    return int(float(self.stats[key]))
                except ValueError:
                    return 0
        return 0

    @property
    def successful(self) -> int:
        return self.stat("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.stat("FailedCall")

    @property
    def retransmissions(self) -> int:
        return self.stat("Retransmissions")

    def describe(self) -> str:
        return (
            f"sipp exit {self.returncode}: {' '.join(self.command)}\n"
            f"successful={self.successful} failed={self.failed} "
            f"retransmissions={self.retransmissions}\n"
            f"--- errors ---\n{tail(self.errors, 40)}\n"
            f"--- stdout ---\n{tail(self.stdout, 40)}\n--- stderr ---\n{tail(self.stderr, 20)}"
        )


def scenario(name: str) -> str:
    path = SCENARIO_DIR / (name if name.endswith(".xml") else name + ".xml")
    assert path.exists(), path
    return str(path)


def sipp_command(
    workdir: Path,
    scenario_name: str,
    *,
    target: tuple[str, int] | None,
    transport: str = "udp",
    calls: int | None = 1,
    rate: float | None = None,
    rate_period_ms: int | None = None,
    max_concurrent: int | None = None,
    users_csv: Path | None = None,
    local_port: int | None = None,
    local_ip: str = LOOPBACK,
    timeout_s: float | None = 30,
    extra: Sequence[str] = (),
    cpu: int | None = None,
    tag: str = "sipp",
) -> list[str]:
    binary = require_binary("sipp")
    cmd: list[str] = []
    if cpu is not None:
        cmd += ["taskset", "-c", str(cpu)]
    cmd += [binary]
    if target is not None:
        cmd.append(f"{target[0]}:{target[1]}")
    cmd += [
        "-sf", scenario(scenario_name),
        "-t", TRANSPORTS.get(transport, transport),
        "-i", local_ip,
        "-bind_local",
        "-p", str(local_port if local_port is not None else free_port(local_ip)),
        "-nostdin",
        # No BYE after a failed non-INVITE "call" (SIPp sends one by default).
        "-default_behaviors", "all,-bye",
        "-trace_err", "-error_file", str(workdir / f"{tag}_errors.log"),
        "-trace_stat", "-stf", str(workdir / f"{tag}_stats.csv"),
    ]  # fmt: skip
    if calls is not None:
        cmd += ["-m", str(calls)]
    if rate is not None:
        cmd += ["-r", f"{rate:g}"]
    if rate_period_ms is not None:
        cmd += ["-rp", str(rate_period_ms)]
    if max_concurrent is not None:
        cmd += ["-l", str(max_concurrent)]
    if users_csv is not None:
        cmd += ["-inf", str(users_csv)]
    if timeout_s is not None:
        cmd += ["-timeout", f"{int(timeout_s)}s", "-timeout_error"]
    cmd += list(extra)
    return cmd


def _read_result(
    workdir: Path, tag: str, cmd: list[str], rc: int, out: str, err: str
) -> SippResult:
    errors_path = workdir / f"{tag}_errors.log"
    stats_path = workdir / f"{tag}_stats.csv"
    errors = errors_path.read_text(errors="replace") if errors_path.exists() else ""
    stats: dict[str, str] = {}
    if stats_path.exists():
        rows = list(csv.reader(stats_path.read_text(errors="replace").splitlines(), delimiter=";"))
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1]))
    return SippResult(rc, cmd, out, err, errors, stats)


def run_sipp(
    workdir: Path,
    scenario_name: str,
    target: tuple[str, int],
    *,
    wall_timeout: float = 120,
    tag: str = "sipp",
    **kwargs: object,
) -> SippResult:
    """Run a SIPp UAC scenario to completion and return its verdict."""
    workdir.mkdir(parents=True, exist_ok=True)
    for suffix in ("_errors.log", "_stats.csv"):
        (workdir / f"{tag}{suffix}").unlink(missing_ok=True)
    cmd = sipp_command(workdir, scenario_name, target=target, tag=tag, **kwargs)  # type: ignore[arg-type]
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=wall_timeout)
    except subprocess.TimeoutExpired:
        kill_process_group(proc)
        out, err = proc.communicate()
    finally:
        kill_process_group(proc)
    rc = proc.returncode if proc.returncode is not None else -9
    return _read_result(
        workdir, tag, cmd, rc, out.decode(errors="replace"), err.decode(errors="replace")
    )


class SippServer:
    """A SIPp UAS scenario running in the background (e.g. the bench baseline)."""

    def __init__(
        self,
        workdir: Path,
        scenario_name: str,
        *,
        transport: str = "udp",
        port: int | None = None,
        tag: str = "sipp_uas",
        **kwargs: object,
    ) -> None:
        self.workdir = workdir
        self.tag = tag
        self.port = port if port is not None else free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.cmd = sipp_command(
            workdir, scenario_name, target=None, transport=transport, local_port=self.port,
            calls=None, timeout_s=None, tag=tag, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.out = OutputPump(self.proc.stdout, tag)
        self.err = OutputPump(self.proc.stderr, tag + "-err")
        time.sleep(0.3)  # SIPp binds synchronously at start; give it a moment
        if self.proc.poll() is not None:
            raise RuntimeError(f"sipp UAS exited {self.proc.returncode}: {self.err.text()}")

    @property
    def addr(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> SippResult:
        rc = stop_process(self.proc, 5)
        self.out.join()
        self.err.join()
        return _read_result(self.workdir, self.tag, self.cmd, rc if rc is not None else -9,
                            self.out.text(), self.err.text())  # fmt: skip
