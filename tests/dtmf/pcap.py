"""A tiny libpcap reader: the RTP packets of Ethernet/IPv4/UDP captures (test helper, no scapy)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class RtpPacket:
    time: float
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def read_rtp(path: Path) -> list[RtpPacket]:
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file")
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_header = {1: 14, 113: 16, 101: 0}[linktype]  # Ethernet, Linux SLL, raw IP
    packets = []
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[pos : pos + 16])
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        ip = frame[link_header:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        rtp = ip[(ip[0] & 0x0F) * 4 + 8 :]
        if len(rtp) < 12 or rtp[0] >> 6 != 2:
            continue
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", rtp[:12])
        start = 12 + 4 * (b0 & 0x0F)
        end = len(rtp)
        if b0 & 0x20:  # padding
            end -= rtp[-1]
        packets.append(
            RtpPacket(
                time=sec + frac / (1e9 if nano else 1e6),
                marker=bool(b1 & 0x80),
                payload_type=b1 & 0x7F,
                sequence=seq,
                timestamp=ts,
                ssrc=ssrc,
                payload=rtp[start:end],
            )
        )
    return packets
