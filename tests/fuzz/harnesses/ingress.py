"""A hostile publisher and a hostile subscriber on the real media path: RTP into a published
VP8 track (sfu.media.connection -> layer.LayerReceiver: RFC 3550 §A.1 validation, loss tracking,
packet history, keyframe detection) and RTCP back from a subscriber of it (NACK, PLI, FIR, REMB,
receiver reports, transport-cc) to the down-track that forwards it (munger, RTX, RFC 4588).

Whatever either sends, nothing raises, and the subscriber gets a clean stream: valid RTP on its
own SSRCs, no sequence number twice on the media SSRC, payloads only the publisher's.
"""

from __future__ import annotations

import asyncio
import struct

from sfu.config import MediaConfig
from sfu.log import configure_logging
from sfu.media.connection import MediaConnection
from sfu.media.downtrack import DownTrack, OutgoingStream
from sfu.media.receiver import TrackReceiver
from sfu.rtp import rtcp
from sfu.rtp.header import build_extension_block, payload_bounds
from sfu.rtp.twcc import TransportFeedback
from tests.fuzz.reader import Reader
from tests.unit.media_doubles import (
    PUBLISHER_SSRC,
    RecordingSink,
    publisher_receiver,
    subscriber_params,
)

SUBSCRIBER_SSRC, SUBSCRIBER_RTX = 0xBEEF, 0xBEF0  # subscriber_params()
_loop: asyncio.AbstractEventLoop | None = None
_connection: MediaConnection | None = None


async def _new_connection() -> MediaConnection:
    return MediaConnection(MediaConfig(), lambda reason: None, lambda: None)


def _setup() -> tuple[MediaConnection, TrackReceiver, DownTrack, RecordingSink]:
    global _loop, _connection
    if _loop is None or _connection is None:
        configure_logging(level="error")  # a debug line per packet would be most of the work
        _loop = asyncio.new_event_loop()
        _connection = _loop.run_until_complete(_new_connection())
    receiver = publisher_receiver(_connection)
    sink = RecordingSink()
    down_track = DownTrack(receiver, OutgoingStream(subscriber_params(), 500, 9000), sink)
    receiver.add_down_track(down_track)
    _connection.add_down_track(down_track)
    return _connection, receiver, down_track, sink


def _rtp(reader: Reader, seq: int, payloads: set[bytes]) -> bytes:
    op = reader.uint()
    pt = 97 if op & 0x80 else 96  # RTX (resent, its OSN first) or VP8
    b0 = 0x80
    extensions = b""
    if op & 0x40:
        extensions = build_extension_block([(1, b"0"), (reader.below(14) + 1, reader.sized(15))])
        b0 |= 0x10
    descriptor = reader.choice([b"\x10", b"\x90\x80\x05", b"\x00", b"\x90\xe0\x81\x02\x07\x20"])
    frame = bytes([reader.uint() & 0x01, 0, 0]) if op & 0x20 else b""  # P clear: a keyframe
    payload = descriptor + frame + reader.sized(40) + bytes(8)
    payloads.add(payload)  # an RTX packet's too: the server forwards what it carries
    if pt == 97:
        payload = struct.pack("!H", reader.uint(2)) + payload
    ssrc = PUBLISHER_SSRC if op & 0x08 == 0 else reader.uint(4)
    header = struct.pack("!BBHII", b0, pt | (0x80 if op & 0x10 else 0), seq, seq * 3000, ssrc)
    return header + extensions + payload


FLOOD = 8500  # NACKed numbers: 500 items of 17, what one SRTCP packet (2048 bytes) can carry


