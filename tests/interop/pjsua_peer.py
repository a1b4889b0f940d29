"""pjsua2 (PyPI ``pjsua2-python`` 2.15) softphone in a child process.

Parent side: :class:`PjsuaPeer`.  Child side: ``python -m interop.pjsua_peer
'<json args>'`` (started by the parent), which runs the pjsua2 endpoint in
its main thread (``threadCnt = 0``, ``mainThreadOnly``; events are polled
with ``libHandleEvents``), with the null sound device, a UDP or TCP
transport bound to 127.0.0.1 on a port the parent picked, and one account.

Commands: ``register``, ``unregister``, ``dial`` (target URI), ``answer``,
``hangup``, ``dtmf`` (digits, RFC 4733), ``transfer`` (target URI),
``quit``.  Events: ``started``, ``reg_state`` (code, expires, active),
``incoming_call``, ``call_state`` (state, code), ``media_state``.

Shutdown order matters: Call objects are deleted, then the account
shut down and deleted, before ``libDestroy()``, or pjsua2 crashes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .childpeer import ChildIO, ChildPeer
from .harness import LOOPBACK, free_port, require_module


class PjsuaPeer(ChildPeer):
    module = "interop.pjsua_peer"

    def __init__(
        self,
        workdir: Path,
        *,
        extension: str,
        password: str,
        registrar: tuple[str, int],
        transport: str = "udp",
        expires: int = 600,
        register: bool = True,
    ) -> None:
        require_module("pjsua2")
        self.extension = extension
        self.registrar = registrar
        self.sip_port = free_port()
        super().__init__(
            workdir,
            f"pjsua2-{extension}",
            {
                "extension": extension,
                "password": password,
                "registrar": list(registrar),
                "transport": transport.lower(),
                "port": self.sip_port,
                "rtp_port": free_port(),
                "expires": expires,
                "register": register,
                "log": str(workdir / "peer.log"),
            },
        )

    def wait_registered(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait_message(
            lambda m: m.get("event") == "reg_state" and m.get("code") == 200 and m.get("active"),
            timeout,
            "reg_state 200",
        )

    def uri(self, target: str) -> str:
        if target.startswith("sip:"):
            return target
        host, port = self.registrar
        return f"sip:{target}@{host}:{port}"

    def dial(self, target: str) -> dict[str, Any]:
        return self.command("dial", uri=self.uri(target))

    def answer(self, code: int = 200) -> dict[str, Any]:
        return self.command("answer", code=code)

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def send_dtmf(self, digits: str) -> dict[str, Any]:
        return self.command("dtmf", digits=digits)

    def transfer(self, target: str) -> dict[str, Any]:
        return self.command("transfer", uri=self.uri(target))

    def unregister(self) -> dict[str, Any]:
        return self.command("unregister")


# ----------------------------------------------------------------------------
# child
# ----------------------------------------------------------------------------


def child_main(args: dict[str, Any]) -> int:  # pragma: no cover - runs in the child
    import pjsua2 as pj

    io = ChildIO()
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "pjsua2-interop"
    cfg.logConfig.level = 5
    cfg.logConfig.consoleLevel = 0
    cfg.logConfig.filename = args["log"]
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()

    tcfg = pj.TransportConfig()
    tcfg.port = int(args["port"])
    tcfg.boundAddress = LOOPBACK
    tcfg.publicAddress = LOOPBACK
    kind = pj.PJSIP_TRANSPORT_TCP if args["transport"] == "tcp" else pj.PJSIP_TRANSPORT_UDP
    transport_id = ep.transportCreate(kind, tcfg)
    ep.libStart()

    calls: list[Any] = []

    class PeerCall(pj.Call):  # type: ignore[misc]
        def onCallState(self, prm: Any) -> None:
            ci = self.getInfo()
            io.event("call_state", state=ci.stateText, code=ci.lastStatusCode,
                     call_id=ci.callIdString, remote=ci.remoteUri)  # fmt: skip

        def onCallMediaState(self, prm: Any) -> None:
            ci = self.getInfo()
            for i, mi in enumerate(ci.media):
                if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                    aud = self.getAudioMedia(i)
                    ep.audDevManager().getCaptureDevMedia().startTransmit(aud)
                    aud.startTransmit(ep.audDevManager().getPlaybackDevMedia())
            io.event("media_state")

        def onDtmfDigit(self, prm: Any) -> None:
            io.event("dtmf", digit=prm.digit)

        def onCallTransferStatus(self, prm: Any) -> None:
            io.event("transfer_status", code=prm.statusCode, final=prm.finalNotify)

    class PeerAccount(pj.Account):  # type: ignore[misc]
        def onRegState(self, prm: Any) -> None:
            info = self.getInfo()
            io.event("reg_state", code=prm.code, reason=prm.reason,
                     expires=prm.expiration, active=info.regIsActive)  # fmt: skip

        def onIncomingCall(self, prm: Any) -> None:
            call = PeerCall(self, prm.callId)
            calls.append(call)
            ci = call.getInfo()
            io.event("incoming_call", remote=ci.remoteUri, call_id=ci.callIdString)

    host, port = args["registrar"]
    suffix = ";transport=tcp" if args["transport"] == "tcp" else ""
    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{args['extension']}@{host}:{port}"
    acfg.regConfig.registrarUri = f"sip:{host}:{port}{suffix}"
    acfg.regConfig.timeoutSec = int(args["expires"])
    acfg.regConfig.registerOnAdd = bool(args["register"])
    acfg.regConfig.retryIntervalSec = 0
    acfg.sipConfig.transportId = transport_id
    acfg.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", args["extension"], 0, args["password"])
    )
    acfg.mediaConfig.transportConfig.boundAddress = LOOPBACK
    acfg.mediaConfig.transportConfig.publicAddress = LOOPBACK
    acfg.mediaConfig.transportConfig.port = int(args["rtp_port"])
    acfg.natConfig.iceEnabled = False
    acfg.natConfig.sipOutboundUse = 0
    acc = PeerAccount()
    acc.create(acfg)
    io.event("started", port=args["port"])

    def current() -> Any:
        live = [c for c in calls if c.isActive()]
        if not live:
            raise RuntimeError("no active call")
        return live[-1]

    running = True
    while running:
        ep.libHandleEvents(20)
        while not io.commands.empty():
            msg = io.commands.get()
            if msg is None:
                running = False
                break
            ident, cmd = msg.get("id"), msg.get("cmd")
            try:
                if cmd == "quit":
                    running = False
                elif cmd == "register":
                    acc.setRegistration(True)
                elif cmd == "unregister":
                    acc.setRegistration(False)
                elif cmd == "dial":
                    call = PeerCall(acc)
                    calls.append(call)
                    call.makeCall(msg["uri"], pj.CallOpParam(True))
                elif cmd == "answer":
                    prm = pj.CallOpParam()
                    prm.statusCode = int(msg.get("code", 200))
                    current().answer(prm)
                elif cmd == "hangup":
                    current().hangup(pj.CallOpParam())
                elif cmd == "dtmf":
                    current().dialDtmf(msg["digits"])
                elif cmd == "transfer":
                    current().xfer(msg["uri"], pj.CallOpParam(True))
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                io.reply(ident)
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                io.reply(ident, ok=False, error=repr(exc))

    # Orderly teardown: calls first, then the account, then the library.
    for call in calls:
        try:
            if call.isActive():
                call.hangup(pj.CallOpParam())
        except Exception:  # noqa: BLE001
            pass
    for _ in range(10):
        ep.libHandleEvents(20)
    calls.clear()
    try:
        acc.shutdown()
    except Exception:  # noqa: BLE001
        pass
    del acc
    for _ in range(10):
        ep.libHandleEvents(20)
    ep.libDestroy()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(json.loads(sys.argv[1])))
