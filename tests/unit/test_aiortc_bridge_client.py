"""Guards on the aiortc internals the client side of sfu/media/aiortc_bridge.py relies on
(the sections "client side: simulcast publishing for sfu_client" and "client side:
transport-wide congestion control for sfu_client").

A plain aiortc peer connection (the client) talks to a ServerPeerConnection over 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc import rtcpeerconnection as aiortc_rtcpeerconnection
from aiortc import sdp as aiortc_sdp
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import TimestampMapper
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtpPacket

from sfu.media import aiortc_bridge as bridge
from sfu.media.params import URI_TRANSPORT_CC, Codec
from sfu.rtp.header import build_extension_block
from sfu.rtp.twcc import transport_sequence

WAIT = 10.0
RR = bytes([0x80, 201, 0, 1, 0, 0, 0, 1])  # an empty receiver report


@pytest.fixture(autouse=True)
def loopback_only() -> object:
    bridge.set_ice_host_addresses(["127.0.0.1"])
    yield
    bridge.set_ice_host_addresses([])


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(int(WAIT / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)  # aiortc has no event for these states
    raise AssertionError(f"no {what} within {WAIT} s")


class Peers:
    def __init__(self) -> None:
        self.client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.server = bridge.ServerPeerConnection()
        self.started: list[tuple[str, str]] = []
        self.stopped = 0
        self.rtp: list[bytes] = []
        self.server.on_media_transport = lambda t: setattr(
            t, "on_rtp", lambda data, now: self.rtp.append(data)
        )
        self.transceiver = bridge.add_external_send_transceiver(
            self.client, VideoStreamTrack(), self._started, self._stopped
        )

    def _started(self, mid: str, cname: str) -> None:
        self.started.append((mid, cname))

    async def _stopped(self) -> None:
        self.stopped += 1

    @property
    def dtls(self) -> RTCDtlsTransport:
        return self.transceiver.sender.transport

    async def negotiate(self) -> None:
        await self.client.setLocalDescription(await self.client.createOffer())
        answer = await bridge.accept_offer(self.server, self.client.localDescription.sdp)
        await self.client.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def connect(self) -> None:
        await self.negotiate()
        await _until(lambda: bool(self.started), "sender start")

    async def close(self) -> None:
        await self.client.close()
        await self.server.close()


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    pair = Peers()
    try:
        yield pair
    finally:
        await pair.close()


def test_private_names_still_exist() -> None:
    # the peer connection builds its senders by this module-level name
    module: Any = aiortc_rtcpeerconnection
    assert module.RTCRtpSender is RTCRtpSender
    for name in ("_send_rtp", "_handle_rtcp_data", "_handle_rtp_data"):
        assert asyncio.iscoroutinefunction(getattr(RTCDtlsTransport, name)), name
    # accept_transport_cc reads the applied remote description, parsed
    assert callable(getattr(RTCPeerConnection, "_RTCPeerConnection__remoteDescription", None))
    for name in ("send", "stop"):
        assert asyncio.iscoroutinefunction(getattr(RTCRtpSender, name)), name


async def test_the_sender_aiortc_builds_is_ours_and_sends_nothing(peers: Peers) -> None:
    sender: Any = peers.transceiver.sender
    assert type(sender) is bridge._ExternalSender
    module: Any = aiortc_rtcpeerconnection
    assert module.RTCRtpSender is RTCRtpSender  # restored
    assert sender.track is not None and sender.track.kind == "video"
    await peers.connect()
    # aiortc's send(parameters): the negotiated mid and the connection's RTCP cname, once
    ((mid, cname),) = peers.started
    assert mid == peers.transceiver.mid == "0" and cname
    # aiortc's own RTP and RTCP tasks were never made
    private: Any = sender
    assert private._RTCRtpSender__rtp_task is None
    assert private._RTCRtpSender__rtcp_task is None
    await peers.negotiate()  # a renegotiation calls send() again: still one start
    await peers.client.close()
    assert peers.stopped == 1 and len(peers.started) == 1
    assert peers.rtp == []  # nothing from the track: our owner sends


async def test_send_srtp_protects_for_the_peer_and_reports_a_closed_transport(
    peers: Peers,
) -> None:
    packet = struct.pack("!BBHII", 0x80, 0x80 | 97, 9, 1234, 0xABCD) + b"\x10" + b"\x42" * 200
    assert not await bridge.send_srtp(peers.dtls, packet)  # not connected yet: dropped
    await peers.connect()
    assert await bridge.send_srtp(peers.dtls, packet)
    await _until(lambda: bool(peers.rtp), "RTP at the server")
    assert peers.rtp == [packet]
    # a wrapper on the instance (as the load client installs) is honoured
    seen: list[bytes] = []
    private: Any = peers.dtls
    send_rtp = private._send_rtp

    async def counting(data: bytes) -> None:
        seen.append(data)
        await send_rtp(data)

    private._send_rtp = counting
    assert await bridge.send_srtp(peers.dtls, packet)
    assert seen == [packet]


async def test_tap_sees_rtcp_before_aiortc_and_a_failing_tap_harms_nothing(peers: Peers) -> None:
    await peers.connect()
    private: Any = peers.dtls
    handled: list[bytes] = []
    handle = private._handle_rtcp_data

    async def aiortc_handles(data: bytes) -> None:
        handled.append(data)
        await handle(data)

    private._handle_rtcp_data = aiortc_handles  # what aiortc's receive loop calls
    tapped: list[bytes] = []

    def failing(data: bytes) -> None:
        raise RuntimeError("a bug")

    untap_failing = bridge.tap_rtcp(peers.dtls, failing)
    untap = bridge.tap_rtcp(peers.dtls, tapped.append)
    transport = peers.server.media_transport
    assert transport is not None
    transport.send_rtcp(RR)
    await _until(lambda: bool(handled), "RTCP handled by aiortc")
    assert tapped == [RR] and handled == [RR]
    assert peers.dtls.state == "connected"
    untap()
    untap_failing()
    transport.send_rtcp(RR)
    await _until(lambda: len(handled) == 2, "more RTCP")
    assert tapped == [RR]


def test_aiortc_reads_past_rid_and_simulcast_lines() -> None:
    """The client reads those lines of the server's answer itself; aiortc must not choke."""
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 97\r\n"
        "c=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtpmap:97 VP8/90000\r\n"
        "a=rid:q recv\r\na=rid:h recv\r\na=simulcast:recv q;h\r\n"
    )
    text = str(aiortc_sdp.SessionDescription.parse(sdp))
    assert "a=rid" not in text and "a=simulcast" not in text


