"""sfu.media.srtp against pylibsrtp's own API: it must fail loudly if the binding moves."""

from __future__ import annotations

import os
import struct

import pylibsrtp
import pytest
from pylibsrtp import _binding as srtp_binding

from sfu.media.srtp import EGRESS, HEADROOM, MAX_PACKET, SrtpContext

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
}


def sessions(profile: str) -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
    """An outbound and an inbound session sharing one key."""
    kind, key_length = PROFILES[profile]
    key = os.urandom(key_length)
    out = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=kind)
    into = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=kind)
    return pylibsrtp.Session(out), pylibsrtp.Session(into)


def rtp(seq: int, payload: bytes = b"\x42" * 200) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 0x1234) + payload


def rtcp_rr() -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, 0x1234)


def protect_in_place(context: SrtpContext, packet: bytes, rtcp: bool = False) -> bytes:
    EGRESS.view[HEADROOM : HEADROOM + len(packet)] = packet
    size = context.protect_rtcp(len(packet)) if rtcp else context.protect_rtp(len(packet))
    assert size > len(packet), "no authentication tag appended"
    return EGRESS.view[HEADROOM : HEADROOM + size].tobytes()


@pytest.mark.parametrize("profile", PROFILES)
def test_protected_in_place_is_what_pylibsrtp_accepts(profile: str) -> None:
    tx, rx = sessions(profile)
    context = SrtpContext(tx)
    for seq in range(1, 20):
        packet = rtp(seq)
        assert rx.unprotect(protect_in_place(context, packet)) == packet
    report = rtcp_rr()
    assert rx.unprotect_rtcp(protect_in_place(context, report, rtcp=True)) == report


@pytest.mark.parametrize("profile", PROFILES)
def test_unprotected_in_place_is_what_pylibsrtp_protected(profile: str) -> None:
    tx, rx = sessions(profile)
    context = SrtpContext(rx)
    for seq in range(1, 20):
        packet = rtp(seq)
        assert context.unprotect_rtp(tx.protect(packet)) == packet
    report = rtcp_rr()
    assert context.unprotect_rtcp(tx.protect_rtcp(report)) == report


def test_forged_replayed_and_oversize_packets_are_refused() -> None:
    tx, rx = sessions("AES_CM_128_HMAC_SHA1_80")
    context = SrtpContext(rx)
    protected = tx.protect(rtp(7))
    forged = protected[:-1] + bytes([protected[-1] ^ 1])
    assert context.unprotect_rtp(forged) is None
    assert context.unprotect_rtp(protected) == rtp(7)
    assert context.unprotect_rtp(protected) is None  # replay (RFC 3711 §3.3.2)
    assert context.unprotect_rtp(b"\x80" * (MAX_PACKET + 1)) is None
    assert context.unprotect_rtcp(b"\x80\xc9\x00\x01garbage") is None


def test_results_do_not_alias_the_shared_buffer() -> None:
    tx, rx = sessions("AEAD_AES_128_GCM")
    context = SrtpContext(rx)
    first = context.unprotect_rtp(tx.protect(rtp(1, b"\x01" * 100)))
    second = context.unprotect_rtp(tx.protect(rtp(2, b"\x02" * 100)))
    assert first == rtp(1, b"\x01" * 100)
    assert second == rtp(2, b"\x02" * 100)


def test_the_binding_still_has_what_we_call() -> None:
    binding = srtp_binding.lib
    for name in ("srtp_protect", "srtp_protect_rtcp", "srtp_unprotect", "srtp_unprotect_rtcp"):
        assert callable(getattr(binding, name)), name
    assert pylibsrtp.__version__ == "1.0.0", "re-check sfu/media/srtp.py against this version"
