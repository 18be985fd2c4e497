"""sfu_client.transport_cc: a client's transport-cc feedback, from the packets a real server
transport numbers (the C egress) to the feedback that transport matches against what it sent.

A plain aiortc peer connection (the client) and a ServerPeerConnection over 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfu.media import aiortc_bridge as bridge
from sfu.media.params import Codec
from sfu.rtp import rtcp
from sfu.rtp.header import build_extension_block
from sfu.rtp.twcc import TransportFeedback, decode
from sfu_client.transport_cc import TransportCcFeedback

WAIT = 10.0
VP8 = Codec(payload_type=97, name="VP8", clock_rate=90000, rtx_payload_type=98)
PACKET = struct.pack("!BBHII", 0x80, 97, 1, 0, 0x1234) + b"\x42" * 200


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(int(WAIT / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {what} within {WAIT} s")


class Link:
    """The server offers a video m-line, the client answers with transport-cc."""

    def __init__(self) -> None:
        self.client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.server = bridge.ServerPeerConnection()
        self.feedback: list[TransportFeedback] = []
        self.ext_id = 0

    async def connect(self) -> None:
        transceiver = bridge.add_send_transceiver(self.server, "video")
        offer = await bridge.create_offer(self.server, {transceiver: VP8})
        await self.client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        self.ext_id = bridge.accept_transport_cc(self.client)
        await self.client.setLocalDescription(await self.client.createAnswer())
        await bridge.accept_answer(self.server, self.client.localDescription.sdp)
        await _until(lambda: self.transport.connected, "connection")
        self.transport.transport_cc_id = self.ext_id
        self.transport.on_rtcp = self._on_rtcp
        # a lone feedback message is matched on its way in and never reaches on_rtcp
        self.transport.on_transport_feedback = lambda packet, raw, now: self._on_rtcp(packet)

    @property
    def transport(self) -> bridge.MediaTransport:
        transport = self.server.media_transport
        assert transport is not None
        return transport

    @property
    def dtls(self) -> Any:
        return self.client.getTransceivers()[0].receiver.transport

    def _on_rtcp(self, data: bytes) -> None:
        self.feedback += [p for p in rtcp.parse_compound(data) if isinstance(p, TransportFeedback)]

    def send(self, count: int, first_seq: int = 0, *, numbered: bool = True) -> None:
        elements = [(self.ext_id, bytes(2))] if numbered else [(1, b"1")]
        block = build_extension_block(elements)
        for seq in range(first_seq, first_seq + count):
            self.transport.send_rewritten(PACKET, 12, 97, seq, 0, 0x1234, block, -1, b"")

    async def close(self) -> None:
        await self.client.close()
        await self.server.close()


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    bridge.set_ice_host_addresses(["127.0.0.1"])
    pair = Link()
    try:
        await pair.connect()
        yield pair
    finally:
        await pair.close()
        bridge.set_ice_host_addresses([])


async def test_feedback_reports_every_packet_the_server_sent(link: Link) -> None:
    feedback = TransportCcFeedback(lambda data: bridge.send_srtp(link.dtls, data), link.ext_id)
    bridge.tap_rtp(link.dtls, feedback.on_rtp)
    feedback.start()
    try:
        link.send(20)
        await _until(lambda: sum(len(decode(f.fci).packets) for f in link.feedback) >= 20, "fb")
        link.send(5, 20, numbered=False)  # no element: nothing to report
        link.send(10, 25)
        await _until(lambda: sum(len(decode(f.fci).packets) for f in link.feedback) >= 30, "fb")
    finally:
        await feedback.stop()
    packets = [p for f in link.feedback for p in decode(f.fci).packets]
    # the egress numbered the 30 numbered packets 0..29; every one arrived, once
    assert [seq for seq, _ in packets] == list(range(30))
    assert all(arrival is not None for _, arrival in packets)
    assert feedback.sent == len(link.feedback) and feedback.unsent == 0
    assert {f.media_ssrc for f in link.feedback} == {0x1234}
    # the server's matching (C) accepts them: what it sent, received
    link.feedback.clear()
    link.send(8, 35)
    await asyncio.sleep(0.05)
    await feedback.flush()
    await _until(lambda: bool(link.feedback), "feedback")
    (message,) = link.feedback
    summary = link.transport.transport_feedback(message.fci)
    assert summary is not None
    assert (summary.received, summary.lost) == (8, 0)
    assert summary.received_bytes >= 8 * len(PACKET)


async def test_feedback_is_sent_on_a_timer_and_stops(link: Link) -> None:
    feedback = TransportCcFeedback(
        lambda data: bridge.send_srtp(link.dtls, data), link.ext_id, interval=0.05
    )
    bridge.tap_rtp(link.dtls, feedback.on_rtp)
    feedback.start()
    link.send(1)
    await _until(lambda: len(link.feedback) == 1, "the first feedback")
    assert feedback.running
    await feedback.stop()
    assert not feedback.running
    link.send(1, 1)
    await asyncio.sleep(0.2)
    assert len(link.feedback) == 1  # stopped: nothing more


async def test_a_refused_send_is_counted_and_the_timer_keeps_going() -> None:
    sent: list[bytes] = []
    refuse = True

    async def send(data: bytes) -> bool:
        if refuse:
            return False
        sent.append(data)
        return True

    def numbered(value: int) -> bytes:
        block = build_extension_block([(3, struct.pack("!H", value))])
        return bytes([0x90]) + PACKET[1:12] + block + PACKET[12:]

    feedback = TransportCcFeedback(send, 3, interval=0.01)
    feedback.on_rtp(numbered(7), 1.0)
    feedback.start()
    try:
        await _until(lambda: feedback.unsent == 1, "a refused send")
        refuse = False
        feedback.on_rtp(numbered(8), 1.001)
        await _until(lambda: feedback.sent == 1, "a sent one")
    finally:
        await feedback.stop()
    (data,) = sent
    (message,) = rtcp.parse_compound(data)
    assert isinstance(message, TransportFeedback)
    # 7 went in the refused message (a lost feedback: the sender copes), 8 follows 1 ms later
    assert decode(message.fci).packets == [(8, 1000)]
    assert message.media_ssrc == 0x1234