VP8 = Codec(payload_type=97, name="VP8", clock_rate=90000, rtx_payload_type=98)


def _extmaps_and_feedback(sdp: str) -> dict[str, tuple[list[str], list[str]]]:
    """mid -> (transport-cc extmap lines, transport-cc rtcp-fb lines) of a description."""
    result: dict[str, tuple[list[str], list[str]]] = {}
    for section in sdp.split("m=")[1:]:
        lines = section.splitlines()
        mid = next(line[6:] for line in lines if line.startswith("a=mid:"))
        extmaps = [
            line for line in lines if line.startswith("a=extmap:") and URI_TRANSPORT_CC in line
        ]
        feedback = [line for line in lines if line.endswith(" transport-cc")]
        result[mid] = (extmaps, feedback)
    return result


async def _server_offers_a_track(peers: Peers, *, offer_on_all: bool = False) -> tuple[int, str]:
    """The server offers one more (sending) video m-line; the client answers keeping
    transport-cc. ``offer_on_all``: the offer also has the extension on the m-line the client
    sends on. Returns the extension id and the client's answer."""
    transceiver = bridge.add_send_transceiver(peers.server, "video")
    offer = await bridge.create_offer(peers.server, {transceiver: VP8})
    if offer_on_all:
        extmap = next(line for line in offer.split("\r\n") if URI_TRANSPORT_CC in line)
        offer = offer.replace("a=mid:0\r\n", f"a=mid:0\r\n{extmap}\r\n", 1)
    await peers.client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    ext_id = bridge.accept_transport_cc(peers.client)
    await peers.client.setLocalDescription(await peers.client.createAnswer())
    answer = peers.client.localDescription.sdp
    await bridge.accept_answer(peers.server, answer)
    return ext_id, answer


