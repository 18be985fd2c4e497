"""RTP header helpers that work on raw packet bytes, without building packet objects.

- RFC 3550 §5.1: the fixed header, CSRC list, header extension and padding.
- RFC 8285: one-byte (profile 0xBEDE) and two-byte (profile 0x100x) header extension elements.
- RFC 4588 §4: retransmission (RTX) packets, whose payload starts with the original sequence
  number (OSN).
- abs-send-time (http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time): 6.18 fixed point.

Everything here runs per packet, so it works with ``struct``, indexing and slices, and builds no
objects beyond what it returns.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

#: V/P/X/CC, M/PT, sequence number, timestamp, SSRC.
RTP_FIXED = struct.Struct("!BBHII")

ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000  # the upper 12 bits are 0x100; the low 4 bits ("appbits") are free

_U16 = struct.Struct("!H")
_EXT_HEADER = struct.Struct("!HH")

Buffer = bytes | bytearray | memoryview


def _extension_bounds(data: Buffer) -> tuple[int, int, int]:
    """(profile, elements start, elements end) of the header extension; profile -1 when X=0."""
    size = len(data)
    if size < 12:
        raise ValueError(f"RTP packet too short: {size} bytes, the fixed header needs 12")
    b0 = data[0]
    if b0 >> 6 != 2:
        raise ValueError(f"RTP version {b0 >> 6}, expected 2")
    pos = 12 + 4 * (b0 & 0x0F)
    if pos > size:
        raise ValueError(f"RTP packet truncated: {b0 & 0x0F} CSRCs need {pos} bytes, got {size}")
    if not b0 & 0x10:
        return -1, pos, pos
    if pos + 4 > size:
        raise ValueError(f"RTP header extension truncated: needs {pos + 4} bytes, got {size}")
    profile, words = _EXT_HEADER.unpack_from(data, pos)
    end = pos + 4 + 4 * words
    if end > size:
        raise ValueError(
            f"RTP header extension length {words} words runs past the packet ({end} > {size})"
        )
    return profile, pos + 4, end


def payload_bounds(data: Buffer) -> tuple[int, int]:
    """(start, end) of the payload: after CSRCs and header extension, before padding."""
    # per packet: inlined byte arithmetic; the checks only format a message when they fail
    size = len(data)
    if size < 12:
        raise ValueError(f"RTP packet too short: {size} bytes, the fixed header needs 12")
    b0 = data[0]
    if b0 & 0xC0 != 0x80:
        raise ValueError(f"RTP version {b0 >> 6}, expected 2")
    start = 12 + ((b0 & 0x0F) << 2)
    if b0 & 0x10:
        if start + 4 > size:
            raise ValueError(f"RTP header extension truncated: needs {start + 4} bytes, got {size}")
        words = (data[start + 2] << 8) | data[start + 3]
        start += 4 + (words << 2)
        if start > size:
            raise ValueError(
                f"RTP header extension length {words} words runs past the packet ({start} > {size})"
            )
    elif start > size:
        raise ValueError(f"RTP packet truncated: {b0 & 0x0F} CSRCs need {start} bytes, got {size}")
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0:
            raise ValueError("RTP padding count is 0 (it counts itself, so at least 1)")
        if padding > size - start:
            raise ValueError(f"RTP padding of {padding} bytes is longer than the payload")
        return start, size - padding
    return start, size


def parse_extensions(data: Buffer) -> dict[int, bytes]:
    """The RFC 8285 header extension elements by id; {} without an extension or another profile."""
    profile, pos, end = _extension_bounds(data)
    elements: dict[int, bytes] = {}
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = data[pos]
            ext_id = b >> 4
            if ext_id == 0:  # padding byte
                pos += 1
                continue
            if ext_id == 15:  # reserved: stop processing (RFC 8285 §4.2)
                break
            length = (b & 0x0F) + 1
            if pos + 1 + length > end:
                raise ValueError(f"RTP one-byte extension element {ext_id} is truncated")
            elements[ext_id] = bytes(data[pos + 1 : pos + 1 + length])
            pos += 1 + length
    elif profile & 0xFFF0 == TWO_BYTE_PROFILE:
        while pos < end:
            ext_id = data[pos]
            if ext_id == 0:  # padding byte
                pos += 1
                continue
            if pos + 2 > end:
                raise ValueError(f"RTP two-byte extension element {ext_id} has no length")
            length = data[pos + 1]
            if pos + 2 + length > end:
                raise ValueError(f"RTP two-byte extension element {ext_id} is truncated")
            elements[ext_id] = bytes(data[pos + 2 : pos + 2 + length])
            pos += 2 + length
    return elements


def build_extension_block(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """The header extension (profile, length, elements, zero padding), one-byte form if it fits."""
    if not elements:
        return b""
    if all(1 <= i <= 14 and 1 <= len(v) <= 16 for i, v in elements):
        profile = ONE_BYTE_PROFILE
        body = b"".join(bytes(((i << 4) | (len(v) - 1),)) + v for i, v in elements)
    else:
        for i, v in elements:
            if not 1 <= i <= 255 or len(v) > 255:
                raise ValueError(f"extension element {i} ({len(v)} bytes) fits no RFC 8285 form")
        profile = TWO_BYTE_PROFILE
        body = b"".join(bytes((i, len(v))) + v for i, v in elements)
    body += bytes(-len(body) % 4)
    return _EXT_HEADER.pack(profile, len(body) // 4) + body


def abs_send_time(now_wall: float) -> bytes:
    """abs-send-time value: seconds in 6.18 fixed point, modulo 64 s, 3 bytes big-endian."""
    return (int(now_wall * 262144.0 + 0.5) & 0xFFFFFF).to_bytes(3, "big")


def rewrite(
    data: bytes,
    payload_start: int,
    payload_type: int,
    seq: int,
    timestamp: int,
    ssrc: int,
    extensions: bytes,
    value_at: int = -1,
    value: bytes = b"",
) -> bytes:
    """``data``'s payload (and padding) under a new fixed header and extension block.

    The marker and padding bits are ``data``'s own; X is set when ``extensions`` is not empty.
    ``value``, when ``value_at`` >= 0, is written over the block at that offset (a per-packet
    extension value in a per-subscriber template). No CSRCs: an SFU forwards one source per
    stream. The reference for ``sfu.media._packetio.Egress.send_rewritten``, which does the
    same in C.
    """
    if value_at >= 0:
        extensions = extensions[:value_at] + value + extensions[value_at + len(value) :]
    first = 0x80 | (data[0] & 0x20) | (0x10 if extensions else 0)
    second = (data[1] & 0x80) | payload_type
    return RTP_FIXED.pack(first, second, seq, timestamp, ssrc) + extensions + data[payload_start:]


def unwrap_rtx(data: bytes, payload_type: int, ssrc: int) -> bytes:
    """RFC 4588: the original packet carried by an RTX packet (its padding is dropped)."""
    start, end = payload_bounds(data)
    if end - start < 2:
        raise ValueError(f"RTX payload of {end - start} bytes has no original sequence number")
    b0, b1, _seq, timestamp, _ssrc = RTP_FIXED.unpack_from(data)
    (osn,) = _U16.unpack_from(data, start)
    header = RTP_FIXED.pack(b0 & 0xDF, (b1 & 0x80) | payload_type, osn, timestamp, ssrc)
    return b"".join((header, data[12:start], data[start + 2 : end]))


def wrap_rtx(packet: bytes, payload_type: int, sequence_number: int, ssrc: int) -> bytes:
    """RFC 4588: the RTX packet retransmitting ``packet`` (its padding is dropped)."""
    start, end = payload_bounds(packet)
    b0, b1, seq, timestamp, _ssrc = RTP_FIXED.unpack_from(packet)
    header = RTP_FIXED.pack(b0 & 0xDF, (b1 & 0x80) | payload_type, sequence_number, timestamp, ssrc)
    return b"".join((header, packet[12:start], _U16.pack(seq), packet[start:end]))


def padding_packet(
    payload_type: int, sequence_number: int, timestamp: int, ssrc: int, extensions: bytes, size: int
) -> bytes:
    """A packet with no payload and ``size`` octets (1-255) of padding (RFC 3550 §5.1): what a
    sender probes with on its RTX stream (RFC 4588 §4 leaves it without an OSN)."""
    if not 0 < size <= 255:
        raise ValueError(f"RTP padding is 1-255 octets, not {size}")
    b0 = 0xA0 | (0x10 if extensions else 0)
    header = RTP_FIXED.pack(b0, payload_type, sequence_number, timestamp, ssrc)
    return b"".join((header, extensions, bytes(size - 1), bytes((size,))))
