"""The playout-delay floor a lossy subscriber's browser is asked for (sfu.media.playout_delay):
the element's encoding, the policy driven by receiver reports, and a down-track that writes it
into every packet's extension block once its subscriber reports loss — and never before, and
never when the extension was not negotiated."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfu.api import TrackInfo
from sfu.media import aiortc_bridge as bridge
from sfu.media.downtrack import DownTrack, OutgoingStream
from sfu.media.params import URI_MID, Codec, MediaParams
from sfu.media.playout_delay import (
    CALM_REPORTS,
    DETECTION,
    HOLD_REPORTS,
    JITTER_FACTOR,
    MAX_DELAY,
    MAX_FLOOR,
    URI_PLAYOUT_DELAY,
    PlayoutDelayPolicy,
    element,
    parse,
)
from sfu.media.receiver import TrackReceiver
from sfu.media.reports import PublisherClock, ntp_middle, ntp_timestamp
from sfu.rtp.header import parse_extensions
from sfu.rtp.rtcp import ReportBlock

from .media_doubles import RecordingSink, Upstream

H264 = Codec(102, "H264", 90000, fmtp={"packetization-mode": "1", "profile-level-id": "42e01f"})
IDR = b"\x65"
LOSSY = 13  # 5 % of 256
PLAYOUT_ID = 6


def test_the_element_is_two_12_bit_delays_in_10_ms_units() -> None:
    assert element(0.25, 10.0) == bytes([0x01, 0x93, 0xE8])  # 25 and 1000
    assert parse(element(0.25)) == (0.25, MAX_DELAY)
    assert parse(element(0.0)) == (0.0, MAX_DELAY)
    assert parse(element(0.123))[0] == pytest.approx(0.13)  # rounded up
    assert parse(element(99.0, 99.0)) == (40.95, 40.95)  # 12 bits at most
    with pytest.raises(ValueError, match="3 bytes"):
        parse(b"\x00")


def test_the_floor_covers_a_repair_while_the_subscriber_loses_packets() -> None:
    policy = PlayoutDelayPolicy()
    assert not policy.on_report(0, 0.15, 0.02) and policy.floor is None, "no loss: no floor"
    assert not policy.on_report(LOSSY, None, 0.02), "no round trip known yet"
    assert policy.on_report(LOSSY, 0.15, 0.02)
    assert policy.floor == pytest.approx(0.15 + JITTER_FACTOR * 0.02 + DETECTION)
    assert not policy.on_report(LOSSY, 0.16, 0.02), "a small move is not sent"
    assert policy.on_report(LOSSY, 0.30, 0.02) and policy.floor == pytest.approx(0.41)
    for _ in range(HOLD_REPORTS - 1):  # one short round trip does not lower it: the peak holds
        assert not policy.on_report(LOSSY, 0.10, 0.02)
    assert policy.on_report(LOSSY, 0.10, 0.02) and policy.floor == pytest.approx(0.21)
    assert policy.on_report(LOSSY, 2.0, 0.1) and policy.floor == MAX_FLOOR
    for _ in range(CALM_REPORTS - 1):
        assert not policy.on_report(0, 0.15, 0.0)
    assert policy.on_report(0, 0.15, 0.0) and policy.floor == 0.0, "sent back to 0 when calm"
    assert not policy.on_report(0, 0.15, 0.0)


def make(extensions: dict[str, int]) -> tuple[TrackReceiver, DownTrack, RecordingSink]:
    params = MediaParams("0", "video", (H264,), {URI_MID: 1}, local_ssrc=1, local_rtx_ssrc=2)
    track = TrackReceiver(
        TrackInfo("TR_p", "PA_p", "video"), params, Upstream(), 0.5, PublisherClock()
    )
    sub = MediaParams("3", "video", (H264,), extensions, local_ssrc=0xBEEF, local_rtx_ssrc=0xBEF0)
    sink = RecordingSink()
    down_track = DownTrack(track, OutgoingStream(sub, 500, 9000), sink)
    track.down_tracks.append(down_track)
    down_track.set_layer(track.layers[0], 1.0)
    return track, down_track, sink


def report(fraction_lost: int, rtt: float, jitter_s: float, now_wall: float) -> ReportBlock:
    lsr = ntp_middle(ntp_timestamp(now_wall - rtt))
    return ReportBlock(0xBEEF, fraction_lost, 10, 1000, int(jitter_s * 90000), lsr, 0)


def sent_delays(track: TrackReceiver, sink: RecordingSink, seq: int) -> list[bytes | None]:
    """Send one packet (two the first time: probation); the playout elements of what went out."""
    before = len(sink.packets)
    for s in (seq, seq + 1) if seq == 1 else (seq,):
        header = struct.pack("!BBHII", 0x80, 0x80 | H264.payload_type, s, s * 3000, 0x10)
        track.layers[0].on_rtp(header + IDR + b"\xaa" * 50, 1.0)
    return [parse_extensions(p).get(PLAYOUT_ID) for p in sink.packets[before:]]


def test_a_lossy_subscriber_gets_the_floor_in_every_packet() -> None:
    track, down_track, sink = make({URI_MID: 4, URI_PLAYOUT_DELAY: PLAYOUT_ID})
    assert set(sent_delays(track, sink, 1)) == {None}, "no element before any loss"
    down_track.on_report_block(report(LOSSY, 0.2, 0.02, 1000.0), 1000.0)
    floor = 0.2 + JITTER_FACTOR * 0.02 + DETECTION
    (value,) = sent_delays(track, sink, 3)
    assert value is not None
    low, high = parse(value)
    assert low == pytest.approx(floor, abs=0.011) and high == MAX_DELAY
    for _ in range(CALM_REPORTS):
        down_track.on_report_block(report(0, 0.2, 0.0, 1001.0), 1001.0)
    assert sent_delays(track, sink, 4) == [element(0.0)], "back to the browser's own delay"


def test_no_element_where_the_extension_was_not_negotiated() -> None:
    track, down_track, sink = make({URI_MID: 4})
    sent_delays(track, sink, 1)
    down_track.on_report_block(report(LOSSY, 0.2, 0.02, 1000.0), 1000.0)
    assert down_track.playout_delay.floor is None
    assert sent_delays(track, sink, 3) == [None]


@pytest.fixture
def loopback_only() -> Iterator[None]:
    bridge.set_ice_host_addresses(["127.0.0.1"])
    yield
    bridge.set_ice_host_addresses([])


@pytest.mark.parametrize("answered", [True, False])
async def test_offered_on_video_and_kept_where_the_subscriber_answers_it(
    loopback_only: None, answered: bool
) -> None:
    """The server offers the extension on its video m-lines only; aiortc drops extensions it
    does not know from a negotiation, so the bridge keeps it where the answer lists it (as
    Chromium's does: it is among libwebrtc's default video extensions)."""
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        video = bridge.add_send_transceiver(server, "video")
        audio = bridge.add_send_transceiver(server, "audio")
        vp8, opus = Codec(96, "VP8", 90000, rtx_payload_type=97), Codec(111, "opus", 48000, 2)
        offer = await bridge.create_offer(server, {video: vp8, audio: opus})
        sections = {
            m.group(1): section
            for section in offer.split("\r\nm=")[1:]
            if (m := re.search(r"a=mid:(\S+)", section))
        }
        video_section, audio_section = sections[str(video.mid)], sections[str(audio.mid)]
        extmap = re.search(rf"a=extmap:(\d+) {re.escape(URI_PLAYOUT_DELAY)}", video_section)
        assert extmap is not None and URI_PLAYOUT_DELAY not in audio_section
        await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await client.setLocalDescription(await client.createAnswer())
        answer = client.localDescription.sdp
        assert URI_PLAYOUT_DELAY not in answer  # aiortc does not know it
        if answered:  # as Chromium answers: the offered id, in the video section
            line = f"a=mid:{video.mid}\r\n"
            assert line in answer
            answer = answer.replace(line, f"{line}{extmap.group(0)}\r\n", 1)
        await bridge.accept_answer(server, answer)
        negotiated = bridge.media_params(server, video).extensions
        assert (negotiated.get(URI_PLAYOUT_DELAY) == int(extmap.group(1))) is answered
        assert (URI_PLAYOUT_DELAY in negotiated) is answered
        assert URI_PLAYOUT_DELAY not in bridge.media_params(server, audio).extensions
    finally:
        await client.close()
        await server.close()
