from __future__ import annotations

import pytest

from sfu.rtp.header import (
    RTP_FIXED,
    abs_send_time,
    build_extension_block,
    parse_extensions,
    payload_bounds,
    rewrite,
    unwrap_rtx,
    wrap_rtx,
)

H = bytes.fromhex
# V=2, PT 96, seq 0x1234, ts 0xdeadbeef, SSRC 0x11111111
FIXED = "8060 1234 deadbeef 11111111"


@pytest.mark.parametrize(
    ("packet", "bounds"),
    [
        (FIXED + "cafe", (12, 14)),
        (FIXED, (12, 12)),
        ("8260 1234 deadbeef 11111111 00000001 00000002 cafe", (20, 22)),  # 2 CSRCs
        ("9060 1234 deadbeef 11111111 bede0001 10ff0000 cafe", (20, 22)),  # extension
        ("9060 1234 deadbeef 11111111 bede0000 cafe", (16, 18)),  # empty extension
        ("a060 1234 deadbeef 11111111 cafe 000003", (12, 14)),  # 3 bytes padding
        ("a060 1234 deadbeef 11111111 00000004", (12, 12)),  # padding only
        ("b160 1234 deadbeef 11111111 00000009 bede0001 10ff0000 aa 01", (24, 25)),
    ],
)
def test_payload_bounds(packet: str, bounds: tuple[int, int]) -> None:
    assert payload_bounds(H(packet)) == bounds


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        ("8060 1234 deadbeef 111111", "too short"),
        ("", "too short"),
        ("4060 1234 deadbeef 11111111 cafe", "version 1"),
        ("8260 1234 deadbeef 11111111 00000001", "2 CSRCs"),
        ("9060 1234 deadbeef 11111111 bede", "extension truncated"),
        ("9060 1234 deadbeef 11111111 bede0002 10ff0000", "runs past"),
        ("a060 1234 deadbeef 11111111 cafe 00", "padding count is 0"),
        ("a060 1234 deadbeef 11111111 cafe 04", "longer than the payload"),
        ("b060 1234 deadbeef 11111111 bede0000 05", "longer than the payload"),
    ],
)
def test_payload_bounds_malformed(packet: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        payload_bounds(H(packet))


@pytest.mark.parametrize(
    ("packet", "elements"),
    [
        (FIXED + "cafe", {}),
        # one-byte: id 1 (1 byte), padding byte, id 3 (2 bytes), padding
        ("9060 1234 deadbeef 11111111 bede0002 10ff0031 aabb0000", {1: H("ff"), 3: H("aabb")}),
        # one-byte: 16-byte value (L=15)
        ("9060 1234 deadbeef 11111111 bede0005 2f" + "01" * 16 + "000000", {2: H("01" * 16)}),
        # one-byte: id 15 stops processing
        ("9060 1234 deadbeef 11111111 bede0001 10fff011", {1: H("ff")}),
        # two-byte (appbits 5): id 1 empty, id 20 with 3 bytes
        ("9060 1234 deadbeef 11111111 10050002 01001403 aabbcc00", {1: b"", 20: H("aabbcc")}),
        # a profile that is neither form
        ("9060 1234 deadbeef 11111111 abcd0001 10ff0000", {}),
        # after CSRCs
        ("9160 1234 deadbeef 11111111 00000009 bede0001 10ff0000", {1: H("ff")}),
    ],
)
def test_parse_extensions(packet: str, elements: dict[int, bytes]) -> None:
    assert parse_extensions(H(packet)) == elements


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        ("9060 1234 deadbeef 11111111 bede0001 13ffeedd", "element 1 is truncated"),
        ("9060 1234 deadbeef 11111111 10000001 0005aabb", "element 5 is truncated"),
        ("9060 1234 deadbeef 11111111 10000001 000000 07", "element 7 has no length"),
        ("9060 1234 deadbeef 11111111 bede0003 10ff0000", "runs past"),
        ("1060 1234 deadbeef 11111111 bede0000", "version 0"),
    ],
)
def test_parse_extensions_malformed(packet: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_extensions(H(packet))


@pytest.mark.parametrize(
    ("elements", "block"),
    [
        ([], ""),
        ([(1, H("010203"))], "bede0001 12010203"),
        ([(1, H("aa")), (3, H("0102"))], "bede0002 10aa3101 02000000"),
        ([(14, H("00" * 16))], "bede0005 ef" + "00" * 16 + "000000"),
        ([(15, H("01"))], "10000001 0f010100"),  # id 15: two-byte form
        ([(2, b"")], "10000001 02000000"),  # empty value: two-byte form
        ([(1, H("aa")), (2, H("11" * 17))], "10000006 0101aa02 11" + "11" * 17 + "0000"),
    ],
)
def test_build_extension_block(elements: list[tuple[int, bytes]], block: str) -> None:
    data = build_extension_block(elements)
    assert data == H(block)
    if elements:
        packet = bytes([0x90]) + H(FIXED)[1:] + data + H("cafe")
        assert parse_extensions(packet) == dict(elements)
        assert payload_bounds(packet) == (12 + len(data), 14 + len(data))


@pytest.mark.parametrize(
    "elements",
    [[(0, H("aa"))], [(256, H("aa"))], [(20, H("00") * 256)]],
)
def test_build_extension_block_invalid(elements: list[tuple[int, bytes]]) -> None:
    with pytest.raises(ValueError, match="fits no RFC 8285 form"):
        build_extension_block(elements)


@pytest.mark.parametrize(
    ("wall", "value"),
    [
        (0.0, "000000"),
        (0.5, "020000"),
        (1.0, "040000"),
        (63.0, "fc0000"),
        (64.0, "000000"),  # wraps every 64 s
        (1 / 262144, "000001"),
        (1_700_000_000.25, "010000"),  # 1_700_000_000 is a multiple of 64
    ],
)
def test_abs_send_time(wall: float, value: str) -> None:
    assert abs_send_time(wall) == H(value)


@pytest.mark.parametrize(
    ("rtx", "pt", "ssrc", "original"),
    [
        # RTX PT 97 seq 1, SSRC 0x22222222, OSN 0x1234 -> PT 96 seq 0x1234 SSRC 0x11111111
        ("8061 0001 deadbeef 22222222 1234 cafe", 96, 0x11111111, FIXED + "cafe"),
        # marker bit kept, extension kept
        (
            "90e1 0001 deadbeef 22222222 bede0001 10ff0000 1234 cafe",
            96,
            0x11111111,
            "90e0 1234 deadbeef 11111111 bede0001 10ff0000 cafe",
        ),
        # RTX padding dropped, P bit cleared
        ("a061 0001 deadbeef 22222222 1234 cafe 0002", 96, 0x11111111, FIXED + "cafe"),
        # OSN only: an empty original payload
        ("8061 ffff deadbeef 22222222 ffff", 100, 5, "8064 ffff deadbeef 00000005"),
    ],
)
def test_unwrap_rtx(rtx: str, pt: int, ssrc: int, original: str) -> None:
    assert unwrap_rtx(H(rtx), pt, ssrc) == H(original)


@pytest.mark.parametrize(
    ("rtx", "message"),
    [
        ("8061 0001 deadbeef 22222222 12", "no original sequence number"),
        ("a061 0001 deadbeef 22222222 1234 02", "no original sequence number"),
        ("8061 0001 deadbeef 222222", "too short"),
    ],
)
def test_unwrap_rtx_malformed(rtx: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        unwrap_rtx(H(rtx), 96, 1)


@pytest.mark.parametrize(
    "original",
    [
        FIXED + "cafe",
        FIXED,
        "80e0 ffff 00000000 11111111 " + "ab" * 1000,
        "9260 0000 deadbeef 11111111 00000001 00000002 bede0001 10ff0000 cafe",
        "9060 1234 deadbeef 11111111 10000001 0f010100 cafe",
    ],
)
def test_rtx_round_trip(original: str) -> None:
    packet = H(original)
    rtx = wrap_rtx(packet, 97, 0xABCD, 0x22222222)
    _b0, b1, seq, ts, ssrc = RTP_FIXED.unpack_from(rtx)
    assert (b1 & 0x7F, seq, ssrc) == (97, 0xABCD, 0x22222222)
    assert b1 & 0x80 == packet[1] & 0x80
    assert ts == RTP_FIXED.unpack_from(packet)[3]
    start, _ = payload_bounds(rtx)
    assert rtx[start : start + 2] == packet[2:4]  # OSN
    assert unwrap_rtx(rtx, packet[1] & 0x7F, RTP_FIXED.unpack_from(packet)[4]) == packet


def test_wrap_rtx_drops_padding() -> None:
    padded = H("a060 1234 deadbeef 11111111 cafe 000003")
    assert wrap_rtx(padded, 97, 7, 2) == H("8061 0007 deadbeef 00000002 1234 cafe")


MID = "bede0001 10330000"  # mid "3"
MID_AST = "bede0002 10332200 00000000"  # mid "3" + a 3-byte element (id 2), value at offset 7


@pytest.mark.parametrize(
    ("packet", "start", "args", "rewritten"),
    [
        # new PT, seq, timestamp, SSRC; the marker bit kept; X set by the block
        ("80e0 1234 deadbeef 11111111 cafe", 12, (100, 5, 6, 7, MID, -1, ""),
         "90e4 0005 00000006 00000007" + MID + "cafe"),
        # the publisher's extension replaced; no block: X cleared
        ("9060 1234 deadbeef 11111111 bede0001 10ff0000 cafe", 20, (97, 0xFFFF, 0, 1, "", -1, ""),
         "8061 ffff 00000000 00000001 cafe"),
        # a per-packet value written into the template; padding and the P bit kept
        ("a060 1234 deadbeef 11111111 cafe 000003", 12, (100, 1, 2, 3, MID_AST, 7, "abcdef"),
         "b064 0001 00000002 00000003 bede0002 103322ab cdef0000 cafe 000003"),
        # CSRCs are not forwarded
        ("8260 1234 deadbeef 11111111 00000001 00000002 cafe", 20, (100, 1, 2, 3, "", -1, ""),
         "8064 0001 00000002 00000003 cafe"),
    ],
)  # fmt: skip
def test_rewrite(
    packet: str, start: int, args: tuple[int, int, int, int, str, int, str], rewritten: str
) -> None:
    pt, seq, ts, ssrc, block, value_at, value = args
    result = rewrite(H(packet), start, pt, seq, ts, ssrc, H(block), value_at, H(value))
    assert result == H(rewritten)
