"""Test taps on a client's aiortc connection: watch (and drop) decrypted RTP/RTCP.

Only tests use these; they wrap the client's DTLS transport the way a packet capture would sit on
the wire, after SRTP, so assertions can read real RTCP and impair real RTP.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection

from sfu.rtp import rtcp

RtpFilter = Callable[[int, int, int], bool]  # (ssrc, payload type, seq) -> drop?


@dataclass
class RtpRecord:
    ssrc: int
    payload_type: int
    seq: int
    timestamp: int
    arrival: float  # wall clock
    payload: bytes


@dataclass
class Tap:
    """Packets seen on one connection, with optional loss injected in either direction."""

    rtcp_in: list[tuple[float, rtcp.RtcpPacket]] = field(default_factory=list)
    rtcp_out: list[tuple[float, rtcp.RtcpPacket]] = field(default_factory=list)
    rtp_in: list[RtpRecord] = field(default_factory=list)
    rtp_out: list[RtpRecord] = field(default_factory=list)
    dropped_in: list[RtpRecord] = field(default_factory=list)
    dropped_out: list[RtpRecord] = field(default_factory=list)
    drop_in: RtpFilter | None = None
    drop_out: RtpFilter | None = None

    def rtcp_of(self, kind: type[Any], sent: bool = False) -> list[Any]:
        return [p for _, p in (self.rtcp_out if sent else self.rtcp_in) if isinstance(p, kind)]


def _record(data: bytes) -> RtpRecord:
    _, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    return RtpRecord(ssrc, b1 & 0x7F, seq, ts, time.time(), data)


def install(pc: RTCPeerConnection) -> Tap:
    """Tap ``pc``'s (bundled) DTLS transport; call once it has a transceiver."""
    dtls: Any = pc.getTransceivers()[0].receiver.transport
    tap = Tap()
    handle_rtp, handle_rtcp, send_rtp = (
        dtls._handle_rtp_data,
        dtls._handle_rtcp_data,
        dtls._send_rtp,
    )

    async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
        record = _record(data)
        if tap.drop_in is not None and tap.drop_in(record.ssrc, record.payload_type, record.seq):
            tap.dropped_in.append(record)
            return
        tap.rtp_in.append(record)
        await handle_rtp(data, arrival_time_ms)

    async def on_rtcp(data: bytes) -> None:
        now = time.time()
        with contextlib.suppress(ValueError):
            tap.rtcp_in.extend((now, p) for p in rtcp.parse_compound(data))
        await handle_rtcp(data)

    async def on_send(data: bytes) -> None:
        if len(data) >= 12 and not 192 <= data[1] <= 208:  # RTP, not RTCP
            record = _record(data)
            drop = tap.drop_out
            if drop is not None and drop(record.ssrc, record.payload_type, record.seq):
                tap.dropped_out.append(record)
                return
            tap.rtp_out.append(record)
        elif len(data) >= 8:
            now = time.time()
            with contextlib.suppress(ValueError):
                tap.rtcp_out.extend((now, p) for p in rtcp.parse_compound(data))
        await send_rtp(data)

    dtls._handle_rtp_data = on_rtp
    dtls._handle_rtcp_data = on_rtcp
    dtls._send_rtp = on_send
    return tap