def flood(media: int, first: int) -> bytes:
    """bytes(rtcp.Nack(1, media, [first .. first + FLOOD - 1])), built here: through the
    serializer (sfu/, instrumented under atheris) building it cost about as much as the server
    handling it, and the serializer has its own target (rtcp). tests/fuzz/test_packets.py
    checks the two agree."""
    items = b"".join(
        struct.pack("!HH", (first + 17 * i) & 0xFFFF, 0xFFFF) for i in range(FLOOD // 17)
    )
    return struct.pack("!BBHII", 0x81, rtcp.RTPFB, 2 + len(items) // 4, 1, media) + items


def _rtcp(reader: Reader, sent: list[int]) -> bytes:
    packets: list[rtcp.RtcpPacket | bytes] = []
    for _ in range(1 + reader.below(3)):
        kind = reader.below(8)
        media = SUBSCRIBER_SSRC if reader.uint() < 200 else reader.uint(4)
        if kind == 0:
            choice = reader.uint()
            if choice == 0:
                # a flood: every number one packet can name (sfu.media.srtp.MAX_PACKET)
                packets.append(flood(media, reader.uint(2)))
                continue
            if choice < 128 and sent:  # some of what the subscriber got: answered from history
                lost = [
                    sent[-1 - reader.below(min(len(sent), 256))] for _ in range(reader.below(8) + 1)
                ]
            else:
                lost = [reader.uint(2) for _ in range(reader.below(40))]
            packets.append(rtcp.Nack(1, media, lost or [0]))
        elif kind == 1:
            packets.append(rtcp.Pli(1, media))
        elif kind == 2:
            packets.append(rtcp.Fir(1, [(media, reader.uint())]))
        elif kind == 3:
            packets.append(rtcp.Remb(1, reader.uint(3) << reader.below(40), [media]))
        elif kind == 4:
            block = rtcp.ReportBlock(
                media,
                reader.uint(),
                0,
                reader.uint(4),
                reader.uint(4),
                reader.uint(4),
                reader.uint(4),
            )
            packets.append(rtcp.ReceiverReport(1, [block]))
        elif kind == 5:
            packets.append(TransportFeedback(1, media, reader.sized(60)))
        elif kind == 6:  # the publisher's: its clock, as subscribers' reports map it
            ntp, rtp_ts = reader.uint(8), reader.uint(4)
            packets.append(rtcp.SenderReport(PUBLISHER_SSRC, ntp, rtp_ts, 1, 1, []))
        else:
            return reader.sized()
    return b"".join(map(bytes, packets))  # rtcp.serialize, with the flood's bytes as they are


def run(data: bytes) -> None:
    connection, receiver, down_track, sink = _setup()
    reader = Reader(data)
    payloads: set[bytes] = set()
    seq, now = reader.uint(2), 100.0
    try:
        while reader.more():
            op = reader.uint()
            now += reader.uint() / 1000
            if op < 150:
                step = reader.uint()
                seq = (
                    seq + (1 if step < 160 else step - 150 if step < 250 else reader.uint(2))
                ) & 0xFFFF
                connection._on_rtp(_rtp(reader, seq, payloads), now)
            elif op < 200:
                media = [
                    struct.unpack_from("!H", p, 2)[0]
                    for p in sink.packets[-256:]
                    if p[8:12] == b"\x00\x00\xbe\xef"
                ]
                connection._on_rtcp(_rtcp(reader, media))
            elif op < 210:
                connection._send_nacks()
            elif op < 215:
                report = down_track.sender_report(now, 1.7e9 + now)
                assert report is None or 0 <= report.rtp_timestamp <= 0xFFFFFFFF, report
                block = receiver.layers[0].report_block(now)
                assert block is None or 0 <= block.fraction_lost <= 255, block
            elif op < 225:
                junk = bytes([0x80 | reader.uint() & 0x3F]) + reader.sized()
                payloads.update(as_published(junk))
                connection._on_rtp(junk, now)
            else:
                connection._on_rtcp(reader.sized())
        check_sent(sink.packets, payloads)
    finally:
        connection.remove_down_track(down_track)
        receiver.remove_down_track(down_track)
        connection.remove_receiver(receiver)
        receiver.close()


def as_published(packet: bytes) -> tuple[bytes, ...]:
    """The payloads the server may forward of a packet not built by ``_rtp``: junk that parses
    as RTP is still the publisher's, as media or, on an SSRC latched as its RTX stream, as a
    retransmission after its OSN (RFC 4588 §4)."""
    try:
        start, end = payload_bounds(packet)
    except ValueError:
        return ()
    return packet[start:end], packet[start + 2 : end]


def check_sent(packets: list[bytes], payloads: set[bytes]) -> None:
    seen: set[int] = set()
    for packet in packets:
        start, end = payload_bounds(packet)
        ssrc = struct.unpack_from("!I", packet, 8)[0]
        assert ssrc in (SUBSCRIBER_SSRC, SUBSCRIBER_RTX), hex(ssrc)
        payload = packet[start:end] if ssrc == SUBSCRIBER_SSRC else packet[start + 2 : end]
        assert payload in payloads, "the subscriber got a payload the publisher never sent"
        if ssrc == SUBSCRIBER_SSRC:
            seq = struct.unpack_from("!H", packet, 2)[0]
            assert seq not in seen, f"sequence number {seq} sent twice"
            seen.add(seq)
    assert len(seen) < 0x8000 or not packets


def seeds() -> list[bytes]:
    """A keyframe then delta frames, NACKs of what was sent, a PLI (in the reader's terms)."""

    def media(i: int, keyframe: bool, step: int = 0) -> bytes:
        return bytes([10, 5, step, 0x20, 0, 0 if keyframe else 1, 2, i >> 8, i & 0xFF])

    nack = bytes([160, 5, 0, 0, 0, 5, 2, 0, 1, 2])
    pli = bytes([160, 5, 0, 1, 0])
    stream = b"".join(media(i, i % 30 == 0) + (nack if i % 7 == 6 else b"") for i in range(60))
    jumps = b"".join(media(i, i == 0, 0 if i % 2 else 255) for i in range(20))
    return [b"\x00\x10" + stream, b"\xff\xf0" + stream + pli + stream, b"\x00\x01" + jumps]
