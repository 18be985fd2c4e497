"""Builders shared by the media-plane unit tests: packets, parameters, a recording sink."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from sfu.api import TrackInfo
from sfu.media.connection import MediaConnection
from sfu.media.layer import LayerReceiver
from sfu.media.params import URI_ABS_SEND_TIME, URI_MID, Codec, MediaParams
from sfu.media.receiver import TrackReceiver
from sfu.rtp.header import rewrite
from sfu.rtp.vp8 import patch_descriptor

VP8 = Codec(96, "VP8", 90000, rtx_payload_type=97, feedback=("nack", "nack pli", "goog-remb"))
PUBLISHER_SSRC = 0x1234


class RecordingSink:
    connected = True

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def send_rtp(self, packet: bytes) -> None:
        self.packets.append(packet)

    def send_rewritten(
        self,
        data: bytes,
        payload_start: int,
        payload_type: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        extensions: bytes,
        value_at: int,
        value: bytes,
        /,
    ) -> None:
        self.packets.append(
            rewrite(
                data, payload_start, payload_type, seq, timestamp, ssrc, extensions, value_at, value
            )
        )

    def send_vp8(
        self,
        data: bytes,
        payload_start: int,
        payload_type: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        extensions: bytes,
        value_at: int,
        value: bytes,
        picture_id: int,
        tl0picidx: int,
        keyidx: int,
        /,
    ) -> None:
        packet = rewrite(
            data, payload_start, payload_type, seq, timestamp, ssrc, extensions, value_at, value
        )
        start = len(packet) - (len(data) - payload_start)
        self.packets.append(patch_descriptor(packet, start, picture_id, tl0picidx, keyidx))


class Upstream:
    """Records what the receiver asks of its publisher's connection."""

    def __init__(self) -> None:
        self.requests: list[int] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def request_keyframe_now(self, media_ssrc: int) -> None:
        self.requests.append(media_ssrc)

    def schedule_nack(self, layer: LayerReceiver) -> None:
        return None

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.timers.append((delay, callback))


def vp8_packet(seq: int, keyframe: bool, ssrc: int = PUBLISHER_SSRC) -> bytes:
    header = struct.pack("!BBHII", 0x80, 0x80 | VP8.payload_type, seq, seq * 3000, ssrc)
    descriptor = bytes([0x10])  # S=1, partition 0
    payload_header = bytes([0x00 if keyframe else 0x01, 0, 0])  # P bit clear on a keyframe
    return header + descriptor + payload_header + b"\xaa" * 100


def subscriber_params() -> MediaParams:
    codec = Codec(100, "VP8", 90000, rtx_payload_type=101, feedback=("nack", "nack pli"))
    return MediaParams(
        mid="3",
        kind="video",
        codecs=(codec,),
        extensions={URI_MID: 4, URI_ABS_SEND_TIME: 5},
        local_ssrc=0xBEEF,
        local_rtx_ssrc=0xBEF0,
    )


def publisher_params(ssrc: int = PUBLISHER_SSRC) -> MediaParams:
    """A publisher's negotiated VP8 m-line whose packets come from ``ssrc``."""
    return MediaParams(
        mid="0",
        kind="video",
        codecs=(VP8,),
        extensions={URI_MID: 1},
        local_ssrc=1,
        local_rtx_ssrc=2,
        remote_ssrcs=(ssrc,),
    )


def publisher_receiver(
    connection: MediaConnection, clock: Callable[[], float] = time.monotonic
) -> TrackReceiver:
    """A published VP8 track on ``connection``, whose packets come from PUBLISHER_SSRC."""
    receiver = TrackReceiver(
        TrackInfo("TR_x", "PA_x", "video"),
        publisher_params(),
        connection,
        0.5,
        connection.publisher_clock,
        clock=clock,
    )
    connection.add_receiver(receiver)
    return receiver