async def test_transport_cc_is_answered_where_the_server_sends_only(peers: Peers) -> None:
    await peers.connect()
    ext_id, answer = await _server_offers_a_track(peers, offer_on_all=True)
    offered = _extmaps_and_feedback(peers.server.localDescription.sdp)
    answered = _extmaps_and_feedback(answer)
    assert ext_id > 0
    assert offered["1"][0] == [f"a=extmap:{ext_id} {URI_TRANSPORT_CC}"]
    assert answered["1"][0] == [f"a=extmap:{ext_id} {URI_TRANSPORT_CC}"]
    assert answered["1"][1] == ["a=rtcp-fb:97 transport-cc"]
    # the client's own sending m-line: nothing (its aiortc sender numbers no packet)
    assert answered["0"] == ([], [])


async def test_without_accept_transport_cc_aiortc_answers_none(peers: Peers) -> None:
    """What accept_transport_cc works around: should aiortc learn transport-cc, drop it."""
    await peers.connect()
    transceiver = bridge.add_send_transceiver(peers.server, "video")
    offer = await bridge.create_offer(peers.server, {transceiver: VP8})
    assert URI_TRANSPORT_CC in offer
    await peers.client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    await peers.client.setLocalDescription(await peers.client.createAnswer())
    assert "transport-cc" not in peers.client.localDescription.sdp
    assert "transport-wide-cc" not in peers.client.localDescription.sdp


async def test_tap_rtp_sees_each_packet_with_its_arrival_before_aiortc(peers: Peers) -> None:
    await peers.connect()
    ext_id, _ = await _server_offers_a_track(peers)
    transport = peers.server.media_transport
    assert transport is not None
    private: Any = peers.dtls
    handled: list[bytes] = []
    handle = private._handle_rtp_data

    async def aiortc_handles(data: bytes, arrival_time_ms: int) -> None:
        handled.append(data)
        await handle(data, arrival_time_ms)

    private._handle_rtp_data = aiortc_handles  # what aiortc's receive loop calls
    tapped: list[tuple[bytes, float]] = []

    def failing(data: bytes, arrival: float) -> None:
        raise RuntimeError("a bug")

    untap_failing = bridge.tap_rtp(peers.dtls, failing)
    untap = bridge.tap_rtp(peers.dtls, lambda data, arrival: tapped.append((data, arrival)))
    transport.transport_cc_id = ext_id
    block = build_extension_block([(ext_id, bytes(2))])
    packet = struct.pack("!BBHII", 0x80, 97, 1, 0, 0x1234) + b"\x42" * 100
    before = time.monotonic()
    for seq in range(3):
        transport.send_rewritten(packet, 12, 97, seq, 0, 0x1234, block, -1, b"")
    await _until(lambda: len(handled) == 3, "RTP handled by aiortc")
    assert [data for data, _ in tapped] == handled
    assert all(before <= arrival <= time.monotonic() for _, arrival in tapped)
    # the egress numbered them 0, 1, 2 in the element the client reads
    assert [transport_sequence(data, ext_id) for data, _ in tapped] == [0, 1, 2]
    assert peers.dtls.state == "connected"
    untap()
    untap_failing()
    transport.send_rewritten(packet, 12, 97, 3, 0, 0x1234, block, -1, b"")
    await _until(lambda: len(handled) == 4, "more RTP")
    assert len(tapped) == 3


# --- recovering from a hole at a keyframe ---

KEYFRAME_START = b"\x10" + b"\x50\x01\x00\x9d\x01\x2a" + struct.pack("<HH", 160, 90) + bytes(20)
DELTA = b"\x10" + b"\x51\x01\x00" + bytes(20)  # P=1: an interframe
MORE = b"\x00" + bytes(20)  # a later packet of the same frame (S=0)


def rtp_packet(seq: int, timestamp: int, payload: bytes) -> RtpPacket:
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=timestamp, payload=payload)
    cast(Any, packet)._data = payload  # what aiortc's depayloader would have set
    return packet


