"""SIPp driver: run a scenario from ``scenarios/`` headless and read its verdict.

SIPp's exit code is the verdict: 0 = every call succeeded, 1 = at least one
failed, 97/99 = it was stopped / a fatal error.  Statistics (successful,
failed, retransmissions) come from ``-trace_stat``'s CSV, last row.

Calls, transfers and DTMF are scenario files too (issue 3): add
``scenarios/*.xml`` and drive them with :func:`run_sipp` / :class:`SippServer`.
"""

from __future__ import annotations

import csv
import re
import subprocess
import time
import xml.etree.ElementTree as ET
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


def write_callers_csv(
    path: Path, callers: Sequence[tuple[str, str]], order: str = "SEQUENTIAL"
) -> Path:
    """Injection file for the call scenarios (``uac_*.xml``): same layout as
    :func:`write_users_csv` (field0 = caller extension, field1 = the
    ``[authentication ...]`` keyword, used only when challenged)."""
    return write_users_csv(path, callers, order)


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
    #: last row of ``-trace_counts`` (per scenario step: "3_180_Recv" -> n)
    counts: dict[str, int] = field(default_factory=dict)
    scenario_path: str = ""
    messages: str = ""  # -trace_msg output, when asked for

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

    def received(self, code: int | str) -> int:
        """How many responses *code* the scenario's recv steps matched (all steps)."""
        suffix = f"_{code}_Recv"
        return sum(v for k, v in self.counts.items() if k.endswith(suffix))

    def step_count(self, index: int, what: str) -> int:
        """One ``-trace_counts`` cell, e.g. ``step_count(12, "180_Recv")``."""
        return self.counts.get(f"{index}_{what}", 0)

    @property
    def late_180s(self) -> int:
        """180s that came after the 200 they belong to (uac_call*.xml's check step)."""
        idx = late_180_step(self.scenario_path) if self.scenario_path else None
        return 0 if idx is None else self.step_count(idx, "180_Recv")

    def describe(self) -> str:
        errors = "\n".join(
            line for line in self.errors.splitlines() if "jumping to label" not in line
        )  # a recv timeout with ontimeout is control flow, not an error
        return (
            f"sipp exit {self.returncode}: {' '.join(self.command)}\n"
            f"successful={self.successful} failed={self.failed} "
            f"retransmissions={self.retransmissions}\n"
            f"counts: { {k: v for k, v in self.counts.items() if v} }\n"
            f"--- errors ---\n{tail(errors, 60)}\n"
            f"--- messages (tail) ---\n{tail(self.messages, 80)}\n"
            f"--- stdout ---\n{tail(self.stdout, 40)}\n--- stderr ---\n{tail(self.stderr, 20)}"
        )


def scenario(name: str) -> str:
    """A file of ``scenarios/`` by name, or any existing scenario file by path."""
    if Path(name).is_absolute() and Path(name).exists():
        return name
    path = SCENARIO_DIR / (name if name.endswith(".xml") else name + ".xml")
    assert path.exists(), path
    return str(path)


_NOT_STEPS = {"label", "ResponseTimeRepartition", "CallLengthRepartition", "Reference"}


def scenario_steps(path: str) -> list[ET.Element]:
    """The scenario's messages in SIPp's numbering (labels are not steps)."""
    root = ET.parse(path).getroot()
    return [el for el in root if isinstance(el.tag, str) and el.tag not in _NOT_STEPS]


def late_180_step(path: str) -> int | None:
    """Index of the "180 after its 200" check step (a recv 180 with a timeout)."""
    for i, el in enumerate(scenario_steps(path)):
        if el.tag == "recv" and el.get("response") == "180" and el.get("timeout"):
            return i
    return None


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
    service: str | None = None,
    auth_uri: str | None = None,
    duration_ms: int | None = None,
    media_ip: str | None = None,
    trace_counts: bool = True,
    trace_msg: bool = False,
    keys: dict[str, str] | None = None,
    buff_size: int | None = None,
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
        "-mi", media_ip or local_ip,
    ]  # fmt: skip
    if trace_counts:
        cmd += ["-trace_counts"]
    if trace_msg:
        cmd += ["-trace_msg", "-message_file", str(workdir / f"{tag}_messages.log")]
    if service is not None:
        cmd += ["-s", service]
    if auth_uri is not None:
        # SIPp's digest uri defaults to remote_ip:remote_port, not the Request-URI;
        # -auth_uri takes it without the "sip:" (SIPp adds it).
        cmd += ["-auth_uri", auth_uri.removeprefix("sip:")]
    if duration_ms is not None:
        cmd += ["-d", str(duration_ms)]
    if buff_size is not None:
        cmd += ["-buff_size", str(buff_size)]
    for key, value in (keys or {}).items():
        cmd += ["-key", key, value]
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


