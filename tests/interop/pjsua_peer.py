"""pjsua2 (PyPI ``pjsua2-python`` 2.15) softphone in a child process.

Parent side: :class:`PjsuaPeer`.  Child side: ``python -m interop.pjsua_peer
'<json args>'`` (started by the parent), which runs the pjsua2 endpoint in
its main thread (``threadCnt = 0``, ``mainThreadOnly``; events are polled
with ``libHandleEvents``), with the null sound device, a UDP or TCP
transport bound to 127.0.0.1 on a port the parent picked, and one account.

Commands: ``register``, ``unregister``, ``dial`` (target URI), ``answer``,
``hangup``, ``dtmf`` (digits, RFC 4733), ``transfer`` (target URI),
``hold`` (re-INVITE a=sendonly), ``resume`` (re-INVITE with the unhold
flag: a=sendrecv), ``play`` (a WAV, looped, sent into the call instead of the
null capture device), ``record`` (what the call receives, into a WAV; a new
``record`` closes the previous file), ``stop_record``, ``quit``.  Events:
``started``, ``reg_state`` (code, expires, active), ``incoming_call``,
``call_state`` (state, code), ``media_state`` (per audio stream: status
ACTIVE/LOCAL_HOLD/REMOTE_HOLD/NONE, direction, remote RTP address).

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

    def hold(self) -> dict[str, Any]:
        return self.command("hold")

    def resume(self) -> dict[str, Any]:
        return self.command("resume")

    def play(self, wav: Path) -> dict[str, Any]:
        return self.command("play", path=str(wav))

    def record(self, wav: Path) -> dict[str, Any]:
        return self.command("record", path=str(wav))

    def stop_record(self) -> dict[str, Any]:
        return self.command("stop_record")

    def media_states(self) -> list[dict[str, Any]]:
        return self.events("media_state")


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
    # G.711 only (what switch relays; no transcoding): pjsua2 would pick speex/16k first.
    for codec in ep.codecEnum2():
        name = codec.codecId.lower()
        keep = name.startswith(("pcmu/", "pcma/"))
        ep.codecSetPriority(codec.codecId, 200 if name.startswith("pcmu/") else 150 if keep else 0)

    tcfg = pj.TransportConfig()
    tcfg.port = int(args["port"])
    tcfg.boundAddress = LOOPBACK
    tcfg.publicAddress = LOOPBACK
    kind = pj.PJSIP_TRANSPORT_TCP if args["transport"] == "tcp" else pj.PJSIP_TRANSPORT_UDP
    transport_id = ep.transportCreate(kind, tcfg)
    ep.libStart()

    calls: list[Any] = []
    # what to connect to a call's audio whenever its media (re)starts
    media: dict[str, Any] = {"player": None, "recorder": None}
    status_names = {
        pj.PJSUA_CALL_MEDIA_NONE: "NONE",
        pj.PJSUA_CALL_MEDIA_ACTIVE: "ACTIVE",
        pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "LOCAL_HOLD",
        pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "REMOTE_HOLD",
        pj.PJSUA_CALL_MEDIA_ERROR: "ERROR",
    }

    def connect_media(call: Any) -> None:
        ci = call.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status in (
                pj.PJSUA_CALL_MEDIA_NONE, pj.PJSUA_CALL_MEDIA_ERROR
            ):
                continue
            aud = call.getAudioMedia(i)
            source = media["player"] or ep.audDevManager().getCaptureDevMedia()
            source.startTransmit(aud)
            aud.startTransmit(ep.audDevManager().getPlaybackDevMedia())
            if media["recorder"] is not None:
                aud.startTransmit(media["recorder"])

    class PeerCall(pj.Call):  # type: ignore[misc]
        def onCallState(self, prm: Any) -> None:
            ci = self.getInfo()
            io.event("call_state", state=ci.stateText, code=ci.lastStatusCode,
                     call_id=ci.callIdString, remote=ci.remoteUri)  # fmt: skip

        def onCallMediaState(self, prm: Any) -> None:
            ci = self.getInfo()
            streams = []
            for i, mi in enumerate(ci.media):
                if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                    continue
                entry: dict[str, Any] = {
                    "index": i, "status": status_names.get(mi.status, str(mi.status)),
                    "dir": int(mi.dir),
                }  # fmt: skip
                try:
                    si = self.getStreamInfo(i)
                    entry["remote_rtp"] = si.remoteRtpAddress
                    entry["codec"] = si.codecName
                except Exception as exc:  # noqa: BLE001 - no stream while inactive
                    entry["remote_rtp"] = None
                    entry["error"] = repr(exc)
                streams.append(entry)
            connect_media(self)
            io.event("media_state", streams=streams)

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
                elif cmd == "hold":
                    current().setHold(pj.CallOpParam(True))
                elif cmd == "resume":
                    prm = pj.CallOpParam(True)
                    prm.opt.flag = pj.PJSUA_CALL_UNHOLD
                    current().reinvite(prm)
                elif cmd == "play":
                    player = pj.AudioMediaPlayer()
                    player.createPlayer(msg["path"], 0)  # 0 = loop
                    media["player"] = player
                    for call in calls:
                        if call.isActive() and call.hasMedia():
                            connect_media(call)
                elif cmd in ("record", "stop_record"):
                    old = media["recorder"]
                    media["recorder"] = None
                    if old is not None:
                        for call in calls:
                            if call.isActive() and call.hasMedia():
                                try:
                                    call.getAudioMedia(-1).stopTransmit(old)
                                except Exception:  # noqa: BLE001
                                    pass
                        del old  # closes (and finalises) the WAV file
                    if cmd == "record":
                        rec = pj.AudioMediaRecorder()
                        rec.createRecorder(msg["path"])
                        media["recorder"] = rec
                        for call in calls:
                            if call.isActive() and call.hasMedia():
                                call.getAudioMedia(-1).startTransmit(rec)
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                io.reply(ident)
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                io.reply(ident, ok=False, error=repr(exc))

    # Orderly teardown: recorder/player, calls, then the account, then the library.
    media["recorder"] = media["player"] = None
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
