"""sfu.media.srtp and its C egress against pylibsrtp's own API and sfu.rtp.header.rewrite.

It must fail loudly if the binding moves: the C module calls libsrtp by the addresses
sfu/media/srtp.py reads out of pylibsrtp's cffi binding.
"""

from __future__ import annotations

import os
import random
import socket
import struct

import pylibsrtp
import pytest
from pylibsrtp import _binding as srtp_binding

from sfu.media.srtp import MAX_PACKET, Egress, forget_stream, srtp_session
from sfu.rtp.header import build_extension_block, rewrite

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
}
MID = build_extension_block([(1, b"3")])
TEMPLATE = build_extension_block([(1, b"3"), (3, bytes(3))])  # mid + abs-send-time
TWO_BYTE = build_extension_block([(15, b"7"), (20, bytes(1))])  # ids over 14


def sessions(profile: str) -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
    """An outbound and an inbound session sharing one key."""
    kind, key_length = PROFILES[profile]
    key = os.urandom(key_length)
    out = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=kind)
    into = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=kind)
    return pylibsrtp.Session(out), pylibsrtp.Session(into)


def rtp(seq: int, payload: bytes = b"\x42" * 200, b0: int = 0x80, marker: int = 0) -> bytes:
    return struct.pack("!BBHII", b0, marker | 96, seq, seq * 3000, 0x1234) + payload


def rtcp_rr() -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, 0x1234)


def relayed(profile: str) -> tuple[Egress, list[bytes], pylibsrtp.Session]:
    """An egress without a socket: what it would send is appended to a list."""
    tx, rx = sessions(profile)
    sent: list[bytes] = []
    return Egress(srtp_session(tx), -1, "127.0.0.1", 9, sent.append), sent, rx


# an incoming packet with a one-byte extension (mid "0" + abs-send-time), as a publisher sends it
EXTENDED = (
    struct.pack("!BBHII", 0x90, 0x80 | 96, 7, 9000, 0x1111)
    + build_extension_block([(1, b"0"), (3, b"\x01\x02\x03")])
    + b"\x55" * 300
)
PADDED = struct.pack("!BBHII", 0xA0, 96, 8, 9000, 0x1111) + b"\x66" * 97 + b"\x00\x00\x03"

REWRITES = [
    # data, payload_start, payload type, seq, timestamp, ssrc, extensions, value_at, value
    (rtp(1), 12, 100, 500, 123, 0xBEEF, MID, -1, b""),
    (rtp(2, marker=0x80), 12, 101, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, b"", -1, b""),
    (EXTENDED, 24, 100, 1, 2, 3, TEMPLATE, 7, b"\xaa\xbb\xcc"),
    (EXTENDED, 24, 100, 1, 2, 3, MID, -1, b"\xaa\xbb\xcc"),  # value ignored without value_at
    (EXTENDED, 24, 100, 1, 2, 3, b"", -1, b""),  # extensions dropped: X cleared
    (PADDED, 12, 100, 9, 10, 11, TWO_BYTE, 9, b"\x05"),  # padding kept, P bit kept
]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("case", range(len(REWRITES)))
def test_rewritten_packets_are_what_the_reference_makes(profile: str, case: int) -> None:
    egress, sent, rx = relayed(profile)
    args = REWRITES[case]
    egress.send_rewritten(*args)
    assert len(sent) == 1
    assert rx.unprotect(sent[0]) == rewrite(*args)
    assert (egress.packets_sent, egress.bytes_sent, egress.send_errors) == (1, len(sent[0]), 0)


def test_a_template_value_lands_where_parse_finds_it() -> None:
    egress, sent, rx = relayed("AEAD_AES_128_GCM")
    egress.send_rewritten(EXTENDED, 24, 100, 1, 2, 3, TEMPLATE, 7, b"\xaa\xbb\xcc")
    packet = rx.unprotect(sent[0])
    assert packet[12 : 12 + len(TEMPLATE)] == build_extension_block(
        [(1, b"3"), (3, b"\xaa\xbb\xcc")]
    )
    assert packet[len(TEMPLATE) + 12 :] == EXTENDED[24:]


@pytest.mark.parametrize("profile", PROFILES)
def test_whole_packets_are_protected_as_pylibsrtp_would_accept(profile: str) -> None:
    egress, sent, rx = relayed(profile)
    for seq in range(1, 20):
        egress.send_rtp(rtp(seq))
    egress.send_rtcp(rtcp_rr())
    assert [rx.unprotect(p) for p in sent[:-1]] == [rtp(seq) for seq in range(1, 20)]
    assert rx.unprotect_rtcp(sent[-1]) == rtcp_rr()


def test_sent_through_a_socket_descriptor_to_the_address() -> None:
    tx, rx = sessions("AES_CM_128_HMAC_SHA1_80")
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
    ):
        sender.bind(("127.0.0.1", 0))
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        port = receiver.getsockname()[1]
        egress = Egress(srtp_session(tx), os.dup(sender.fileno()), "127.0.0.1", port, None)
        egress.send_rewritten(*REWRITES[2])
        data, addr = receiver.recvfrom(4096)
        assert addr == sender.getsockname()
        assert rx.unprotect(data) == rewrite(*REWRITES[2])
        egress.close()
        egress.send_rewritten(*REWRITES[2])  # closed: a no-op
        assert egress.packets_sent == 1


@pytest.mark.parametrize("profile", PROFILES)
def test_unprotected_is_what_pylibsrtp_protected(profile: str) -> None:
    tx, rx = sessions(profile)
    session = srtp_session(rx)
    for seq in range(1, 20):
        packet = rtp(seq)
        assert session.unprotect_rtp(tx.protect(packet)) == packet
    report = rtcp_rr()
    assert session.unprotect_rtcp(tx.protect_rtcp(report)) == report


