"""VP8 payload descriptors (RFC 7741 §4.2, sfu/rtp/vp8.py) and the C egress that writes them
(Egress.send_vp8 / send_rewritten in sfu/media/_packetio.c): never an exception on any packet,
and the C copy is byte for byte what the Python reference makes."""

from __future__ import annotations

import struct

from sfu.media.srtp import MAX_PACKET
from sfu.rtp.codecs import is_keyframe
from sfu.rtp.header import build_extension_block, payload_bounds, rewrite
from sfu.rtp.vp8 import keyframe_size, parse_descriptor, patch_descriptor
from tests.fuzz.harnesses.egress import relayed
from tests.fuzz.reader import Reader

_TEMPLATES = [
    b"",
    build_extension_block([(1, b"3")]),
    build_extension_block([(1, b"3"), (3, bytes(3))]),
    build_extension_block([(15, b"7"), (20, bytes(1))]),
]


def check_descriptor(data: bytes, start: int, end: int, fields: tuple[int, int, int]) -> None:
    d = parse_descriptor(data, start, end)
    size = keyframe_size(data, start, end)
    if 0 <= start <= end <= len(data):
        # the keyframe test of non-simulcast tracks (sfu/rtp/codecs.py) agrees with it
        keyframe = is_keyframe("VP8", data[start:end])
        assert keyframe == (d is not None and d.keyframe), (data[start:end].hex(), d)
    assert d is None or 1 <= d.size <= end - start - 1, d
    assert size is None or (d is not None and d.keyframe and min(size) >= 1), (d, size)
    if d is None or start < 12:
        return
    patched = patch_descriptor(data, start, *fields)
    assert len(patched) == len(data)
    assert (
        patched[: start + 1] == data[: start + 1]
        and patched[start + d.size :] == data[start + d.size :]
    ), "patch_descriptor wrote outside the descriptor's fields"
    again = parse_descriptor(patched, start, end)
    assert again is not None and again.size == d.size
    pid, tl0, keyidx = fields
    if pid >= 0 and d.picture_id >= 0 and not _cut_by_padding(data, start, d.size):
        assert again.picture_id == pid & (0x7FFF if d.long_picture_id else 0x7F)
    if tl0 >= 0 and d.tl0picidx >= 0 and not _cut_by_padding(data, start, d.size):
        assert again.tl0picidx == tl0 & 0xFF
    if keyidx >= 0 and d.keyidx >= 0 and not _cut_by_padding(data, start, d.size):
        assert again.keyidx == keyidx & 0x1F


def _cut_by_padding(data: bytes, start: int, size: int) -> bool:
    """patch_descriptor leaves a packet whole when its padding cuts into the descriptor."""
    if not data[0] & 0x20:
        return False
    padding = data[-1]
    return padding == 0 or padding > len(data) - start - size


def check_egress(data: bytes, start: int, reader: Reader) -> None:
    """send_vp8 and send_rewritten against header.rewrite + vp8.patch_descriptor."""
    box = relayed()
    box.egress.transport_cc_id = 0
    extensions = reader.choice(_TEMPLATES)
    # a value goes over an element's bytes, never the block's profile and length (the
    # egress's templates are built so; SRTP refuses a packet whose extension length lies)
    value_at = 4 + reader.below(len(extensions) - 3) if extensions and reader.flag() else -1
    value = reader.take(reader.below(4)) if value_at >= 0 else b""
    fields = (reader.uint(2) % 0x8001 - 1, reader.uint(2) % 0x101 - 1, reader.below(0x21) - 1)
    seq = box.next_seq()
    args = (data, start, 100, seq, 5678, 0xBEEF, extensions, value_at, value)
    vp8 = reader.flag()
    if vp8:
        box.egress.send_vp8(*args, *fields)
    else:
        box.egress.send_rewritten(*args)
    sent = box.take()
    fits = 12 + len(extensions) + len(data) - start <= MAX_PACKET
    if value_at < 0 or value_at + len(value) <= len(extensions):
        expected = rewrite(*args)
        if vp8:
            expected = patch_descriptor(expected, 12 + len(extensions), *fields)
        assert (sent == expected) if fits else sent is None, (sent, expected)
    else:
        assert sent is None, "the egress wrote a value past its extension block"


def run(data: bytes) -> None:
    reader = Reader(data)
    fields = (reader.uint(2) % 0x8001 - 1, reader.uint(2) % 0x101 - 1, reader.below(0x21) - 1)
    mode = reader.uint()
    packet = reader.rest()
    if len(packet) < 12:
        check_descriptor(packet, 0, len(packet), fields)
        return
    try:
        start, end = payload_bounds(packet)
    except ValueError:
        start, end = 12, len(packet)
    check_descriptor(packet, start, end, fields)
    if mode & 1:
        # the arguments come first in the input, the packet after: read them from its tail
        check_egress(packet, start, Reader(packet[::-1]))


def seeds() -> list[bytes]:
    header = struct.pack("!BBHII", 0x80, 0x80 | 96, 7, 9000, 0x1111)
    keyframe = b"\x90\xe0\x80\x01\x05\x20" + b"\x50\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01" + bytes(20)
    delta = b"\x90\xf0\xa5\x5a\xc3\x6e" + b"\x51\x02\x00" + b"\x77" * 40
    padded = struct.pack("!BBHII", 0xA0, 96, 8, 9000, 0x1111) + delta + bytes(4) + b"\x05"
    args = b"\x12\x34\x00\x10\x07"
    return [
        args + b"\x01" + header + keyframe,
        args + b"\x00" + header + delta,
        args + b"\x01" + padded,
        args + b"\x01" + header + b"\x10",
        args + b"\x01" + header + b"\x80\x80\xff",
    ]
