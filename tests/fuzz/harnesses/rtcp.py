"""Compound RTCP (sfu/rtp/rtcp.py): any bytes parse or raise ValueError; what parses writes
back out to the same packets (RFC 3550 §6, RFC 4585 §6, RFC 5104 §4.3.1, REMB)."""

from __future__ import annotations

from sfu.rtp import rtcp
from sfu.rtp.twcc import TransportFeedback, encode


def _same(packet: rtcp.RtcpPacket, again: rtcp.RtcpPacket) -> bool:
    if isinstance(packet, rtcp.Nack) and isinstance(again, rtcp.Nack):
        # written as (PID, BLP) items: the same numbers, in the writer's order
        return (packet.sender_ssrc, packet.media_ssrc, set(packet.lost)) == (
            again.sender_ssrc,
            again.media_ssrc,
            set(again.lost),
        )
    return packet == again


def check_compound(data: bytes) -> list[rtcp.RtcpPacket]:
    try:
        packets = rtcp.parse_compound(data)
    except ValueError:
        return []
    for packet in packets:
        try:
            written = bytes(packet)
        except ValueError:
            # what cannot be written as parsed: a CNAME longer than 255 bytes once its
            # undecodable bytes became U+FFFD, or an unknown packet's unpadded odd-sized body
            assert isinstance(packet, rtcp.SourceDescription | rtcp.UnknownRtcp), packet
            continue
        again = rtcp.parse_compound(written)
        assert len(again) == 1 and _same(packet, again[0]), (packet, again)
    return packets


def run(data: bytes) -> None:
    check_compound(data)


def seeds() -> list[bytes]:
    block = rtcp.ReportBlock(0x1234, 12, -3, 70000, 40, 0x11112222, 655)
    sr = rtcp.SenderReport(0x55, 0x1122334455667788, 9000, 10, 2000, [block])
    sdes = rtcp.SourceDescription([(0x55, "abc"), (0x66, "")])
    nack = rtcp.Nack(1, 0x55, [1, 2, 5, 30, 65535, 0])
    fci = encode(100, 3, [1000, None, 1001, 900, None, None, 5000])
    packets: list[rtcp.RtcpPacket] = [
        sr,
        rtcp.ReceiverReport(0x66, [block, block]),
        sdes,
        rtcp.Bye([1, 2]),
        nack,
        rtcp.Pli(1, 0x55),
        rtcp.Fir(1, [(0x55, 3), (0x66, 4)]),
        rtcp.Remb(1, 1_500_000, [0x55, 0x66]),
        TransportFeedback(1, 0x55, fci),
        rtcp.UnknownRtcp(rtcp.XR, 0, bytes(8)),
    ]
    padded = bytearray(bytes(rtcp.Pli(1, 2)) + bytes(3) + b"\x04")
    padded[0] |= 0x20
    padded[3] += 1
    return [rtcp.serialize(packets), *map(bytes, packets), bytes(padded)]
