"""The per-subscriber header-extension template equals a block built element by element."""

from __future__ import annotations

import pytest

from sfu.api import Kind
from sfu.media.downtrack import _ExtensionWriter
from sfu.media.layer import IngressPacket
from sfu.media.params import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_TRANSPORT_CC,
    Codec,
    MediaParams,
)
from sfu.rtp.header import build_extension_block, parse_extensions


def params(kind: Kind, mid: str, ids: dict[str, int]) -> MediaParams:
    codec = Codec(96, "VP8" if kind == "video" else "opus", 90000 if kind == "video" else 48000)
    return MediaParams(mid, kind, (codec,), ids, local_ssrc=1, local_rtx_ssrc=2)


def packet(abs_send_time: bytes, audio_level: bytes | None) -> IngressPacket:
    return IngressPacket(bytes(12), 1, 0, 12, 12, False, 0.0, abs_send_time, audio_level)


@pytest.mark.parametrize(
    ("kind", "mid", "ids", "ast", "level", "expected"),
    [
        (
            "video",
            "3",
            {URI_MID: 1, URI_ABS_SEND_TIME: 3},
            b"\x01\x02\x03",
            None,
            [(1, b"3"), (3, b"\x01\x02\x03")],
        ),
        (
            "video",
            "12",
            {URI_MID: 4, URI_ABS_SEND_TIME: 2},
            b"\xff\x00\x01",
            None,
            [(4, b"12"), (2, b"\xff\x00\x01")],
        ),
        ("video", "0", {URI_MID: 1}, b"\x01\x02\x03", None, [(1, b"0")]),  # no abs-send-time
        ("audio", "1", {URI_MID: 1, URI_AUDIO_LEVEL: 2}, b"", b"\x9a", [(1, b"1"), (2, b"\x9a")]),
        ("audio", "1", {URI_MID: 1, URI_AUDIO_LEVEL: 2}, b"", None, [(1, b"1")]),  # no level
        (
            "audio",
            "7",
            {URI_MID: 15, URI_AUDIO_LEVEL: 20},
            b"",
            b"\x05",
            [(15, b"7"), (20, b"\x05")],
        ),  # ids over 14: the two-byte form
        ("video", "0", {}, b"\x01\x02\x03", None, []),
        # the transport-wide sequence number: a zero the egress writes over, before the value
        (
            "video",
            "3",
            {URI_MID: 1, URI_ABS_SEND_TIME: 3, URI_TRANSPORT_CC: 5},
            b"\x01\x02\x03",
            None,
            [(1, b"3"), (5, b"\x00\x00"), (3, b"\x01\x02\x03")],
        ),
        (
            "audio",
            "1",
            {URI_MID: 1, URI_AUDIO_LEVEL: 2, URI_TRANSPORT_CC: 5},
            b"",
            b"\x9a",
            [(1, b"1"), (5, b"\x00\x00"), (2, b"\x9a")],
        ),
        ("audio", "1", {URI_MID: 1, URI_TRANSPORT_CC: 5}, b"", None, [(1, b"1"), (5, bytes(2))]),
        (
            "audio",
            "7",
            {URI_MID: 15, URI_AUDIO_LEVEL: 20, URI_TRANSPORT_CC: 16},
            b"",
            b"\x05",
            [(15, b"7"), (16, bytes(2)), (20, b"\x05")],
        ),
    ],
)
def test_template_matches_a_built_block(
    kind: Kind,
    mid: str,
    ids: dict[str, int],
    ast: bytes,
    level: bytes | None,
    expected: list[tuple[int, bytes]],
) -> None:
    writer = _ExtensionWriter(params(kind, mid, ids))
    block = writer.block(packet(ast, level))
    assert block == build_extension_block(expected)
    if expected:
        rtp = bytes([0x90]) + bytes(11) + block
        assert parse_extensions(rtp) == dict(expected)
