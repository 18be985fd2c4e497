"""Egress.send_vp8 (C) against sfu.rtp.header.rewrite + sfu.rtp.vp8.patch_descriptor (Python).

Through a relay egress with real pylibsrtp sessions, as tests/unit/test_srtp.py does: what the
C egress protects must unprotect to exactly what the Python reference makes.
"""

from __future__ import annotations

import itertools
import struct

import pytest

from sfu.media.srtp import MAX_PACKET
from sfu.rtp.header import build_extension_block, payload_bounds, rewrite
from sfu.rtp.vp8 import parse_descriptor, patch_descriptor
from tests.unit.test_srtp import PROFILES, TEMPLATE, relayed

# (picture id, TL0PICIDX, KEYIDX) to write: leave all, in range, beyond 7 bits, extremes
VALUES = [(-1, -1, -1), (0x4321, 0xAB, 0x15), (0x7F, 0, 0), (0x7FFF, 0xFF, 0x1F), (0x80, -1, 7)]


def descriptors() -> list[bytes]:
    """Every combination of I/L/T/K and M, with distinctive field values, whole and cut at
    every length; and descriptors without X."""
    found = [b"\x10", b"\x00", b"\x17", b"\x90\x00"]
    for i, ell, t, k, m in itertools.product((0, 1), repeat=5):
        if m and not i:
            continue
        x = (i << 7) | (ell << 6) | (t << 5) | (k << 4)
        full = bytes([0x90, x])
        if i:
            full += b"\xa5\x5a" if m else b"\x3c"
        if ell:
            full += b"\xc3"
        if t or k:
            full += b"\x6e"  # TID 1, Y, KEYIDX 14
        found += [full[:cut] for cut in range(1, len(full) + 1)]
    return found


def packets() -> list[tuple[bytes, int]]:
    """(incoming packet, payload start): each descriptor bare, followed by VP8 data, padded,
    and after a publisher's header extension."""
    found = []
    extension = build_extension_block([(1, b"0"), (3, b"\x01\x02\x03")])
    vp8_data = b"\x51\x02\x00" + b"\x77" * 40
    for d in descriptors():
        for tail, padding in ((b"", 0), (vp8_data, 0), (b"", 3), (b"\x51", 5)):
            b0 = 0xA0 if padding else 0x80
            pad = bytes(padding - 1) + bytes([padding]) if padding else b""
            header = struct.pack("!BBHII", b0, 0x80 | 96, 7, 9000, 0x1111)
            found.append((header + d + tail + pad, 12))
            header = struct.pack("!BBHII", b0 | 0x10, 96, 8, 9000, 0x1111) + extension
            found.append((header + d + tail + pad, 12 + len(extension)))
    return found


@pytest.mark.parametrize("profile", PROFILES)
def test_c_patches_as_the_python_reference(profile: str) -> None:
    egress, sent, rx = relayed(profile)
    cases = [(p, v) for p in packets() for v in VALUES]
    seq = 0
    for (data, start), (picture_id, tl0, keyidx) in cases:
        for extensions, value_at, value in ((TEMPLATE, 7, b"\xaa\xbb\xcc"), (b"", -1, b"")):
            seq += 1  # the receiver's replay check wants each index once
            args = (data, start, 100, seq, 5678, 0xBEEF, extensions, value_at, value)
            egress.send_vp8(*args, picture_id, tl0, keyidx)
            expected = patch_descriptor(
                rewrite(*args), 12 + len(extensions), picture_id, tl0, keyidx
            )
            assert rx.unprotect(sent[-1]) == expected, (data.hex(), picture_id, tl0, keyidx)
    assert egress.packets_sent == len(sent) == 2 * len(cases)
    assert egress.send_errors == 0


