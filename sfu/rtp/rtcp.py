"""RTCP packets an SFU reads and writes, as dataclasses with ``parse_body()`` and ``__bytes__``.

- RFC 3550 §6.4-6.6: sender report (SR), receiver report (RR), source description (SDES, CNAME
  only), goodbye (BYE).
- RFC 4585 §6.2.1: generic NACK (RTPFB, FMT 1); §6.3.1: picture loss indication (PSFB, FMT 1).
- RFC 5104 §4.3.1: full intra request (PSFB, FMT 4).
- draft-alvestrand-rmcat-remb-03: receiver estimated maximum bitrate (PSFB, FMT 15, "REMB").
- draft-holmer-rmcat-transport-wide-cc-extensions-01: transport-cc feedback (RTPFB, FMT 15,
  :class:`sfu.rtp.twcc.TransportFeedback`).

Anything else (XR, APP, other feedback) is kept as :class:`UnknownRtcp`.
Malformed input raises ``ValueError`` saying what is wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from sfu.rtp.twcc import FMT as RTPFB_TRANSPORT_CC
from sfu.rtp.twcc import TransportFeedback

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = 200, 201, 202, 203, 204, 205, 206, 207
RTPFB_NACK = 1
PSFB_PLI, PSFB_FIR, PSFB_AFB = 1, 4, 15
SDES_CNAME = 1
REMB_ID = b"REMB"

_HEADER = struct.Struct("!BBH")  # V/P/count, packet type, length in words minus one
_U32 = struct.Struct("!I")
_SSRC_PAIR = struct.Struct("!II")
_SR_INFO = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packet count, octet count
_BLOCK = struct.Struct("!IIIIII")
_FIR_ENTRY = struct.Struct("!IB3x")
_NACK_ITEM = struct.Struct("!HH")


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError(f"RTCP body of {len(body)} bytes is not a multiple of 32 bits")
    return _HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


def _need(body: bytes, size: int, what: str) -> None:
    if len(body) < size:
        raise ValueError(f"RTCP {what} truncated: needs {size} bytes, got {len(body)}")


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """RFC 3550 §6.4.1 report block; ``packets_lost`` is 24-bit signed."""

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    def __bytes__(self) -> bytes:
        if not -0x800000 <= self.packets_lost <= 0x7FFFFF:
            raise ValueError(f"cumulative packets lost {self.packets_lost} exceeds 24 bits")
        lost = (self.fraction_lost << 24) | (self.packets_lost & 0xFFFFFF)
        return _BLOCK.pack(self.ssrc, lost, self.highest_sequence, self.jitter, self.lsr, self.dlsr)

    @classmethod
    def parse(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        packets_lost = lost & 0xFFFFFF
        if packets_lost & 0x800000:
            packets_lost -= 0x1000000
        return cls(ssrc, lost >> 24, packets_lost, highest, jitter, lsr, dlsr)


def _parse_blocks(body: bytes, pos: int, count: int, what: str) -> list[ReportBlock]:
    _need(body, pos + 24 * count, f"{what} with {count} report blocks")
    return [ReportBlock.parse(body, pos + 24 * i) for i in range(count)]


@dataclass(frozen=True, slots=True)
class SenderReport:
    """RFC 3550 §6.4.1; ``ntp_timestamp`` is the full 64-bit NTP time."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock]

    def __bytes__(self) -> bytes:
        info = _SR_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        return _packet(SR, len(self.reports), info + b"".join(map(bytes, self.reports)))

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> SenderReport:
        _need(body, 24, "SR")
        ssrc, ntp, rtp, packets, octets = _SR_INFO.unpack_from(body)
        return cls(ssrc, ntp, rtp, packets, octets, _parse_blocks(body, 24, count, "SR"))


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RFC 3550 §6.4.2."""

    ssrc: int
    reports: list[ReportBlock]

    def __bytes__(self) -> bytes:
        body = _U32.pack(self.ssrc) + b"".join(map(bytes, self.reports))
        return _packet(RR, len(self.reports), body)

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> ReceiverReport:
        _need(body, 4, "RR")
        return cls(_U32.unpack_from(body)[0], _parse_blocks(body, 4, count, "RR"))


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """RFC 3550 §6.5: one (SSRC, CNAME) per chunk; CNAME is "" in a chunk that has none."""

    chunks: list[tuple[int, str]]

    def __bytes__(self) -> bytes:
        parts = []
        for ssrc, cname in self.chunks:
            text = cname.encode()
            if len(text) > 255:
                raise ValueError(f"CNAME of {len(text)} bytes exceeds 255")
            chunk = _U32.pack(ssrc) + bytes((SDES_CNAME, len(text))) + text
            # the item list ends with one to four null octets, up to the next 32-bit boundary
            parts.append(chunk + bytes(4 - len(chunk) % 4))
        return _packet(SDES, len(self.chunks), b"".join(parts))

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> SourceDescription:
        chunks = []
        pos = 0
        for _ in range(count):
            _need(body, pos + 4, "SDES chunk")
            ssrc = _U32.unpack_from(body, pos)[0]
            pos += 4
            cname = ""
            while True:
                _need(body, pos + 1, "SDES item list")
                item = body[pos]
                if item == 0:  # end of items: skip to the next 32-bit boundary
                    pos = (pos + 4) & ~3
                    break
                _need(body, pos + 2, "SDES item")
                end = pos + 2 + body[pos + 1]
                _need(body, end, "SDES item")
                if item == SDES_CNAME:
                    cname = body[pos + 2 : end].decode(errors="replace")
                pos = end
            chunks.append((ssrc, cname))
        return cls(chunks)


@dataclass(frozen=True, slots=True)
class Bye:
    """RFC 3550 §6.6 (a reason text is ignored when parsing and never written)."""

    ssrcs: list[int]

    def __bytes__(self) -> bytes:
        return _packet(BYE, len(self.ssrcs), b"".join(map(_U32.pack, self.ssrcs)))

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> Bye:
        _need(body, 4 * count, f"BYE with {count} sources")
        return cls([_U32.unpack_from(body, 4 * i)[0] for i in range(count)])


def _nack_items(lost: Sequence[int]) -> list[tuple[int, int]]:
    """(PID, BLP) pairs covering ``lost``, starting after the largest circular gap so that a run
    crossing 65535 -> 0 stays in one item."""
    seqs = sorted({s & 0xFFFF for s in lost})
    if not seqs:
        return []
    gaps = [(seqs[0] + 0x10000 - seqs[-1], 0)]
    gaps += [(seqs[i] - seqs[i - 1], i) for i in range(1, len(seqs))]
    first = max(gaps)[1]
    items: list[tuple[int, int]] = []
    pid, blp = seqs[first], 0
    for seq in seqs[first + 1 :] + seqs[:first]:
        delta = (seq - pid) & 0xFFFF
        if delta <= 16:
            blp |= 1 << (delta - 1)
        else:
            items.append((pid, blp))
            pid, blp = seq, 0
    items.append((pid, blp))
    return items


@dataclass(frozen=True, slots=True)
class Nack:
    """RFC 4585 §6.2.1 generic NACK; ``lost`` are 16-bit sequence numbers."""

    sender_ssrc: int
    media_ssrc: int
    lost: list[int]

    def __bytes__(self) -> bytes:
        fci = b"".join(_NACK_ITEM.pack(pid, blp) for pid, blp in _nack_items(self.lost))
        return _packet(RTPFB, RTPFB_NACK, _SSRC_PAIR.pack(self.sender_ssrc, self.media_ssrc) + fci)

    @classmethod
    def parse_body(cls, fmt: int, body: bytes) -> Nack:
        _need(body, 8, "NACK")
        sender, media = _SSRC_PAIR.unpack_from(body)
        lost = []
        for pos in range(8, len(body) - 3, 4):
            pid, blp = _NACK_ITEM.unpack_from(body, pos)
            lost.append(pid)
            lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
        return cls(sender, media, lost)


@dataclass(frozen=True, slots=True)
class Pli:
    """RFC 4585 §6.3.1 picture loss indication."""

    sender_ssrc: int
    media_ssrc: int

    def __bytes__(self) -> bytes:
        return _packet(PSFB, PSFB_PLI, _SSRC_PAIR.pack(self.sender_ssrc, self.media_ssrc))

    @classmethod
    def parse_body(cls, fmt: int, body: bytes) -> Pli:
        _need(body, 8, "PLI")
        return cls(*_SSRC_PAIR.unpack_from(body))


@dataclass(frozen=True, slots=True)
class Fir:
    """RFC 5104 §4.3.1 full intra request: (media SSRC, command sequence number) entries."""

    sender_ssrc: int
    entries: list[tuple[int, int]]

    def __bytes__(self) -> bytes:
        fci = b"".join(_FIR_ENTRY.pack(ssrc, seq & 0xFF) for ssrc, seq in self.entries)
        return _packet(PSFB, PSFB_FIR, _SSRC_PAIR.pack(self.sender_ssrc, 0) + fci)

    @classmethod
    def parse_body(cls, fmt: int, body: bytes) -> Fir:
        _need(body, 8, "FIR")
        if len(body) % 8:
            raise ValueError(f"RTCP FIR entries truncated: {len(body) - 8} bytes, not 8 each")
        entries = [_FIR_ENTRY.unpack_from(body, pos) for pos in range(8, len(body), 8)]
        return cls(_U32.unpack_from(body)[0], [(ssrc, seq) for ssrc, seq in entries])


@dataclass(frozen=True, slots=True)
class Remb:
    """draft-alvestrand-rmcat-remb: bitrate as 6-bit exponent and 18-bit mantissa (rounded down)."""

    sender_ssrc: int
    bitrate: int
    ssrcs: list[int]

    def __bytes__(self) -> bytes:
        exponent = max(self.bitrate.bit_length() - 18, 0)
        if exponent > 63:
            raise ValueError(f"REMB bitrate {self.bitrate} exceeds the 6.18 encoding")
        mantissa = self.bitrate >> exponent
        body = b"".join(
            (
                _SSRC_PAIR.pack(self.sender_ssrc, 0),
                REMB_ID,
                _U32.pack((len(self.ssrcs) << 24) | (exponent << 18) | mantissa),
                *map(_U32.pack, self.ssrcs),
            )
        )
        return _packet(PSFB, PSFB_AFB, body)

    @classmethod
    def parse_body(cls, fmt: int, body: bytes) -> Remb:
        _need(body, 16, "REMB")
        sender = _U32.unpack_from(body)[0]
        word = _U32.unpack_from(body, 12)[0]
        count = word >> 24
        _need(body, 16 + 4 * count, f"REMB with {count} SSRCs")
        ssrcs = [_U32.unpack_from(body, 16 + 4 * i)[0] for i in range(count)]
        return cls(sender, (word & 0x3FFFF) << ((word >> 18) & 0x3F), ssrcs)


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    """Any other RTCP packet, kept verbatim: ``body`` follows the 4-byte header, without padding."""

    packet_type: int
    fmt: int
    body: bytes

    def __bytes__(self) -> bytes:
        return _packet(self.packet_type, self.fmt, self.body)


RtcpPacket: TypeAlias = (
    SenderReport
    | ReceiverReport
    | SourceDescription
    | Bye
    | Nack
    | Pli
    | Fir
    | Remb
    | TransportFeedback
    | UnknownRtcp
)


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == SR:
        return SenderReport.parse_body(count, body)
    if packet_type == RR:
        return ReceiverReport.parse_body(count, body)
    if packet_type == SDES:
        return SourceDescription.parse_body(count, body)
    if packet_type == BYE:
        return Bye.parse_body(count, body)
    if packet_type == RTPFB and count == RTPFB_NACK:
        return Nack.parse_body(count, body)
    if packet_type == RTPFB and count == RTPFB_TRANSPORT_CC:
        return TransportFeedback.parse_body(count, body)
    if packet_type == PSFB:
        if count == PSFB_PLI:
            return Pli.parse_body(count, body)
        if count == PSFB_FIR:
            return Fir.parse_body(count, body)
        if count == PSFB_AFB and body[8:12] == REMB_ID:
            return Remb.parse_body(count, body)
    return UnknownRtcp(packet_type, count, body)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Every packet of a compound RTCP packet, in order."""
    packets: list[RtcpPacket] = []
    pos = 0
    size = len(data)
    while pos < size:
        if pos + 4 > size:
            raise ValueError(f"RTCP header truncated at byte {pos}: {size - pos} bytes left")
        first, packet_type, words = _HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise ValueError(f"RTCP version {first >> 6} at byte {pos}, expected 2")
        end = pos + 4 + 4 * words
        if end > size:
            raise ValueError(
                f"RTCP packet type {packet_type} at byte {pos} truncated: "
                f"length says {end - pos} bytes, {size - pos} left"
            )
        body = data[pos + 4 : end]
        if first & 0x20:
            padding = body[-1] if body else 0
            if not 0 < padding <= len(body):
                raise ValueError(f"RTCP padding count {padding} at byte {pos} is invalid")
            body = body[:-padding]
        packets.append(_parse_one(packet_type, first & 0x1F, body))
        pos = end
    return packets


def serialize(packets: Sequence[RtcpPacket]) -> bytes:
    """A compound packet made of ``packets`` in order."""
    return b"".join(map(bytes, packets))
