"""pyVoIP 1.6.8 softphone in a child process (UDP only).

Parent side: :class:`PyVoipPeer`; child side ``python -m interop.pyvoip_peer
'<json args>'``.  pyVoIP is threaded (a recv loop plus a register timer)
and its ``stop()`` does not always join, so it lives in its own process.

What pyVoIP 1.6.8 sends (see docs/INTEROP.md): Request-URI, From and To
without the registrar's port (``sip:1005@127.0.0.1``), ``Expires: 120``,
and an ``Authorization`` answered without qop (RFC 2069 style) whose
``uri`` is ``sip:<server>;transport=UDP`` -- not the Request-URI.  A
registrar must verify the digest against the ``uri`` parameter and accept
a qop-less answer to a ``qop="auth"`` challenge for pyVoIP to register.

Commands: ``dial`` (extension), ``answer``, ``hangup``, ``dtmf`` (in-band:
writes G.711 DTMF tones into the call's audio), ``tone`` (writes a sine of
``freq`` Hz for ``seconds`` into the call), ``record`` (reads the call's
received audio for ``seconds`` into a 16-bit WAV at ``path``, in a thread;
event ``recorded`` when the file is written), ``quit``.  Events:
``started``, ``status`` (pyVoIP PhoneStatus name), ``registered``,
``incoming_call``, ``call_state``.  No transfer (pyVoIP has no REFER).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from .childpeer import ChildIO, ChildPeer
from .harness import LOOPBACK, free_port, free_port_range, require_module


class PyVoipPeer(ChildPeer):
    module = "interop.pyvoip_peer"

    def __init__(
        self,
        workdir: Path,
        *,
        extension: str,
        password: str,
        registrar: tuple[str, int],
    ) -> None:
        require_module("pyVoIP")
        self.extension = extension
        self.registrar = registrar
        self.sip_port = free_port()
        rtp = free_port_range(16)
        super().__init__(
            workdir,
            f"pyvoip-{extension}",
            {
                "extension": extension,
                "password": password,
                "registrar": list(registrar),
                "port": self.sip_port,
                "rtp": list(rtp),
                "log": str(workdir / "peer.log"),
            },
        )

    def wait_registered(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_event("registered", timeout)

    def dial(self, target: str) -> dict[str, Any]:
        return self.command("dial", number=target)

    def answer(self) -> dict[str, Any]:
        return self.command("answer")

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def send_dtmf(self, digits: str) -> dict[str, Any]:
        return self.command("dtmf", digits=digits)

    def tone(self, freq: float, seconds: float) -> dict[str, Any]:
        return self.command("tone", freq=freq, seconds=seconds)

    def record(self, path: Path, seconds: float) -> dict[str, Any]:
        return self.command("record", path=str(path), seconds=seconds)


# ----------------------------------------------------------------------------
# child
# ----------------------------------------------------------------------------

_DTMF = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}  # fmt: skip


def _dtmf_audio(digits: str, tone_ms: int = 100, gap_ms: int = 100) -> bytes:
    """8-bit unsigned linear audio at 8 kHz (what pyVoIP's write_audio expects)."""
    import math

    out = bytearray()
    for d in digits:
        lo, hi = _DTMF[d.upper()]
        for n in range(8 * tone_ms):
            s = 0.35 * math.sin(2 * math.pi * lo * n / 8000) + 0.35 * math.sin(
                2 * math.pi * hi * n / 8000
            )
            out.append(max(0, min(255, int(128 + 127 * s))))
        out += bytes([128]) * (8 * gap_ms)
    return bytes(out)


def _tone_audio(freq: float, seconds: float) -> bytes:
    """8-bit unsigned linear audio at 8 kHz (pyVoIP's write_audio format)."""
    import math

    return bytes(
        max(0, min(255, int(128 + 0.4 * 127 * math.sin(2 * math.pi * freq * n / 8000))))
        for n in range(int(8000 * seconds))
    )


def _record(call: Any, path: str, seconds: float, io: ChildIO) -> None:
    """Read the call's received audio (8-bit unsigned, 8 kHz) into a 16-bit WAV."""
    import wave

    from pyVoIP.VoIP import CallState

    frames = bytearray()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and call.state == CallState.ANSWERED:
        # blocking read: pyVoIP hands out 160 bytes (20 ms) as they arrive
        frames += call.read_audio(160, True)
    pcm = bytearray()
    for b in frames:
        pcm += int((b - 128) << 8).to_bytes(2, "little", signed=True)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(pcm))
    io.event("recorded", path=path, samples=len(frames))


