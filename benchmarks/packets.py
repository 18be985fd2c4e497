"""VP8-shaped RTP packets, pre-generated, each carrying its send time in a trailer.

A forwarder rewrites the RTP header but never the payload, so the last 16 bytes of every payload
(:data:`TRAILER`: a magic, the publisher's ``time.monotonic_ns()`` at send, and a packet index)
reach the subscriber untouched and give the end-to-end latency on one host clock.

Frames follow RFC 7741: a payload descriptor with a 15-bit picture id on every packet, the payload
header on the first packet of a frame (P bit clear on keyframes, with the keyframe start code),
the marker bit on the last packet of a frame, and the timestamp advancing by 90 kHz / fps.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VIDEO_CLOCK_RATE = 90_000
TRAILER = struct.Struct("!4sqI")  # magic, send time (monotonic ns), packet index
MAGIC = b"bnch"
_HEADER = struct.Struct("!BBHII")
_DESCRIPTOR = struct.Struct("!BBH")  # X|S, I, M|picture id
_KEYFRAME_HEADER = bytes((0x10, 0x00, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01))  # 640x360
_INTERFRAME_HEADER = bytes((0x11, 0x00, 0x00))


@dataclass(frozen=True, slots=True)
class Shape:
    """What the publisher sends: ``rate`` packets/s of ``payload_size`` bytes at ``fps``."""

    rate: int = 2000
    fps: int = 30
    payload_size: int = 1100
    keyframe_interval: int = 30  # frames; a new subscriber waits at most this long for one

    def __post_init__(self) -> None:
        if self.rate < self.fps or self.fps <= 0:
            raise ValueError("need at least one packet per frame")
        if self.payload_size < 64:
            raise ValueError("payload_size must be at least 64 bytes")


class PacketSource:
    """Packet number ``index`` of one publisher's stream, stamped with its send time."""

    def __init__(self, shape: Shape, ssrc: int, payload_type: int) -> None:
        self.shape = shape
        self.ssrc = ssrc
        self.payload_type = payload_type
        filler = shape.payload_size - _DESCRIPTOR.size - TRAILER.size
        self._key_body = _KEYFRAME_HEADER + bytes(filler - len(_KEYFRAME_HEADER))
        self._inter_body = _INTERFRAME_HEADER + bytes(filler - len(_INTERFRAME_HEADER))
        self._body = (bytes(range(256)) * (filler // 256 + 1))[:filler]

    def frame_of(self, index: int) -> int:
        return index * self.shape.fps // self.shape.rate

    def packet(self, index: int, send_ns: int) -> bytes:
        shape = self.shape
        frame = self.frame_of(index)
        first = index == 0 or self.frame_of(index - 1) != frame
        last = self.frame_of(index + 1) != frame
        if first:
            body = self._key_body if frame % shape.keyframe_interval == 0 else self._inter_body
        else:
            body = self._body
        timestamp = frame * VIDEO_CLOCK_RATE // shape.fps
        header = _HEADER.pack(
            0x80,
            (0x80 if last else 0) | self.payload_type,
            index & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            self.ssrc,
        )
        descriptor = _DESCRIPTOR.pack(0x90 if first else 0x80, 0x80, 0x8000 | (frame & 0x7FFF))
        return b"".join((header, descriptor, body, TRAILER.pack(MAGIC, send_ns, index)))


def read_trailer(packet: bytes) -> tuple[int, int] | None:
    """(send time ns, index) from a decrypted packet made by :class:`PacketSource`, else None."""
    if len(packet) < 12 + TRAILER.size:
        return None
    magic, send_ns, index = TRAILER.unpack_from(packet, len(packet) - TRAILER.size)
    if magic != MAGIC:
        return None
    return send_ns, index
