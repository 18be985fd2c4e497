"""sfu.rtp.vp8: the VP8 payload descriptor (RFC 7741 §4.2) and keyframe header (RFC 6386 §9.1)."""

from __future__ import annotations

import itertools
import random
import struct

import av
import numpy as np
import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor

from sfu.rtp.vp8 import Vp8Descriptor, keyframe_size, parse_descriptor, patch_descriptor


def descriptor(
    *,
    s: bool = True,
    part: int = 0,
    n: bool = False,
    picture_id: int | None = None,
    long: bool = True,
    tl0: int | None = None,
    tid: int | None = None,
    y: bool = False,
    keyidx: int | None = None,
) -> bytes:
    """The descriptor with these fields (T with ``tid``, K with ``keyidx``)."""
    x = (
        (0x80 if picture_id is not None else 0)
        | (0x40 if tl0 is not None else 0)
        | (0x20 if tid is not None else 0)
        | (0x10 if keyidx is not None else 0)
    )
    b0 = (0x80 if x else 0) | (0x20 if n else 0) | (0x10 if s else 0) | part
    out = bytes([b0])
    if x:
        out += bytes([x])
    if picture_id is not None:
        out += struct.pack("!H", 0x8000 | picture_id) if long else bytes([picture_id])
    if tl0 is not None:
        out += bytes([tl0])
    if tid is not None or keyidx is not None:
        out += bytes([((tid or 0) << 6) | (0x20 if y else 0) | (keyidx or 0)])
    return out


KEY_HEADER = bytes.fromhex("f00e00 9d012a 4001 b400")  # 320x180 (from libvpx, see below)
DELTA_HEADER = bytes.fromhex("d10200")  # P=1


def fields(d: Vp8Descriptor) -> tuple[object, ...]:
    return tuple(d)


# (payload hex, picture_id, long, tl0, tid, Y, keyidx, S, PID, keyframe, size)
CASES = [
    ("10 50", -1, False, -1, -1, False, -1, True, 0, True, 1),
    ("10 51", -1, False, -1, -1, False, -1, True, 0, False, 1),
    ("00 50", -1, False, -1, -1, False, -1, False, 0, False, 1),  # S=0: not a frame start
    ("13 50", -1, False, -1, -1, False, -1, True, 3, False, 1),  # PID=3
    ("30 50", -1, False, -1, -1, False, -1, True, 0, True, 1),  # N: no matter
    ("58 50", -1, False, -1, -1, False, -1, True, 0, True, 1),  # R bits ignored
    ("90 80 05 50", 5, False, -1, -1, False, -1, True, 0, True, 3),
    ("90 80 7f 51", 127, False, -1, -1, False, -1, True, 0, False, 3),
    ("90 80 81 23 50", 0x123, True, -1, -1, False, -1, True, 0, True, 4),
    ("90 80 ff ff 50", 0x7FFF, True, -1, -1, False, -1, True, 0, True, 4),
    ("90 40 07 50", -1, False, 7, -1, False, -1, True, 0, True, 3),
    ("90 20 40 50", -1, False, -1, 1, False, -1, True, 0, True, 3),
    ("90 20 e0 50", -1, False, -1, 3, True, -1, True, 0, True, 3),
    ("90 20 1f 50", -1, False, -1, 0, False, -1, True, 0, True, 3),  # T alone: no KEYIDX
    ("90 10 5f 50", -1, False, -1, -1, False, 31, True, 0, True, 3),  # K alone: no TID
    ("90 30 b5 50", -1, False, -1, 2, True, 21, True, 0, True, 3),
    ("90 f0 81 23 07 a3 50", 0x123, True, 7, 2, True, 3, True, 0, True, 6),
    ("90 f0 05 07 40 51", 5, False, 7, 1, False, 0, True, 0, False, 5),
    ("80 f0 05 07 40 51", 5, False, 7, 1, False, 0, False, 0, False, 5),
    ("90 00 50", -1, False, -1, -1, False, -1, True, 0, True, 2),  # X with nothing in it
    # the P bit is read after the whole descriptor, not inside it
    ("90 80 80 50 51", 0x50, True, -1, -1, False, -1, True, 0, False, 4),
]

