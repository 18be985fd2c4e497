"""The VP8 RTP payload descriptor (RFC 7741 §4.2) and keyframe header (RFC 6386 §9.1).

::

          0 1 2 3 4 5 6 7
         +-+-+-+-+-+-+-+-+
         |X|R|N|S|R| PID |  required: eXtended, Non-reference, Start of partition, Partition index
         +-+-+-+-+-+-+-+-+
    X:   |I|L|T|K| RSV   |  which of the fields below are present
         +-+-+-+-+-+-+-+-+
    I:   |M| PictureID   |  7 bits, or 15 when M is set (then a second byte follows)
         +-+-+-+-+-+-+-+-+
    L:   |   TL0PICIDX   |  running index of the base temporal layer's frames
         +-+-+-+-+-+-+-+-+
    T/K: |TID|Y| KEYIDX  |  temporal layer, layer sync, running keyframe index (when K)
         +-+-+-+-+-+-+-+-+

Then, in the first packet of a frame (S=1, PID=0), the VP8 payload header: the frame tag of RFC
6386 §9.1 whose bit 0 (P) is 0 on a key frame, which goes on with the start code 9d 01 2a and
the frame's width and height.

An SFU that forwards several sources on one stream (simulcast layers, publishers on a reused
m-line) rewrites picture id, TL0PICIDX and KEYIDX so the receiver sees one run of each
(``sfu.media.vp8_rewriter``); :func:`patch_descriptor` writes them, as
``sfu.media._packetio.Egress.send_vp8`` does in C. Nothing here raises on hostile input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, cast


class Vp8Descriptor(NamedTuple):
    """The fields of one packet's payload descriptor; -1 where the packet has none."""

    picture_id: int
    #: the picture id field is 15 bits wide (M set), else 7 (or absent)
    long_picture_id: bool
    tl0picidx: int
    #: temporal layer index (TID), 0 = base layer
    tid: int
    #: Y: this frame depends only on the base layer, so a receiver may start this layer here
    layer_sync: bool
    keyidx: int
    #: S: the packet starts a partition
    start_of_partition: bool
    #: PID: which partition (0 = the first)
    partition_index: int
    #: the packet starts a key frame (S=1, PID=0 and the payload header's P bit clear)
    keyframe: bool
    #: octets of descriptor: the VP8 payload starts at payload_start + size
    size: int

    @property
    def begins_frame(self) -> bool:
        """The first packet of a frame (S=1 and PID=0)."""
        return self.start_of_partition and self.partition_index == 0


# per packet: build the tuple without NamedTuple's Python-level __new__ (twice as fast)
_make = cast(Callable[[type, tuple[object, ...]], Vp8Descriptor], tuple.__new__)


def parse_descriptor(
    data: bytes | memoryview, payload_start: int, payload_end: int
) -> Vp8Descriptor | None:
    """The descriptor at the start of the payload ``data[payload_start:payload_end]``.

    None when it is cut short or nothing of VP8 data follows it (RFC 7741 §4.1: a packet carries
    part of a partition). Call once per received packet.
    """
    if payload_start < 0 or payload_end > len(data):
        return None
    pos = payload_start + 1
    if pos > payload_end:
        return None
    b0 = data[payload_start]
    picture_id = tl0picidx = tid = keyidx = -1
    long_picture_id = layer_sync = False
    if b0 & 0x80:  # X
        if pos >= payload_end:
            return None
        x = data[pos]
        pos += 1
        if x & 0x80:  # I
            if pos >= payload_end:
                return None
            picture_id = data[pos]
            if picture_id & 0x80:  # M: 15 bits
                if pos + 1 >= payload_end:
                    return None
                long_picture_id = True
                picture_id = ((picture_id & 0x7F) << 8) | data[pos + 1]
                pos += 2
            else:
                pos += 1
        if x & 0x40:  # L
            if pos >= payload_end:
                return None
            tl0picidx = data[pos]
            pos += 1
        if x & 0x30:  # T or K: one byte for both
            if pos >= payload_end:
                return None
            tk = data[pos]
            pos += 1
            if x & 0x20:
                tid = tk >> 6
                layer_sync = bool(tk & 0x20)
            if x & 0x10:
                keyidx = tk & 0x1F
    if pos >= payload_end:
        return None
    return _make(
        Vp8Descriptor,
        (
            picture_id,
            long_picture_id,
            tl0picidx,
            tid,
            layer_sync,
            keyidx,
            bool(b0 & 0x10),
            b0 & 0x07,
            b0 & 0x17 == 0x10 and not data[pos] & 0x01,
            pos - payload_start,
        ),
    )