def test_a_keyframe_past_a_hole_is_decoded_at_once() -> None:
    """aiortc's buffer would hold the keyframe behind the lost packet 3 until 512 more came."""
    buffer = bridge._RecoveringJitterBuffer(lambda pt: "VP8" if pt == 96 else None)
    frames = []
    for seq, ts, payload in (
        (1, 1000, DELTA),
        (2, 1000, MORE),
        (4, 2000, MORE),  # 3 (the start of the 2000 frame) is lost for good
        (5, 3000, KEYFRAME_START),
        (6, 3000, MORE),
        (7, 4000, DELTA),
    ):
        _, frame = buffer.add(rtp_packet(seq, ts, payload))
        if frame is not None:
            frames.append(frame.timestamp)
    assert frames == [3000], "the keyframe, as soon as its frame is complete"
    assert buffer.skipped == 3


def _frames_out(
    buffer: Any,
    packets: list[tuple[int, int, bytes]],
    clock: Clock | None = None,
    step: float = 0.0,
) -> list[int]:
    """The timestamps of the frames ``buffer`` hands over (returned, or to its sink)."""
    out: list[int] = []
    buffer._sink = lambda frame, pt: out.append(frame.timestamp)
    for seq, ts, payload in packets:
        _, frame = buffer.add(rtp_packet(seq, ts, payload))
        if frame is not None:
            out.append(frame.timestamp)
        if clock is not None:
            clock.now += step
    return out


# a hole at 3 (the 2000 frame's start), a keyframe at 5, and the packets after it
AROUND_A_HOLE = [(1, 1000, DELTA), (2, 1000, MORE), (4, 2000, MORE), (5, 3000, KEYFRAME_START),
                 (6, 3000, MORE), (7, 4000, DELTA), (8, 5000, DELTA)]  # fmt: skip


def test_a_keyframe_waits_for_a_hole_still_asked_for_and_nothing_is_skipped() -> None:
    """Skipping at once dropped, at every layer switch on a lossy link, the frames a
    retransmission filled moments later."""
    clock = Clock()
    nacks = bridge._RetryingNackGenerator(clock)
    buffer = bridge._RecoveringJitterBuffer(lambda pt: "VP8", nacks, clock)
    nacks.pending[3] = [1, clock.now, clock.now]  # asked for
    repaired = [*AROUND_A_HOLE[:5], (3, 2000, DELTA), *AROUND_A_HOLE[5:]]
    out = _frames_out(buffer, repaired, clock, bridge.KEYFRAME_PATIENCE / 10)
    assert out == [1000, 2000, 3000, 4000] and buffer.skipped == 0


def test_a_keyframe_skips_a_hole_not_repaired_within_its_patience() -> None:
    clock = Clock()
    nacks = bridge._RetryingNackGenerator(clock)
    buffer = bridge._RecoveringJitterBuffer(lambda pt: "VP8", nacks, clock)
    nacks.pending[3] = [1, clock.now, clock.now]
    out = _frames_out(buffer, AROUND_A_HOLE, clock, bridge.KEYFRAME_PATIENCE / 2 + 0.001)
    # waited at 5 and 6; at 7 (patience spent) the keyframe, then all that is complete
    assert out == [3000, 4000] and buffer.skipped == 3


def test_a_keyframe_of_another_size_waits_for_the_left_layer_s_repair() -> None:
    """The SFU switched layers: the hole holds back the left layer's last frames, which the
    server resends for a while after the switch (sfu.media.downtrack's PREVIOUS_LAYER_REPAIR).
    Skipping them at once dropped those frames: a freeze of their length at a switch on a lossy
    link, seen in tests/e2e/test_loss_jitter.py's start-up."""
    bigger = KEYFRAME_START.replace(struct.pack("<HH", 160, 90), struct.pack("<HH", 320, 180))
    clock = Clock()
    nacks = bridge._RetryingNackGenerator(clock)
    buffer = bridge._RecoveringJitterBuffer(lambda pt: "VP8", nacks, clock)
    nacks.pending[3] = [1, clock.now, clock.now]  # asked for, and still awaited
    switch = [(1, 1000, KEYFRAME_START), (2, 1000, MORE), (4, 2000, MORE), (5, 3000, bigger),
              (6, 3000, MORE), (3, 2000, DELTA), (7, 4000, DELTA), (8, 5000, DELTA)]  # fmt: skip
    out = _frames_out(buffer, switch, clock, bridge.KEYFRAME_PATIENCE / 10)
    assert out == [1000, 2000, 3000, 4000] and buffer.skipped == 0
    # not repaired within its patience: the new layer's keyframe then
    clock = Clock()
    nacks = bridge._RetryingNackGenerator(clock)
    buffer = bridge._RecoveringJitterBuffer(lambda pt: "VP8", nacks, clock)
    nacks.pending[3] = [1, clock.now, clock.now]
    unrepaired = [p for p in switch if p[0] != 3]
    out = _frames_out(buffer, unrepaired, clock, bridge.KEYFRAME_PATIENCE / 2 + 0.001)
    assert out == [3000, 4000] and buffer.skipped == 3  # as for a hole of one layer


