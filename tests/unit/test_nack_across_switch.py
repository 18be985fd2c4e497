"""NACKs for packets of the layer a down-track just left (RFC 4585 §6.2.1, RFC 4588).

A packet lost shortly before a layer switch would otherwise never be repaired: the subscriber's
picture then waits at that hole until the new layer's keyframe gets past it. For
PREVIOUS_LAYER_REPAIR after a switch the down-track still resends packets of the layer it left,
with the sequence number, timestamp and VP8 picture id they were first sent with.
"""

from __future__ import annotations

import struct

import pytest

from sfu.api import TrackInfo
from sfu.media.downtrack import PREVIOUS_LAYER_REPAIR, OutgoingStream
from sfu.media.params import URI_MID, MediaParams
from sfu.media.receiver import TrackReceiver
from sfu.media.reports import PublisherClock
from sfu.media.vp8_downtrack import Vp8DownTrack
from sfu.rtp.header import payload_bounds
from sfu.rtp.vp8 import parse_descriptor

from .media_doubles import VP8, RecordingSink, Upstream, subscriber_params

SSRC = {"q": 0x10, "f": 0x20}
SIZE = {"q": (320, 180), "f": (1280, 720)}


class Clock:
    now = 10.0

    def __call__(self) -> float:
        return self.now


def packet(rid: str, seq: int, picture_id: int, keyframe: bool) -> bytes:
    header = struct.pack("!BBHII", 0x80, VP8.payload_type, seq, seq * 3000, SSRC[rid])
    descriptor = bytes([0x90, 0x80]) + struct.pack("!H", 0x8000 | picture_id)
    if keyframe:  # frame tag with P clear, start code, size (RFC 6386 §9.1)
        payload = b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", *SIZE[rid])
    else:
        payload = b"\x01\x00\x00"
    return header + descriptor + payload + b"\xaa" * 60


def make() -> tuple[TrackReceiver, Vp8DownTrack, RecordingSink, Clock]:
    params = MediaParams(
        mid="0", kind="video", codecs=(VP8,), extensions={URI_MID: 1}, local_ssrc=1,
        local_rtx_ssrc=2, rids=("q", "f"),
    )  # fmt: skip
    track = TrackReceiver(
        TrackInfo("TR_v", "PA_v", "video"), params, Upstream(), 0.5, PublisherClock()
    )
    for layer in track.layers:
        assert layer.rid is not None
        layer.ssrc = SSRC[layer.rid]
    clock, sink = Clock(), RecordingSink()
    down_track = Vp8DownTrack(track, OutgoingStream(subscriber_params(), 500, 9000), sink, clock)
    track.down_tracks.append(down_track)
    return track, down_track, sink, clock


def fields(data: bytes) -> tuple[int, int, int]:
    """(ssrc, seq, timestamp) of a sent packet; an RTX one gives the original's seq."""
    seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
    return ssrc, seq, ts


def picture_id(data: bytes) -> int:
    start, end = payload_bounds(data)
    if data[1] & 0x7F == 101:  # RTX: the original sequence number first (RFC 4588 §4)
        start += 2
    descriptor = parse_descriptor(data, start, end)
    assert descriptor is not None
    return descriptor.picture_id


def original_seq(data: bytes) -> int:
    start, _ = payload_bounds(data)
    value: int = struct.unpack_from("!H", data, start)[0]
    return value


@pytest.mark.parametrize("at_once", [False, True], ids=["at-the-keyframe", "cut-at-once"])
def test_a_packet_of_the_layer_left_is_resent_as_it_was_sent_for_a_while(at_once: bool) -> None:
    """Left at the target's keyframe, or cut at once for a congested link (the target's
    keyframe comes later): what was sent of the old layer is still repaired."""
    track, down_track, sink, clock = make()
    q, f = track.layers
    seq = {"q": 100, "f": 40000}
    pid = {"q": 7, "f": 3000}

    def send(rid: str, keyframe: bool = False) -> None:
        layer = q if rid == "q" else f
        layer.on_rtp(packet(rid, seq[rid], pid[rid], keyframe), clock.now)
        seq[rid] += 1
        pid[rid] += 1

    down_track.set_layer(q, clock.now)
    for _ in range(2):  # probation (RFC 3550 A.1) takes the second packet of each layer
        send("q", keyframe=True)
        send("f")
    for _ in range(5):
        send("q")
    sent_on_q = list(sink.packets)
    down_track.set_layer(f, clock.now, at_once=at_once)
    send("f", keyframe=True)  # the switch
    assert down_track.layer is f and down_track.stream.layer_switches == 1
    send("f")
    lost = sent_on_q[-2]  # the subscriber lost one of q's last packets
    _, lost_seq, lost_ts = fields(lost)

    before = len(sink.packets)
    down_track.on_nack([lost_seq])
    (resent,) = sink.packets[before:]
    assert original_seq(resent) == lost_seq
    assert fields(resent)[2] == lost_ts  # the timestamp it was sent with
    assert picture_id(resent) == picture_id(lost)  # and the picture id
    assert down_track.stream.retransmissions == 1

    clock.now += PREVIOUS_LAYER_REPAIR + 0.01
    before = len(sink.packets)
    down_track.on_nack([lost_seq])
    assert sink.packets[before:] == []  # too late: the new layer's keyframe repaired it


def test_packets_of_the_current_layer_are_resent_as_before() -> None:
    track, down_track, sink, clock = make()
    q, _ = track.layers
    down_track.set_layer(q, clock.now)
    for i in range(6):
        q.on_rtp(packet("q", 100 + i, 7 + i, keyframe=i < 2), clock.now)
    lost = sink.packets[-3]
    before = len(sink.packets)
    down_track.on_nack([fields(lost)[1]])
    (resent,) = sink.packets[before:]
    assert original_seq(resent) == fields(lost)[1] and fields(resent)[2] == fields(lost)[2]
    assert picture_id(resent) == picture_id(lost)
