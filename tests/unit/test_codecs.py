from __future__ import annotations

import pytest

from sfu.rtp.codecs import is_keyframe

# (codec, payload hex, keyframe?)
CASES = [
    # --- VP8 (RFC 7741): descriptor, then the payload header whose bit 0 is P (0 = key frame)
    ("VP8", "10 50 00 00 9d 01 2a", True),  # S=1, PID=0, no extension
    ("VP8", "10 51 00 00", False),  # inter frame
    ("VP8", "00 50 00 00", False),  # S=0: not the start of the frame
    ("VP8", "11 50 00 00", False),  # PID=1: a later partition
    ("VP8", "30 50", True),  # N (non-reference) does not matter
    ("VP8", "90 80 05 50", True),  # X, I with 7-bit picture id
    ("VP8", "90 80 81 23 50", True),  # X, I with 15-bit picture id (M)
    ("VP8", "90 80 81 23 51", False),
    ("VP8", "90 40 07 50", True),  # X, L: TL0PICIDX
    ("VP8", "90 20 40 50", True),  # X, T: TID/Y/KEYIDX
    ("VP8", "90 10 20 50", True),  # X, K: TID/Y/KEYIDX
    ("VP8", "90 f0 81 23 07 40 50", True),  # X, I (M) L T K
    ("VP8", "90 f0 81 23 07 40 51", False),
    ("VP8", "90 f0 05 07 40 50", True),  # X, I (7 bit) L T K
    # reading the wrong byte as the payload header would call these keyframes
    ("VP8", "90 f0 81 22 07 40 51", False),
    ("VP8", "90 80 80 50 51", False),
    ("VP8", "", False),
    ("VP8", "10", False),  # no payload header
    ("VP8", "90", False),  # X without its byte
    ("VP8", "90 80", False),  # I without picture id
    ("VP8", "90 80 81", False),  # 15-bit picture id cut short
    ("VP8", "90 f0 81 23 07 40", False),  # descriptor only
    # --- H.264 (RFC 6184)
    ("H264", "65 88 84 00", True),  # IDR slice
    ("H264", "25 88", True),  # IDR with another NRI
    ("H264", "67 42 00 1f", True),  # SPS
    ("H264", "68 ce 3c 80", False),  # PPS
    ("H264", "41 9a 00", False),  # non-IDR slice
    ("H264", "06 05 ff", False),  # SEI
    ("H264", "18 0004 6742001f 0004 68ce3c80", True),  # STAP-A: SPS, PPS
    ("H264", "18 0002 0605 0003 658884", True),  # STAP-A: SEI, IDR
    ("H264", "18 0004 68ce3c80 0002 0605", False),  # STAP-A: PPS, SEI
    ("H264", "18 0000 0003 658884", True),  # STAP-A: an empty unit, then IDR
    ("H264", "18 00", False),  # STAP-A cut short
    ("H264", "18 0010 06", False),  # STAP-A whose unit runs past the end
    ("H264", "7c 85 88 84", True),  # FU-A start of IDR
    ("H264", "7c 87 42", True),  # FU-A start of SPS
    ("H264", "7c 05 88", False),  # FU-A middle of IDR
    ("H264", "7c 45 88", False),  # FU-A end of IDR
    ("H264", "7c 81 9a", False),  # FU-A start of a non-IDR slice
    ("H264", "7c", False),  # FU-A without its header
    ("H264", "19 0000", False),  # STAP-B: not handled
    ("H264", "", False),
    # --- VP9 (RFC 9628): I P L F B E V Z
    ("VP9", "08 00", True),  # B only
    ("VP9", "0c 00", True),  # B and E
    ("VP9", "48 00", False),  # P: inter-picture predicted
    ("VP9", "00 00", False),  # not the start of a frame
    ("VP9", "04 00", False),  # E only
    ("VP9", "aa 80 01 00 00 18 00", True),  # non-flexible: I (15 bit), L + TL0PICIDX, B, V
    ("VP9", "a8 05 00 00 83", True),  # non-flexible: I (7 bit), L + TL0PICIDX, B
    ("VP9", "e8 05 00 00 83", False),  # the same with P
    ("VP9", "98 81 23 83", True),  # flexible: I (15 bit), F, B
    ("VP9", "b8 81 23 00 83", True),  # flexible: I, L (no TL0PICIDX), F, B
    ("VP9", "d8 81 23 02 83", False),  # flexible with P and a P_DIFF
    ("VP9", "08", False),  # descriptor only
    ("VP9", "a8 80", False),  # 15-bit picture id cut short
    ("VP9", "a8 05 00", False),  # TL0PICIDX missing
    ("VP9", "", False),
    # --- anything else
    ("opus", "10 50", False),
    ("AV1", "10 50", False),
    ("", "65", False),
]


@pytest.mark.parametrize(("codec", "payload", "keyframe"), CASES)
def test_is_keyframe(codec: str, payload: str, keyframe: bool) -> None:
    assert is_keyframe(codec, bytes.fromhex(payload)) is keyframe


@pytest.mark.parametrize(("codec", "payload", "keyframe"), CASES)
def test_is_keyframe_memoryview_slice(codec: str, payload: str, keyframe: bool) -> None:
    # as the receiver calls it: a view of the payload inside the whole packet
    packet = b"\xff" * 12 + bytes.fromhex(payload) + b"\x00\x01"
    view = memoryview(packet)[12 : len(packet) - 2]
    assert is_keyframe(codec, view) is keyframe


@pytest.mark.parametrize(
    ("codec", "payload", "keyframe"),
    [
        ("vp8", "10 50", True),
        ("Vp8", "10 50", True),
        ("h264", "65 88", True),
        ("H264", "65 88", True),
        ("vp9", "08 00", True),
        ("VP9", "08 00", True),
    ],
)
def test_codec_names_are_case_insensitive(codec: str, payload: str, keyframe: bool) -> None:
    assert is_keyframe(codec, bytes.fromhex(payload)) is keyframe