TRUNCATED = [
    "",
    "10",  # no VP8 data after the descriptor
    "90",  # X without its byte
    "90 80",  # I without picture id
    "90 80 81",  # 15-bit picture id cut short
    "90 80 05",  # descriptor only
    "90 40",
    "90 20",
    "90 10",
    "90 f0 81 23 07",
    "90 f0 81 23 07 40",
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_descriptor_fields(case: tuple[object, ...]) -> None:
    payload = bytes.fromhex(str(case[0]))
    # at an offset inside a larger packet, with bytes after the payload's end
    data = b"\xff" * 12 + payload + b"\x90\xff\xff"
    d = parse_descriptor(data, 12, 12 + len(payload))
    assert d is not None
    assert fields(d) == case[1:]
    assert d.begins_frame == (d.start_of_partition and d.partition_index == 0)


@pytest.mark.parametrize("payload", TRUNCATED)
def test_truncated_descriptors_are_none(payload: str) -> None:
    data = bytes.fromhex(payload)
    # what follows the payload (padding, another packet) is never read
    assert parse_descriptor(data + b"\x50\x50\x50", 0, len(data)) is None
    assert parse_descriptor(data, 0, len(data)) is None


@pytest.mark.parametrize(("start", "end"), [(-1, 3), (0, 99), (5, 3), (3, 3), (4, 4), (100, 101)])
def test_bounds_outside_the_data_are_none(start: int, end: int) -> None:
    assert parse_descriptor(b"\x10\x50\x50\x50", start, end) is None
    assert keyframe_size(b"\x10\x50\x50\x50", start, end) is None


def test_hostile_bytes_never_raise_and_agree_with_aiortc() -> None:
    rng = random.Random(7)
    parsed = 0
    for _ in range(20000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 9)))
        d = parse_descriptor(data, 0, len(data))
        keyframe_size(data, 0, len(data))
        patch_descriptor(b"\x80" * 12 + data, 12, 0x1234, 0x56, 7)
        try:
            theirs, rest = VpxPayloadDescriptor.parse(data)
        except ValueError:
            assert d is None
            continue
        if not rest:
            assert d is None  # nothing of VP8 after it
            continue
        assert d is not None
        parsed += 1
        assert d.picture_id == (-1 if theirs.picture_id is None else theirs.picture_id)
        assert d.tl0picidx == (-1 if theirs.tl0picidx is None else theirs.tl0picidx)
        assert d.tid == (-1 if theirs.tid is None else theirs.tid[0])
        assert d.layer_sync == (theirs.tid is not None and bool(theirs.tid[1]))
        assert d.keyidx == (-1 if theirs.keyidx is None else theirs.keyidx)
        assert d.start_of_partition == bool(theirs.partition_start)
        assert d.partition_index == theirs.partition_id & 0x07  # aiortc reads R as well
        assert d.size == len(data) - len(rest)
    assert parsed > 5000


def test_aiortc_descriptors_parse_back() -> None:
    for picture_id, tl0, tid, keyidx in itertools.product(
        (None, 0, 127, 128, 0x7FFF), (None, 0, 255), (None, (0, 0), (2, 1), (3, 1)), (None, 0, 31)
    ):
        theirs = VpxPayloadDescriptor(1, 0, picture_id, tl0, tid, keyidx)
        data = bytes(theirs) + DELTA_HEADER
        d = parse_descriptor(data, 0, len(data))
        assert d is not None
        assert d.picture_id == (-1 if picture_id is None else picture_id)
        assert d.long_picture_id == (picture_id is not None)  # aiortc always writes 15 bits
        assert d.tl0picidx == (-1 if tl0 is None else tl0)
        assert (d.tid, d.layer_sync) == ((-1, False) if tid is None else (tid[0], bool(tid[1])))
        assert d.keyidx == (-1 if keyidx is None else keyidx)
        assert not d.keyframe