def test_a_keyframe_skips_at_once_a_hole_given_up() -> None:
    clock = Clock()
    nacks = bridge._RetryingNackGenerator(clock)
    buffer = bridge._RecoveringJitterBuffer(lambda pt: "VP8", nacks, clock)
    assert _frames_out(buffer, AROUND_A_HOLE[:6]) == [3000]  # 3 was never (or no longer) asked
    assert buffer.skipped == 3


def test_a_late_retransmission_of_a_keyframe_already_passed_is_ignored() -> None:
    """It is older than the buffer's origin: skipping "to" it removed 65,000 packets, and the
    AssertionError ended aiortc's receive loop, silently (aiortc logs to a NullHandler)."""
    clock = Clock()
    nacks = bridge._RetryingNackGenerator(clock)
    buffer = bridge._RecoveringJitterBuffer(lambda pt: "VP8", nacks, clock)
    out = _frames_out(buffer, [(1, 1000, DELTA), (2, 2000, DELTA), (4, 2000, MORE)])
    assert out == [1000]  # the origin is now 2; 3 is missing
    assert _frames_out(buffer, [(1, 1000, KEYFRAME_START)]) == []  # late, and old
    assert _frames_out(buffer, [(5, 3000, DELTA), (6, 4000, DELTA), (3, 2000, MORE)]) == [
        2000,
        3000,
    ]


def test_a_failing_buffer_empties_and_asks_for_a_keyframe(caplog: pytest.LogCaptureFixture) -> None:
    calls = iter(range(1000))

    def broken(payload_type: int) -> str | None:
        if next(calls) == 1:  # a bug that hits one packet, the second
            raise RuntimeError("a bug")
        return "VP8"

    buffer = bridge._RecoveringJitterBuffer(broken)
    buffer.add(rtp_packet(1, 1000, DELTA))
    assert buffer.add(rtp_packet(3, 2000, KEYFRAME_START)) == (True, None)  # a PLI, no frame
    assert "jitter buffer failed" in caplog.text
    assert buffer.add(rtp_packet(4, 2000, MORE)) == (False, None)  # starts again from there


def test_no_hole_nothing_skipped() -> None:
    buffer = bridge._RecoveringJitterBuffer(lambda pt: "VP8")
    frames = []
    for seq, ts, payload in ((1, 1000, KEYFRAME_START), (2, 1000, MORE), (3, 2000, DELTA)):
        _, frame = buffer.add(rtp_packet(seq, ts, payload))
        if frame is not None:
            frames.append(frame.timestamp)
    assert frames == [1000] and buffer.skipped == 0