def test_forgotten_streams_are_freed_and_start_again() -> None:
    tx, rx = sessions("AEAD_AES_128_GCM")
    session = srtp_session(rx)

    def on(ssrc: int, seq: int) -> bytes:
        return rtp(seq)[:8] + struct.pack("!I", ssrc) + rtp(seq)[12:]

    for ssrc in (0x1111, 0x2222):
        assert session.unprotect_rtp(tx.protect(on(ssrc, 1))) == on(ssrc, 1)
    assert forget_stream(rx, 0x1111)
    assert not forget_stream(rx, 0x1111)  # nothing kept for it any more
    assert not forget_stream(rx, 0x3333)  # never seen
    # the other stream is untouched, and the forgotten one starts afresh
    assert session.unprotect_rtp(tx.protect(on(0x2222, 2))) == on(0x2222, 2)
    assert session.unprotect_rtp(tx.protect(on(0x1111, 2))) == on(0x1111, 2)
    assert forget_stream(rx, 0x1111)


def test_forged_replayed_and_oversize_packets_are_refused() -> None:
    tx, rx = sessions("AES_CM_128_HMAC_SHA1_80")
    session = srtp_session(rx)
    protected = tx.protect(rtp(7))
    forged = protected[:-1] + bytes([protected[-1] ^ 1])
    assert session.unprotect_rtp(forged) is None
    assert session.unprotect_rtp(protected) == rtp(7)
    assert session.unprotect_rtp(protected) is None  # replay (RFC 3711 §3.3.2)
    assert session.unprotect_rtp(b"\x80" * (MAX_PACKET + 1)) is None
    assert session.unprotect_rtp(b"\x80") is None  # shorter than a header
    assert session.unprotect_rtcp(b"\x80\xc9\x00\x01garbage") is None


def test_the_input_is_never_modified() -> None:
    tx, rx = sessions("AEAD_AES_128_GCM")
    protected = tx.protect(rtp(1))
    kept = bytes(protected)
    assert srtp_session(rx).unprotect_rtp(protected) == rtp(1)
    assert protected == kept


def test_bad_arguments_raise_and_oversize_packets_are_counted() -> None:
    egress, sent, _ = relayed("AES_CM_128_HMAC_SHA1_80")
    with pytest.raises(TypeError):
        egress.send_rewritten(bytearray(rtp(1)), 12, 100, 1, 2, 3, MID, -1, b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        egress.send_rewritten(rtp(1), 12, 100, 1, 2, 3, MID, -1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        egress.send_rewritten(rtp(1), 12, 128, 1, 2, 3, MID, -1, b"")  # payload type > 127
    with pytest.raises(ValueError):
        egress.send_rewritten(rtp(1), 300, 100, 1, 2, 3, MID, -1, b"")  # past the packet
    egress.send_rewritten(rtp(1, b"\x00" * MAX_PACKET), 12, 100, 1, 2, 3, MID, -1, b"")
    egress.send_rewritten(rtp(1), 12, 100, 1, 2, 3, MID, 7, b"\x01\x02\x03")  # past the block
    egress.send_rtp(b"\x80" * (MAX_PACKET + 1))
    assert (sent, egress.send_errors) == ([], 3)
    with pytest.raises(ValueError):
        Egress(srtp_session(sessions("AEAD_AES_128_GCM")[0]), -1, "not-an-ip", 9, sent.append)
    with pytest.raises(ValueError):
        Egress(srtp_session(sessions("AEAD_AES_128_GCM")[0]), -1, "127.0.0.1", 9, None)


def test_the_binding_still_has_what_we_call() -> None:
    binding = srtp_binding.lib
    for name in ("srtp_protect", "srtp_protect_rtcp", "srtp_unprotect", "srtp_unprotect_rtcp"):
        function = srtp_binding.ffi.addressof(binding, name)
        # the C module calls them as int (*)(srtp_t, void *, int *) (libsrtp 2)
        assert srtp_binding.ffi.typeof(function).cname == (
            "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"
        ), name
    assert pylibsrtp.__version__ == "1.0.0", "re-check sfu/media/srtp.py against this version"


def test_random_packets_match_the_reference() -> None:
    """Many shapes at once: CSRCs, extensions, padding, empty payloads, every header value."""
    rng = random.Random(7)
    egress, sent, rx = relayed("AEAD_AES_128_GCM")
    blocks = [b"", MID, TEMPLATE, TWO_BYTE, build_extension_block([(2, bytes(16))] * 3)]
    for seq in range(500):
        csrcs = rng.randrange(3)
        padding = rng.randrange(4)
        payload = rng.randbytes(rng.randrange(0, 1200))
        b0 = 0x80 | csrcs | (0x20 if padding else 0)
        header = struct.pack("!BBHII", b0, rng.choice((0, 0x80)) | 96, seq, 0, 0x1234)
        data = header + bytes(4 * csrcs) + payload
        if padding:
            data += bytes(padding - 1) + bytes([padding])
        block = rng.choice(blocks)
        value_at, value = -1, b""
        if block and rng.random() < 0.5:
            value = rng.randbytes(rng.randrange(1, 4))
            value_at = rng.randrange(4, len(block) - len(value) + 1)
        args = (
            data,
            12 + 4 * csrcs,
            rng.randrange(128),
            rng.randrange(1 << 16),
            rng.randrange(1 << 32),
            rng.randrange(1 << 32),
            block,
            value_at,
            value,
        )
        egress.send_rewritten(*args)
        assert rx.unprotect(sent[-1]) == rewrite(*args), args
    assert egress.send_errors == 0