def child_main(args: dict[str, Any]) -> int:  # pragma: no cover - runs in the child
    import logging

    import pyVoIP
    from pyVoIP.VoIP import CallState, PhoneStatus, VoIPPhone

    logging.basicConfig(filename=args["log"], level=logging.DEBUG)
    pyVoIP.DEBUG = False
    io = ChildIO()
    calls: list[Any] = []

    def on_call(call: Any) -> None:
        calls.append(call)
        io.event("incoming_call", call_id=call.call_id)
        # pyVoIP runs the callback in its own thread and expects it to keep
        # the call alive; park until the call ends.
        while call.state not in (CallState.ENDED,):
            time.sleep(0.05)

    host, port = args["registrar"]
    phone = VoIPPhone(
        host, int(port), args["extension"], args["password"], myIP=LOOPBACK,
        callCallback=on_call, sipPort=int(args["port"]),
        rtpPortLow=int(args["rtp"][0]), rtpPortHigh=int(args["rtp"][1]),
    )  # fmt: skip
    io.event("started", port=args["port"])
    try:
        phone.start()
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        io.event("reg_failed", error=repr(exc))
    last_status = None
    running = True
    while running:
        status = phone.get_status()
        if status != last_status:
            io.event("status", status=status.name)
            if status == PhoneStatus.REGISTERED:
                io.event("registered")
            last_status = status
        for call in calls:
            state = getattr(call, "_interop_state", None)
            if call.state != state:
                call._interop_state = call.state
                io.event("call_state", state=call.state.name, call_id=call.call_id)
        try:
            msg = io.commands.get(timeout=0.05)
        except Exception:  # queue.Empty
            continue
        if msg is None:
            break
        ident, cmd = msg.get("id"), msg.get("cmd")
        try:
            if cmd == "quit":
                running = False
            elif cmd == "dial":
                calls.append(phone.call(str(msg["number"])))
            elif cmd == "answer":
                next(c for c in calls if c.state == CallState.RINGING).answer()
            elif cmd == "hangup":
                next(c for c in reversed(calls) if c.state != CallState.ENDED).hangup()
            elif cmd == "dtmf":
                call = next(c for c in reversed(calls) if c.state == CallState.ANSWERED)
                call.write_audio(_dtmf_audio(str(msg["digits"])))
            elif cmd == "tone":
                call = next(c for c in reversed(calls) if c.state == CallState.ANSWERED)
                call.write_audio(_tone_audio(float(msg["freq"]), float(msg["seconds"])))
            elif cmd == "record":
                import threading

                call = next(c for c in reversed(calls) if c.state == CallState.ANSWERED)
                threading.Thread(
                    target=_record, args=(call, str(msg["path"]), float(msg["seconds"]), io),
                    daemon=True,
                ).start()
            else:
                raise ValueError(f"unknown command {cmd!r}")
            io.reply(ident)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            io.reply(ident, ok=False, error=repr(exc))
    try:
        phone.stop()
    except Exception:  # noqa: BLE001
        pass
    io.event("stopped")
    return 0


if __name__ == "__main__":
    import os

    code = child_main(json.loads(sys.argv[1]))
    sys.stdout.flush()
    os._exit(code)  # pyVoIP may leave non-daemon timer threads behind
