"""RTP header and extensions (sfu/rtp/header.py, sfu.rtp.twcc.transport_sequence).

Malformed packets raise ValueError (header) or give None (transport_sequence); what parses
keeps its payload through a header rewrite and an RTX wrap/unwrap (RFC 4588).
"""

from __future__ import annotations

import struct

from sfu.rtp import header
from sfu.rtp.twcc import transport_sequence


def check_packet(data: bytes, pt: int = 100, seq: int = 7, ts: int = 9, ssrc: int = 3) -> None:
    """Everything header.py does with one received packet; AssertionError on a defect."""
    try:
        start, end = header.payload_bounds(data)
    except ValueError:
        start = end = -1
    else:
        assert 12 <= start <= end <= len(data), (start, end)
    try:
        elements = header.parse_extensions(data)
    except ValueError:
        pass
    else:
        assert start >= 0 or data[0] & 0x20, "extensions parsed, bounds refused (not padding)"
        for ext_id, value in elements.items():
            assert 1 <= ext_id <= 255 and len(value) <= 255, (ext_id, value)
    for ext_id in (1, 3, 5, 14, 15, 200):
        number = transport_sequence(data, ext_id)
        assert number is None or 0 <= number <= 0xFFFF
    if start < 0:
        return
    payload = data[start:end]
    extensions = header.build_extension_block([(1, b"3"), (5, b"\0\0")])
    out = header.rewrite(data, start, pt, seq, ts, ssrc, extensions, 7, b"\x12\x34")
    assert out[12 + len(extensions) :] == data[start:], "rewrite changed the payload"
    assert header.payload_bounds(out) == (12 + len(extensions), len(out) - (len(data) - end))
    wrapped = header.wrap_rtx(data, 97, seq, 0xABCD)
    original_pt = data[1] & 0x7F
    b0, original_ssrc = data[0], header.RTP_FIXED.unpack_from(data)[4]
    back = header.unwrap_rtx(wrapped, original_pt, original_ssrc)
    unpadded = struct.pack("!B", b0 & 0xDF) + data[1:start] + payload
    assert back == unpadded, "RTX wrap + unwrap is not the packet without its padding"
    try:
        inner = header.unwrap_rtx(data, pt, ssrc)
    except ValueError:
        assert end - start < 2
    else:
        assert inner[12:] == data[12:start] + data[start + 2 : end]


def run(data: bytes) -> None:
    check_packet(data)


def seeds() -> list[bytes]:
    fixed = struct.pack("!BBHII", 0x80, 0x80 | 96, 1, 3000, 0x1234)
    one_byte = header.build_extension_block([(1, b"0"), (3, b"\x01\x02\x03"), (5, b"\0\x07")])
    two_byte = header.build_extension_block([(20, b"x" * 20), (5, b"\0\x08")])
    return [
        fixed + b"\x10\x00\x01" + b"\x55" * 20,
        struct.pack("!BBHII", 0x90, 96, 2, 3000, 0x1234) + one_byte + b"\x90\xe0" + b"\x66" * 10,
        struct.pack("!BBHII", 0x92, 96, 3, 3000, 0x1234) + bytes(8) + two_byte + b"\x44" * 5,
        struct.pack("!BBHII", 0xA0, 96, 4, 3000, 0x1234) + b"\x66" * 9 + b"\0\0\x03",
        header.padding_packet(97, 5, 3000, 0x99, one_byte, 200),
    ]