def _read_counts(workdir: Path, cmd: list[str], pid: int | None) -> dict[str, int]:
    """Last row of ``<scenario>_<pid>_counts.csv`` (-trace_counts) in *workdir*."""
    if pid is None:
        return {}
    sf = cmd[cmd.index("-sf") + 1]
    try:
        name = ET.parse(sf).getroot().get("name", Path(sf).stem)
    except ET.ParseError:
        # SIPp's own XML reader accepts what ElementTree refuses (a \" inside an
        # attribute, as in uas_register.xml's ereg): read the name plainly.
        found = re.search(r'<scenario\s+name="([^"]*)"', Path(sf).read_text(errors="replace"))
        name = found.group(1) if found else Path(sf).stem
    path = workdir / f"{name}_{pid}_counts.csv"
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    out: dict[str, int] = {}
    for key, value in zip(rows[0], rows[-1], strict=False):
        if re.match(r"^\d+_", key):
            try:
                out[key] = int(value)
            except ValueError:
                pass
    return out


def _read_result(
    workdir: Path, tag: str, cmd: list[str], rc: int, out: str, err: str,
    pid: int | None = None,
) -> SippResult:
    errors_path = workdir / f"{tag}_errors.log"
    stats_path = workdir / f"{tag}_stats.csv"
    msg_path = workdir / f"{tag}_messages.log"
    errors = errors_path.read_text(errors="replace") if errors_path.exists() else ""
    stats: dict[str, str] = {}
    if stats_path.exists():
        rows = list(csv.reader(stats_path.read_text(errors="replace").splitlines(), delimiter=";"))
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1], strict=False))
    messages = msg_path.read_text(errors="replace") if msg_path.exists() else ""
    return SippResult(
        rc, cmd, out, err, errors, stats, _read_counts(workdir, cmd, pid),
        cmd[cmd.index("-sf") + 1], messages,
    )  # fmt: skip


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
    for suffix in ("_errors.log", "_stats.csv", "_messages.log"):
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
        workdir, tag, cmd, rc, out.decode(errors="replace"), err.decode(errors="replace"),
        proc.pid,
    )  # fmt: skip


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
        calls: int | None = None,
        **kwargs: object,
    ) -> None:
        self.workdir = workdir
        self.tag = tag
        self.port = port if port is not None else free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.cmd = sipp_command(
            workdir, scenario_name, target=None, transport=transport, local_port=self.port,
            calls=calls, timeout_s=None, tag=tag, **kwargs,  # type: ignore[arg-type]
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

    def wait(self, timeout: float) -> SippResult:
        """Wait for a UAS started with ``calls=N`` to finish its N calls, then stop it."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.stop()

    def stop(self) -> SippResult:
        rc = stop_process(self.proc, 5)
        self.out.join()
        self.err.join()
        return _read_result(self.workdir, self.tag, self.cmd, rc if rc is not None else -9,
                            self.out.text(), self.err.text(), self.proc.pid)  # fmt: skip


def registered_uas(
    workdir: Path,
    scenario_name: str,
    registrar: tuple[str, int],
    extension: str,
    password: str,
    *,
    transport: str = "udp",
    tag: str = "callee",
    **kwargs: object,
) -> SippServer:
    """A SIPp callee behind a registrar: register.xml from port P, then the UAS on P.

    SIPp cannot both register (a UAC scenario) and answer (a UAS scenario) in
    one run, so the registration is a separate run from the same local port:
    the binding's Contact (``sip:EXT@127.0.0.1:P``) then reaches the UAS.
    """
    port = free_port()
    users = write_users_csv(workdir / f"{tag}_reg.csv", [(extension, password)])
    reg = run_sipp(
        workdir, "register", registrar, transport=transport, users_csv=users,
        local_port=port, tag=f"{tag}_reg",
    )  # fmt: skip
    assert reg.returncode == 0, "callee registration failed\n" + reg.describe()
    return SippServer(workdir, scenario_name, transport=transport, port=port, tag=tag, **kwargs)