def test_the_fields_land_where_the_parser_reads_them() -> None:
    egress, sent, rx = relayed("AEAD_AES_128_GCM")
    changed = 0
    for seq, (data, start) in enumerate(packets()):
        egress.send_vp8(data, start, 100, seq, 2, 3, TEMPLATE, -1, b"", 0x4321, 0xAB, 0x15)
        out = rx.unprotect(sent[-1])
        before = parse_descriptor(data, *payload_bounds(data))
        after = parse_descriptor(out, *payload_bounds(out))
        if before is None:  # only VP8 data can tell a descriptor: checked by the test above
            continue
        assert after is not None
        assert after.picture_id == (
            -1 if before.picture_id < 0 else 0x4321 if before.long_picture_id else 0x21
        )
        assert after.long_picture_id == before.long_picture_id
        assert after.tl0picidx == (-1 if before.tl0picidx < 0 else 0xAB)
        assert after.keyidx == (-1 if before.keyidx < 0 else 0x15)
        # everything else as it came
        assert (after.tid, after.layer_sync, after.size, after.keyframe) == (
            before.tid,
            before.layer_sync,
            before.size,
            before.keyframe,
        )
        assert payload_bounds(out)[0] == 12 + len(TEMPLATE)
        assert out[12 + len(TEMPLATE) + after.size :] == data[start + before.size :]
        changed += before.picture_id >= 0
    assert changed > 50


def test_send_rewritten_is_send_vp8_leaving_every_field() -> None:
    egress, sent, rx = relayed("AES_CM_128_HMAC_SHA1_80")
    for n, (data, start) in enumerate(packets()[:200]):
        rest = (2, 3, TEMPLATE, 7, b"\xaa\xbb\xcc")
        args = (data, start, 100, 2 * n, *rest)
        egress.send_rewritten(*args)
        egress.send_vp8(data, start, 100, 2 * n + 1, *rest, -1, -1, -1)
        first, second = rx.unprotect(sent[-2]), rx.unprotect(sent[-1])
        assert first == rewrite(*args)
        assert second == first[:2] + struct.pack("!H", 2 * n + 1) + first[4:]


def test_hostile_sizes_are_counted_not_sent() -> None:
    egress, sent, _rx = relayed("AEAD_AES_128_GCM")
    header = struct.pack("!BBHII", 0x80, 96, 1, 2, 3)
    data = header + b"\x90\xe0\x80" + bytes(MAX_PACKET)  # 15-bit picture id cut by the end
    egress.send_vp8(data, 12, 100, 1, 2, 3, b"", -1, b"", 5, 5, 5)  # too large
    at = len(TEMPLATE) - 1  # the value would run past the block
    egress.send_vp8(header + b"\x90\xe0", 12, 100, 1, 2, 3, TEMPLATE, at, b"\x01\x02", 1, 1, 1)
    assert (egress.send_errors, len(sent)) == (2, 0)
    egress.send_vp8(header, 12, 100, 1, 2, 3, b"", -1, b"", 5, 5, 5)  # no payload at all
    padded = struct.pack("!BBHII", 0xA0, 96, 1, 2, 3)
    egress.send_vp8(padded, 12, 100, 2, 2, 3, b"", -1, b"", 5, 5, 5)  # padding bit, no payload
    assert (egress.send_errors, len(sent)) == (2, 2)


@pytest.mark.parametrize(
    ("picture_id", "tl0", "keyidx"),
    [(0x8000, 0, 0), (-2, 0, 0), (0, 0x100, 0), (0, -2, 0), (0, 0, 0x20), (0, 0, -2)],
)
def test_values_out_of_range_are_refused(picture_id: int, tl0: int, keyidx: int) -> None:
    egress, sent, _rx = relayed("AEAD_AES_128_GCM")
    data = struct.pack("!BBHII", 0x80, 96, 1, 2, 3) + b"\x90\xe0\x81\x23\x07\x40\x51"
    with pytest.raises(ValueError, match="out of range"):
        egress.send_vp8(data, 12, 100, 1, 2, 3, b"", -1, b"", picture_id, tl0, keyidx)
    assert not sent


def test_wrong_arguments_are_type_errors() -> None:
    egress, sent, _rx = relayed("AEAD_AES_128_GCM")
    data = struct.pack("!BBHII", 0x80, 96, 1, 2, 3) + b"\x10\x50"
    with pytest.raises(TypeError, match="send_vp8"):
        egress.send_vp8(data, 12, 100, 1, 2, 3, b"", -1, b"")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        egress.send_vp8(data, 12, 100, 1, 2, 3, b"", -1, b"", "1", 0, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be bytes"):
        egress.send_vp8(bytearray(data), 12, 100, 1, 2, 3, b"", -1, b"", 1, 0, 0)  # type: ignore[arg-type]
    assert not sent
