"""Malformed RTP and RTCP from a participant harm no one; valid packets keep flowing.

Drives a MediaConnection's ingress directly (no network): a publisher's receiver fans out to a
down-track whose sink records what would be sent.
"""

from __future__ import annotations

import random
import struct
import time

from sfu.config import MediaConfig
from sfu.media.connection import MediaConnection
from sfu.media.downtrack import DownTrack, OutgoingStream
from sfu.rtp import rtcp
from sfu.rtp.header import parse_extensions, payload_bounds

from .media_doubles import (
    PUBLISHER_SSRC,
    RecordingSink,
    publisher_receiver,
    subscriber_params,
    vp8_packet,
)


async def test_garbage_is_dropped_and_valid_packets_still_forwarded() -> None:
    failures: list[str] = []
    connection = MediaConnection(MediaConfig(), failures.append, lambda: None)
    receiver = publisher_receiver(connection)
    sink = RecordingSink()
    down_track = DownTrack(receiver, OutgoingStream(subscriber_params(), 500, 9000), sink)
    receiver.add_down_track(down_track)
    connection.add_down_track(down_track)
    try:
        rng = random.Random(1)
        for i in range(20000):
            size = rng.choice((0, 1, 2, 11, 12, 13, 16, 40, 200, 1500))
            data = bytearray(rng.randbytes(size))
            if size >= 12 and i % 2:  # a plausible header over random contents
                data[0] = 0x80 | (data[0] & 0x3F)
                struct.pack_into("!I", data, 8, PUBLISHER_SSRC)
            connection._on_rtp(bytes(data), time.monotonic())
            if size >= 4 and i % 3 == 0:
                data[1] = rng.choice((200, 201, 205, 206))
            connection._on_rtcp(bytes(data))
        assert failures == []

        sink.packets.clear()
        connection._on_rtp(vp8_packet(40000, keyframe=True), time.monotonic())
        connection._on_rtp(vp8_packet(40001, keyframe=False), time.monotonic())
        assert len(sink.packets) == 2
        first, second = sink.packets
        _, b1, seq, _, ssrc = struct.unpack_from("!BBHII", first)
        assert (b1 & 0x7F, ssrc) == (100, 0xBEEF)  # the subscriber's payload type and SSRC
        assert struct.unpack_from("!H", second, 2)[0] == (seq + 1) & 0xFFFF
        extensions = parse_extensions(first)
        assert extensions[4] == b"3" and len(extensions[5]) == 3  # mid, abs-send-time
        start, _ = payload_bounds(first)
        assert first[start:] == vp8_packet(40000, keyframe=True)[12:]  # payload untouched

        # the subscriber NACKs the second packet: resent as RTX (RFC 4588) with its seq inside
        nack = rtcp.Nack(sender_ssrc=7, media_ssrc=0xBEEF, lost=[(seq + 1) & 0xFFFF])
        connection._on_rtcp(rtcp.serialize([nack]))
        assert len(sink.packets) == 3
        rtx = sink.packets[2]
        assert rtx[1] & 0x7F == 101 and struct.unpack_from("!I", rtx, 8)[0] == 0xBEF0
        rtx_start, _ = payload_bounds(rtx)
        assert struct.unpack_from("!H", rtx, rtx_start)[0] == (seq + 1) & 0xFFFF
    finally:
        await connection.close()


async def test_sender_report_counts_payload_octets_without_padding() -> None:
    """RFC 3550 §6.4.1: the octet count leaves out headers and padding; the marker stays."""
    connection = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    receiver = publisher_receiver(connection)
    sink = RecordingSink()
    stream = OutgoingStream(subscriber_params(), 500, 9000)
    receiver.add_down_track(DownTrack(receiver, stream, sink))
    try:
        keyframe = bytearray(vp8_packet(100, keyframe=True))  # 104 payload bytes
        keyframe[1] &= 0x7F  # not the last packet of its frame: no marker
        padded = bytearray(vp8_packet(101, keyframe=False) + b"\x00\x00\x03")
        padded[0] |= 0x20  # the marker stays set: the last packet of its frame
        connection._on_rtp(bytes(keyframe), time.monotonic())
        connection._on_rtp(bytes(padded), time.monotonic())
        assert (stream.packets_sent, stream.octets_sent) == (2, 2 * 104)
        assert [p[1] & 0x80 for p in sink.packets] == [0, 0x80]
        assert sink.packets[1][0] & 0x20 and sink.packets[1][-3:] == b"\x00\x00\x03"
    finally:
        await connection.close()
