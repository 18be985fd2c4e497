"""A removed track's late packets reach no other track (issue 8, item 2).

A client that unpublishes by making its m-line inactive sends on it until it has applied the
answer. Drives a MediaConnection's ingress directly (no network): packets carry a mark per stream
in their last byte, and each down-track's sink records what its subscriber would receive.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from sfu.api import TrackInfo
from sfu.config import MediaConfig
from sfu.media.connection import MediaConnection
from sfu.media.downtrack import STALL_REFUSALS, DownTrack, OutgoingStream
from sfu.media.params import URI_MID, MediaParams
from sfu.media.receiver import TrackReceiver
from sfu.rtp.header import build_extension_block

from .media_doubles import VP8, RecordingSink, subscriber_params, vp8_packet

CAMERA, SCREEN, SCREEN2 = 0x1111, 0x2222, 0x3333
MID_EXT = 1


@pytest.fixture
async def connection() -> AsyncIterator[MediaConnection]:
    connection = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    yield connection
    await connection.close()


def publish(connection: MediaConnection, mid: str, ssrcs: tuple[int, ...] = ()) -> TrackReceiver:
    """A VP8 track on m-line ``mid`` (``ssrcs``: its a=ssrc lines, if the client sent any)."""
    params = MediaParams(
        mid=mid,
        kind="video",
        codecs=(VP8,),
        extensions={URI_MID: MID_EXT},
        local_ssrc=1,
        local_rtx_ssrc=2,
        remote_ssrcs=ssrcs,
    )
    info = TrackInfo(f"TR_{mid}", "PA_x", "video")
    receiver = TrackReceiver(info, params, connection, 0.5, connection.publisher_clock)
    connection.add_receiver(receiver)
    return receiver


def unpublish(connection: MediaConnection, receiver: TrackReceiver) -> None:
    """What Participant._unpublish does to the media plane."""
    connection.remove_receiver(receiver)
    receiver.close()


def subscribe(receiver: TrackReceiver) -> RecordingSink:
    sink = RecordingSink()
    stream = OutgoingStream(subscriber_params(), 500, 9000)
    receiver.add_down_track(DownTrack(receiver, stream, sink))
    return sink


def send(connection: MediaConnection, ssrc: int, seqs: range, mid: str | None = None) -> None:
    """Packets ``seqs`` of stream ``ssrc`` (a keyframe first), marked with ``ssrc``'s low byte."""
    for seq in seqs:
        data = vp8_packet(seq, keyframe=seq == seqs.start, ssrc=ssrc)[:-1] + bytes([ssrc & 0xFF])
        if mid is not None:
            block = build_extension_block([(MID_EXT, mid.encode())])
            data = bytes([data[0] | 0x10]) + data[1:12] + block + data[12:]
        connection._on_rtp(data, time.monotonic())


def marks(sink: RecordingSink) -> list[int]:
    """Whose packets the subscriber got, in order (the mark of each)."""
    return [packet[-1] for packet in sink.packets]


async def test_late_packets_of_an_unpublished_track_reach_no_other_track(
    connection: MediaConnection,
) -> None:
    camera = publish(connection, "0", (CAMERA,))
    screen = publish(connection, "1", (SCREEN,))
    camera_sink, screen_sink = subscribe(camera), subscribe(screen)
    send(connection, CAMERA, range(100, 110))
    send(connection, SCREEN, range(20000, 20010))  # numbered far ahead of the camera
    unpublish(connection, screen)

    send(connection, SCREEN, range(20010, 20013))  # sent before the client had the answer
    send(connection, CAMERA, range(110, 113))
    screen2 = publish(connection, "2")  # a new track, no a=ssrc: its SSRC is latched
    screen2_sink = subscribe(screen2)
    send(connection, SCREEN, range(20013, 20016))
    send(connection, CAMERA, range(113, 120))
    send(connection, SCREEN2, range(500, 510), mid="2")  # no a=ssrc: its packets name the mid

    assert marks(camera_sink) == [CAMERA & 0xFF] * 20
    assert marks(screen_sink) == [SCREEN & 0xFF] * 10
    assert marks(screen2_sink) == [SCREEN2 & 0xFF] * 10


async def test_an_m_line_published_again_takes_its_ssrc_again(
    connection: MediaConnection,
) -> None:
    """An inactive m-line made sendonly again, with no a=ssrc: its SSRC is latched anew."""
    publish(connection, "0", (CAMERA,))
    screen = publish(connection, "1")
    send(connection, SCREEN, range(0, 5), mid="1")
    unpublish(connection, screen)
    send(connection, SCREEN, range(5, 8), mid="1")

    again = publish(connection, "1")
    sink = subscribe(again)
    send(connection, SCREEN, range(8, 18), mid="1")

    assert marks(sink) == [SCREEN & 0xFF] * 10


async def test_a_stalled_down_track_says_so(connection: MediaConnection) -> None:
    camera = publish(connection, "0", (CAMERA,))
    sink = subscribe(camera)
    send(connection, CAMERA, range(100, 110))
    down_track = camera.down_tracks[0]
    down_track.stream.munger.forward(20000 + 65536, 0)  # as a stray packet far ahead would

    with capture_logs() as logs:
        send(connection, CAMERA, range(110, 110 + STALL_REFUSALS + 20))

    assert len(sink.packets) == 10
    stalled = [e for e in logs if e["event"].startswith("down-track stalled")]
    assert len(stalled) == 1, logs
    assert stalled[0]["track"] == "TR_0"
    assert stalled[0]["refused"] == STALL_REFUSALS