def vp8_keyframe(width: int, height: int) -> bytes:
    """A real key frame from libvpx (through PyAV)."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
    frame = frame.reformat(format="yuv420p")
    frame.pts = 0
    packets = codec.encode(frame) + codec.encode(None)
    return bytes(packets[0])


@pytest.mark.parametrize(("width", "height"), [(320, 180), (640, 360), (1280, 720), (2, 2)])
def test_keyframe_size_of_a_libvpx_keyframe(width: int, height: int) -> None:
    frame = vp8_keyframe(width, height)
    for prefix in (
        descriptor(),
        descriptor(picture_id=5, long=False),
        descriptor(picture_id=300, tl0=9, tid=0, y=True, keyidx=4),
    ):
        data = b"\x80" * 12 + prefix + frame[:1100]
        assert keyframe_size(data, 12, len(data)) == (width, height)
        d = parse_descriptor(data, 12, len(data))
        assert d is not None and d.keyframe


@pytest.mark.parametrize(
    "payload",
    [
        descriptor() + KEY_HEADER[:9],  # cut inside the height
        descriptor() + bytes.fromhex("f00e00 9d012b 4001 b400"),  # bad start code
        descriptor() + bytes.fromhex("f00e00 9d012a 0000 b400"),  # width 0
        descriptor() + bytes.fromhex("f00e00 9d012a 4001 00c0"),  # height 0 (scale bits only)
        descriptor() + bytes.fromhex("f10e00 9d012a 4001 b400"),  # P=1: not a key frame
        descriptor(s=False) + KEY_HEADER,  # not a frame start
        descriptor(part=1) + KEY_HEADER,
    ],
)
def test_keyframe_size_needs_a_whole_keyframe_header(payload: bytes) -> None:
    assert keyframe_size(payload, 0, len(payload)) is None


def test_keyframe_size_ignores_the_scale_bits() -> None:
    payload = descriptor() + bytes.fromhex("f00e00 9d012a 40c1 b480")
    assert keyframe_size(payload, 0, len(payload)) == (320, 180)
    assert keyframe_size(payload, 0, len(payload) - 1) is None  # the end bounds it


def rtp(payload: bytes, padding: int = 0) -> bytes:
    b0 = 0xA0 if padding else 0x80
    tail = bytes(padding - 1) + bytes([padding]) if padding else b""
    return struct.pack("!BBHII", b0, 96, 1, 2, 3) + payload + tail


PATCHES = [
    # (descriptor, picture_id, tl0, keyidx, expected descriptor)
    (descriptor(picture_id=0x123), 0x4567, -1, -1, descriptor(picture_id=0x4567)),
    (descriptor(picture_id=0x123), 0xFFFF & 0x7FFF, -1, -1, descriptor(picture_id=0x7FFF)),
    (descriptor(picture_id=5, long=False), 0x4567, -1, -1, descriptor(picture_id=0x67, long=False)),
    (descriptor(picture_id=5, long=False), 0x80, -1, -1, descriptor(picture_id=0, long=False)),
    (descriptor(tl0=1, tid=1, y=True), 7, 200, 9, descriptor(tl0=200, tid=1, y=True)),
    (descriptor(tid=3, y=True, keyidx=1), 7, 200, 30, descriptor(tid=3, y=True, keyidx=30)),
    (descriptor(keyidx=1), -1, -1, 0x3F, descriptor(keyidx=31)),
    (
        descriptor(picture_id=1, tl0=2, tid=2, keyidx=3),
        -1,
        -1,
        -1,
        descriptor(picture_id=1, tl0=2, tid=2, keyidx=3),
    ),
    (
        descriptor(picture_id=1, tl0=2, tid=2, keyidx=3),
        0x7FFE,
        0xFF,
        0,
        descriptor(picture_id=0x7FFE, tl0=0xFF, tid=2, keyidx=0),
    ),
    (descriptor(), 1, 2, 3, descriptor()),  # nothing to write into
]


@pytest.mark.parametrize("case", range(len(PATCHES)))
def test_patched_fields(case: int) -> None:
    before, picture_id, tl0, keyidx, after = PATCHES[case]
    packet = rtp(before + DELTA_HEADER + b"\x11" * 20)
    patched = patch_descriptor(packet, 12, picture_id, tl0, keyidx)
    assert patched == rtp(after + DELTA_HEADER + b"\x11" * 20)
    d = parse_descriptor(patched, 12, len(patched))
    assert d is not None and d.size == len(before)


def test_a_descriptor_cut_short_is_left_alone() -> None:
    full = descriptor(picture_id=0x123, tl0=4, tid=1, keyidx=2)
    for cut in range(len(full)):
        packet = rtp(full[:cut])
        assert patch_descriptor(packet, 12, 0x4567, 9, 9) == packet
    # fields that end the payload are patched (the VP8 data is not the patcher's business)
    assert patch_descriptor(rtp(full), 12, 0x4567, 9, 9) == rtp(
        descriptor(picture_id=0x4567, tl0=9, tid=1, keyidx=9)
    )


def test_padding_is_not_descriptor() -> None:
    full = descriptor(picture_id=0x123, tl0=4)
    packet = rtp(full[:3], padding=4)  # the picture id's second byte would be in the padding
    assert patch_descriptor(packet, 12, 0x4567, 9, -1) == packet
    packet = rtp(full + DELTA_HEADER, padding=4)
    assert patch_descriptor(packet, 12, 0x4567, 9, -1) == rtp(
        descriptor(picture_id=0x4567, tl0=9) + DELTA_HEADER, padding=4
    )
    # a padding count longer than the payload, or 0: not a packet to touch
    for bad in (0, 200):
        broken = packet[:-1] + bytes([bad])
        assert patch_descriptor(broken, 12, 0x4567, 9, -1) == broken