def keyframe_size(
    data: bytes | memoryview, payload_start: int, payload_end: int
) -> tuple[int, int] | None:
    """(width, height) of the key frame this packet starts, else None.

    RFC 6386 §9.1: a 3-octet frame tag, the start code 9d 01 2a, then width and height as
    16-bit little-endian values whose low 14 bits are the size and top 2 bits an upscaling
    hint (not applied: what a decoder reports as the frame size is the coded size).
    """
    descriptor = parse_descriptor(data, payload_start, payload_end)
    if descriptor is None or not descriptor.keyframe:
        return None
    pos = payload_start + descriptor.size
    if payload_end - pos < 10 or data[pos + 3 : pos + 6] != b"\x9d\x01\x2a":
        return None
    width = (data[pos + 6] | (data[pos + 7] << 8)) & 0x3FFF
    height = (data[pos + 8] | (data[pos + 9] << 8)) & 0x3FFF
    if not width or not height:
        return None
    return width, height


def patch_descriptor(
    packet: bytes, payload_start: int, picture_id: int, tl0picidx: int, keyidx: int
) -> bytes:
    """``packet`` with its descriptor's picture id, TL0PICIDX and KEYIDX set (-1: left alone).

    Each field keeps its width: a 7-bit picture id gets ``picture_id & 0x7F``, a 15-bit one
    ``picture_id & 0x7FFF`` with M still set. A field the packet does not carry stays absent;
    a descriptor cut short (by the packet's end or its padding) leaves the packet unchanged.
    The reference for ``Egress.send_vp8``, and what retransmissions use.
    """
    size = len(packet)
    end = size
    if size and packet[0] & 0x20:  # RTP padding (RFC 3550 §5.1): not part of the payload
        padding = packet[-1]
        if padding == 0 or padding > size - payload_start:
            return packet
        end -= padding
    offsets = _field_offsets(packet, payload_start, end)
    if offsets is None:
        return packet
    pid_at, long_pid, tl0_at, key_at = offsets
    out = bytearray(packet)
    if picture_id >= 0 and pid_at >= 0:
        if long_pid:
            out[pid_at] = 0x80 | ((picture_id >> 8) & 0x7F)
            out[pid_at + 1] = picture_id & 0xFF
        else:
            out[pid_at] = picture_id & 0x7F
    if tl0picidx >= 0 and tl0_at >= 0:
        out[tl0_at] = tl0picidx & 0xFF
    if keyidx >= 0 and key_at >= 0:
        out[key_at] = (out[key_at] & 0xE0) | (keyidx & 0x1F)
    return bytes(out)


def _field_offsets(data: bytes, start: int, end: int) -> tuple[int, bool, int, int] | None:
    """(picture id at, 15-bit?, TL0PICIDX at, KEYIDX byte at); -1 when absent, None if cut."""
    if start < 0 or start >= end:
        return None
    pid_at = tl0_at = key_at = -1
    long_pid = False
    if not data[start] & 0x80:
        return pid_at, long_pid, tl0_at, key_at
    pos = start + 1
    if pos >= end:
        return None
    x = data[pos]
    pos += 1
    if x & 0x80:
        if pos >= end:
            return None
        pid_at = pos
        long_pid = bool(data[pos] & 0x80)
        pos += 2 if long_pid else 1
        if pos > end:
            return None
    if x & 0x40:
        if pos >= end:
            return None
        tl0_at = pos
        pos += 1
    if x & 0x30:
        if pos >= end:
            return None
        if x & 0x10:  # KEYIDX only when K; with T alone those bits are reserved
            key_at = pos
    return pid_at, long_pid, tl0_at, key_at
