"""The load generator's only touch of aiortc internals: hooks on a client's DTLS transport.

With max-bundle every m-line of a client shares one ``RTCDtlsTransport``. Three of its methods
are replaced on that instance:

- ``_handle_rtp_data`` (decrypted RTP in): counted by the load client and **not** passed on, so
  aiortc never depacketizes, buffers or decodes what a load client receives;
- ``_send_rtp`` (RTP and RTCP out, before SRTP): outgoing RTP is reported, then sent as before;
- ``_handle_rtcp_data`` (decrypted RTCP in): keyframe requests (PLI, FIR) are reported, then
  aiortc handles the packet as before.

Transport-cc feedback still goes out, as a browser sends it: the client's own tap
(``sfu_client.transport_cc``, installed once a server offer negotiated it, so after these hooks)
wraps the RTP hook and reads each packet's transport-wide sequence number first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.sdp import SessionDescription

from sfu.rtp import rtcp

PacketHandler = Callable[[bytes, float], None]  # (packet, time.perf_counter())


def _is_rtcp(data: bytes) -> bool:
    return len(data) >= 2 and 192 <= data[1] <= 223


def install(
    pc: RTCPeerConnection,
    on_rtp_received: PacketHandler,
    on_rtp_sent: PacketHandler,
    on_keyframe_request: Callable[[], None],
) -> None:
    """Hook every DTLS transport ``pc`` has or creates; call before negotiating."""

    def hook(dtls: Any) -> None:
        send_rtp = dtls._send_rtp
        handle_rtcp = dtls._handle_rtcp_data
        clock = time.perf_counter

        async def received(data: bytes, arrival_time_ms: int) -> None:
            on_rtp_received(data, clock())

        async def send(data: bytes) -> None:
            if not _is_rtcp(data):
                on_rtp_sent(data, clock())
            await send_rtp(data)

        async def received_rtcp(data: bytes) -> None:
            with contextlib.suppress(ValueError):
                if any(isinstance(p, rtcp.Pli | rtcp.Fir) for p in rtcp.parse_compound(data)):
                    on_keyframe_request()
            await handle_rtcp(data)

        dtls._handle_rtp_data = received
        dtls._send_rtp = send
        dtls._handle_rtcp_data = received_rtcp

    existing = {id(t.receiver.transport): t.receiver.transport for t in pc.getTransceivers()}
    for dtls in existing.values():
        hook(dtls)
    # aiortc creates transports in a name-mangled private method; the instance attribute wins
    anyone: Any = pc
    create = anyone._RTCPeerConnection__createDtlsTransport

    def create_hooked() -> Any:
        dtls = create()
        hook(dtls)
        return dtls

    anyone._RTCPeerConnection__createDtlsTransport = create_hooked


def sender_kinds(pc: RTCPeerConnection) -> dict[int, str]:
    """SSRC -> kind of the media this client sends (RTX SSRCs are not included)."""
    return {
        t.sender._ssrc: t.sender.track.kind
        for t in pc.getTransceivers()
        if t.sender is not None and t.sender.track is not None
    }


def ssrc_mids(sdp: str) -> dict[int, str]:
    """SSRC -> mid of every m-line of a (remote) description that lists its SSRCs."""
    result: dict[int, str] = {}
    for media in SessionDescription.parse(sdp).media:
        mid = media.rtp.muxId
        if mid is not None:
            for ssrc in media.ssrc:
                result[ssrc.ssrc] = mid
    return result