async def test_video_receivers_get_the_recovering_buffer() -> None:
    """Pins aiortc's receiver: a name-mangled JitterBuffer, NackGenerator and codec table per
    receiver."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        assert bridge.recover_at_keyframes(pc) == 1
        assert bridge.recover_at_keyframes(pc) == 0, "once"
        video: Any = pc.getTransceivers()[0].receiver
        assert isinstance(video._RTCRtpReceiver__jitter_buffer, bridge._RecoveringJitterBuffer)
        assert isinstance(video._RTCRtpReceiver__nack_generator, bridge._RetryingNackGenerator)
        assert isinstance(video._RTCRtpReceiver__codecs, dict)
    finally:
        await pc.close()


async def test_frames_held_behind_a_repaired_hole_reach_the_decoder_together() -> None:
    """aiortc's buffer hands over one frame per packet: after a repair the frames held behind
    it came one per later packet, and on a layer of one packet per frame never caught up.
    Pins the receiver's timestamp mapper, decoder queue and thread that the sink feeds."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        bridge.recover_at_keyframes(pc)
        receiver: Any = pc.getTransceivers()[0].receiver
        assert isinstance(receiver._RTCRtpReceiver__decoder_queue, queue.Queue)
        assert isinstance(receiver._RTCRtpReceiver__timestamp_mapper, TimestampMapper)
        assert receiver._RTCRtpReceiver__decoder_thread is None  # until receive()
        receiver._RTCRtpReceiver__decoder_thread = object()  # as if receiving
        vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000, payloadType=96)
        receiver._RTCRtpReceiver__codecs[96] = vp8
        buffer = receiver._RTCRtpReceiver__jitter_buffer
        decoder_queue = receiver._RTCRtpReceiver__decoder_queue
        mapper = receiver._RTCRtpReceiver__timestamp_mapper
        handled = []
        # one packet per frame; 2 (the 2000 frame) is lost, then its retransmission arrives
        for seq in (1, 3, 4, 5, 2):
            _, frame = buffer.add(rtp_packet(seq, seq * 1000, DELTA))
            if frame is not None:  # what aiortc's receiver does with it
                frame.timestamp = mapper.map(frame.timestamp)
                decoder_queue.put((vp8, frame))
            handled.append(decoder_queue.qsize())
        assert handled == [0, 0, 0, 0, 4], "all four complete frames as the hole is filled"
        queued = [decoder_queue.get_nowait() for _ in range(4)]
        assert all(codec is vp8 for codec, _ in queued)
        assert [f.timestamp for _, f in queued] == [0, 1000, 2000, 3000]  # mapped, in order
        assert buffer.released == 3
    finally:
        await pc.close()


# --- asking again for what is still missing, then for a keyframe ---


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_missing_packet_is_asked_for_again_then_given_up_for_a_keyframe() -> None:
    clock = Clock()
    nacks = bridge._RetryingNackGenerator(clock)
    asked = []
    seq = 1
    assert not nacks.add(rtp_packet(seq, 0, MORE))
    seq += 2  # 2 is lost, and so is every retransmission of it
    for _ in range(32):  # 2 s of packets every 62.5 ms
        if nacks.add(rtp_packet(seq, 0, MORE)):
            asked.append((clock.now - 100.0, sorted(nacks.missing)))
        seq += 1
        clock.now += 0.0625
    # a new gap, then at the first packet at least NACK_RETRY (0.1 s) after the last ask
    assert [a for a, _ in asked] == [0.0, 0.125, 0.25, 0.375, 0.5]
    assert all(missing == [2] for _, missing in asked)
    assert nacks.given_up == 1 and nacks.keyframe_wanted and not nacks.pending


def test_a_packet_that_arrives_is_not_asked_for_again() -> None:
    clock = Clock()
    nacks = bridge._RetryingNackGenerator(clock)
    nacks.add(rtp_packet(1, 0, MORE))
    assert nacks.add(rtp_packet(3, 0, MORE))  # 2 missing: asked for
    clock.now += 0.05
    assert not nacks.add(rtp_packet(2, 0, MORE))  # the retransmission
    clock.now += 0.2
    assert not nacks.add(rtp_packet(4, 0, MORE))
    assert nacks.given_up == 0 and not nacks.keyframe_wanted


STEP = 1 / 64  # s between packets: exact in binary, so the schedules below are too


def _asks(nacks: Any, clock: Clock, arrivals: list[tuple[float, int]]) -> dict[int, list[float]]:
    """Feed ``arrivals`` ((time, seq), in order); when each seq was asked for."""
    asked: dict[int, list[float]] = {}
    for at, seq in arrivals:
        clock.now = 128.0 + at
        if nacks.add(rtp_packet(seq, 0, MORE)):
            for missing in nacks.missing:
                asked.setdefault(missing, []).append(at)
    return asked


def test_a_new_gap_does_not_use_up_the_retries_of_a_packet_already_asked_for() -> None:
    """Every new gap used to count as a retry of every packet still missing: on a lossy
    640x360 layer (a gap every ~80 ms) a packet was given up 0.17 s after it went missing —
    before its retransmission could arrive — and the frames behind it were skipped (seen:
    a 460 ms freeze at 5 % loss and 50 ms jitter)."""
    clock = Clock()
    nacks = bridge._RetryingNackGenerator(clock)
    # a packet every STEP; 2 is lost for good, and from 5 on every other packet, once
    arrivals = [(0.0, 1)] + [(STEP * (s - 2), s) for s in range(3, 30) if s < 5 or s % 2]
    asked = _asks(nacks, clock, arrivals)
    gaps = [b - a for a, b in itertools.pairwise(asked[2])]
    assert len(asked[2]) == 4, "asked once a retry interval (NACK_RETRY), not at each gap"
    assert all(bridge.NACK_RETRY <= gap < bridge.NACK_RETRY + 2 * STEP for gap in gaps)
    assert nacks.given_up == 0 and not nacks.keyframe_wanted


def test_a_packet_is_given_up_only_after_round_trips_of_its_repairs() -> None:
    """On a slow link NACK_TRIES asks come within two round trips: the packet waits for the
    repairs GIVE_UP_RTTS round trips (timed from earlier repairs) before it is given up."""
    rtt = 20 * STEP  # 0.31 s
    arrivals = [(0.0, 1)] + [(STEP * i, 2 + i) for i in range(1, 21)]  # 2 missing: asked for
    arrivals.append((STEP * 21, 2))  # its retransmission, a round trip after the first NACK
    arrivals += [(STEP * i, 2 + i) for i in range(21, 200) if i != 50]  # 52 lost for good
    lost_at = STEP * 51  # when 53 arrived: 52 is missing and asked for
    patience_over = lost_at + bridge.GIVE_UP_RTTS * rtt
    before = [a for a in arrivals if a[0] < patience_over]
    clock = Clock()
    nacks = bridge._RetryingNackGenerator(clock)
    asked = _asks(nacks, clock, before)
    assert nacks.srtt == pytest.approx(rtt)
    assert len(asked[52]) == bridge.NACK_TRIES, "asked for NACK_TRIES times..."
    assert nacks.given_up == 0 and 52 in nacks.pending, "...and still awaited"
    _asks(nacks, clock, arrivals[len(before) :])
    assert nacks.given_up == 1 and nacks.keyframe_wanted, "given up after the round trips"


def test_given_up_packets_that_hold_a_frame_back_ask_for_a_keyframe_now_and_then() -> None:
    clock = Clock()
    nacks = bridge._RetryingNackGenerator(clock)
    buffer = bridge._RecoveringJitterBuffer(lambda pt: "VP8", nacks, clock)
    buffer.add(rtp_packet(1, 1000, DELTA))
    buffer.add(rtp_packet(3, 1000, MORE))  # 2 lost: the 1000 frame is held back
    nacks.keyframe_wanted = True  # as after NACK_TRIES unanswered NACKs
    plis = [buffer.add(rtp_packet(4, 2000, DELTA))[0]]
    nacks.keyframe_wanted = True
    clock.now += bridge.KEYFRAME_RETRY / 2
    plis.append(buffer.add(rtp_packet(5, 2000, MORE))[0])
    nacks.keyframe_wanted = True
    clock.now += bridge.KEYFRAME_RETRY
    plis.append(buffer.add(rtp_packet(6, 3000, DELTA))[0])
    assert plis == [True, False, True], "a PLI, none within KEYFRAME_RETRY, then another"
    assert not nacks.keyframe_wanted


# --- ICE servers from joined, and the selected pair ---


async def test_ice_servers_set_before_the_first_transceiver_reach_its_gatherer() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        turn = RTCIceServer("turn:127.0.0.1:3479?transport=tcp", "1700000000:PA_1", "pass")
        bridge.set_ice_servers(pc, [turn])
        pc.addTransceiver("video", "recvonly")
        # aiortc hands the configuration's servers to aioice when it makes the transport
        connection: Any = pc.getTransceivers()[0].receiver.transport.transport._connection
        assert connection.turn_server == ("127.0.0.1", 3479)
        assert connection.turn_transport == "tcp"
        assert (connection.turn_username, connection.turn_password) == ("1700000000:PA_1", "pass")
        with pytest.raises(ValueError, match="has its transport already"):
            bridge.set_ice_servers(pc, [])
    finally:
        await pc.close()


async def test_the_selected_pair_types_are_read_from_the_nominated_pair(peers: Peers) -> None:
    assert bridge.selected_candidate_types(peers.client) is None
    await peers.connect()
    assert bridge.selected_candidate_types(peers.client) == ("host", "host")
