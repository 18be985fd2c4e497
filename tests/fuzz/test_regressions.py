"""Defects the fuzzers found, each pinned by the smallest input that showed it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sfu.media import aiortc_bridge as bridge
from sfu.media.munger import RtpMunger
from sfu.media.nack import LossTracker
from sfu.rtp.codecs import is_keyframe
from sfu.rtp.vp8 import parse_descriptor
from signaling.tokens import TokenError, verify
from tests.fuzz.harnesses.sdp_apply import check_offer
from tests.fuzz.harnesses.tokens import KEYS, signed
from tests.unit.sdp_samples import CHROMIUM_OFFER

HS256 = b'{"alg":"HS256","kid":"k1"}'
CRASH_INGRESS = (
    "fff00a05002000000200000a05002000010200010a05002000010200020a05002000010200030a0500200001"
    "0200040a05002000010200050a0500200001020006a0050000000502001d0a050020000002001e0a05006767"
    "6767676767676767676767676767676767676767676767676767676767676767676767670001020a05002000"
    "010200070a05002000010200080a05002000010200f7f5fb0720000102000a0a050020000102000b0a050020"
    "000102000c0a050020000102000da0055a5a5a5a5a5a5a5a5a5a5a5a5a275a5a5a5a5a5a6767676767000102"
    "0a05002000010200070a05002000010200080a05002000010200f7f5fb0720000102000a0a05002000010200"
    "0b0a050020000102000c0a050020000102000d0014a00500000005020001020a05002000010200150a050020"
    "00010200160a05002000010200170a05002000010200180a05002000010200190a050020000102001a0a0500"
    "20000102001ba00500000005020001c80a050020000102001c0a050020000102001d0a0500202000010200f7"
    "f5fb0720000102000a0a050020000102000b0a050020000102000c0a050020000102000da0055a5a5a5a5a5a"
    "5a5a5a5a5a5a5a275a5a5a5a5a5a67676767670001020a05002000010200070a05002000010200080a050020"
    "00010200f7f5fb0720000102000a0a050020000102000b0a050020000102000c0a050020000102000da0055a"
    "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
    "5a5a5a5a5a5a5a5a5a5a5a5a5a5a05002000010200130a0500200001020014a00500000005020001020a0500"
    "2000010200150a05002000010200160a05002000010200170a05002000010200180a05002000010200190a05"
    "0020000102001a0a050020000102001ba00500000005020001020a050020000102001c0a050020000102001d"
    "0a050020000002001e0a05006767676767676767673a676767676767676767676767676767000002001e0a05"
    "0067676767676767676767676767676767676767676767676767676767676767676767676767676767670200"
    "370a0500200001020037a00500000005020001020a05002000010200380a05002000010200390a0500200001"
    "02003a0a050020000102003b"
)


def test_a_late_packet_after_a_drop_keeps_its_number_from_the_next_source() -> None:
    """Found by the streams target: packet 3 dropped while newest (a temporal layer not
    forwarded), packet 2 forwarded late (a retransmission) took the number after the newest
    one sent, which the munger did not count as sent; the next source's first packet (a
    keyframe's) was given that number again, and the subscriber dropped it as a duplicate."""
    munger = RtpMunger(100, 0)
    assert munger.forward(1, 0) == (100, 0)
    munger.drop(3)
    assert munger.forward(2, 0) == (101, 0)
    assert munger.source_seq(101) == 2  # and a NACK for it finds it
    munger.switch_source(500, 0, 1)
    assert munger.forward(500, 0) == (102, 1)


@pytest.mark.parametrize("now", [None, 1_700_000_000.0])
@pytest.mark.parametrize(
    "exp", ["NaN", "Infinity", "1e400", "1" + "0" * 400], ids=["NaN", "inf", "1e400", "10**400"]
)
def test_a_token_whose_expiry_is_not_a_finite_number_never_verifies(
    exp: str, now: float | None
) -> None:
    """Found by the tokens target: with a given time (``now``), exp NaN or Infinity passed
    the expiry check (every comparison with NaN is false) and the token never expired; an
    integer exp past float's range raised OverflowError out of verify(), with or without."""
    token = signed(HS256, b'{"sub":"a","room":"r","exp":%s}' % exp.encode())
    with pytest.raises(TokenError) as caught:
        verify(token, KEYS, now=now)
    assert caught.value.code == "token-invalid"


@pytest.mark.parametrize("exp", ['"soon"', "NaN", "Infinity", "[]"])
def test_a_well_signed_token_with_a_bad_expiry_is_not_called_forged(exp: str) -> None:
    """Found by the tokens target: PyJWT's "exp must be an integer" became "the token's
    signature does not verify", which sends whoever issued it after the wrong key."""
    token = signed(HS256, b'{"sub":"a","room":"r","exp":%s}' % exp.encode())
    with pytest.raises(TokenError) as caught:
        verify(token, KEYS)
    assert caught.value.code == "token-invalid"
    assert "signature" not in caught.value.message, caught.value.message


def _with_line_after(sdp: str, anchor: str, line: str) -> str:
    at = sdp.index(anchor) + len(anchor)
    return sdp[:at] + line + "\r\n" + sdp[at:]


def test_an_m_line_with_two_mids_is_refused_before_it_is_applied() -> None:
    """Found by the sdp_apply target: the checks read an m-line's first a=mid, aiortc its
    last; a second a=mid naming another m-line's passed the checks, and aiortc's
    setRemoteDescription then failed with AttributeError (reported to the client as "the
    server could not apply it"), leaving a peer connection whose close() raised too."""
    sdp = _with_line_after(CHROMIUM_OFFER, "a=mid:0\r\n", "a=mid:1")
    with pytest.raises(ValueError, match="more than one a=mid"):
        bridge.parse_sdp(sdp, "offer")
    check_offer(sdp)  # and nothing of it reaches aiortc


def test_a_second_v_line_is_refused_before_aiortc_reads_it() -> None:
    """Found by the sdp target: sdp_check looked at the first v= line only, aiortc reads each
    (int() of the last): "v=0" then "v=<garbage>" passed the checks and failed in aiortc's
    parser, reported as "the SDP could not be parsed" instead of what is wrong with it."""
    sdp = _with_line_after(CHROMIUM_OFFER, "v=0\r\n", "v=\u0600")
    with pytest.raises(ValueError, match="more than one v= line") as caught:
        bridge.parse_sdp(sdp, "offer")
    assert caught.value.__cause__ is None  # refused by our checks, not by aiortc's parser


@pytest.mark.parametrize("value", ["9 ", "9 IN IP4", "9  IN IP4 0.0.0.0"])
def test_an_rtcp_attribute_with_a_space_but_no_address_is_refused(value: str) -> None:
    """Found by the sdp target: "a=rtcp:9 " (a space, then nothing) passed the checks, which
    read an address only when one followed; aiortc reads one after any space and failed on its
    assertion, reported as "the SDP could not be parsed" instead of what is wrong."""
    sdp = CHROMIUM_OFFER.replace("a=rtcp:9 IN IP4 0.0.0.0\r\n", f"a=rtcp:{value}\r\n", 1)
    assert sdp != CHROMIUM_OFFER
    with pytest.raises(ValueError, match="a=rtcp") as caught:
        bridge.parse_sdp(sdp, "offer")
    assert caught.value.__cause__ is None


def test_a_media_packet_on_the_rtx_ssrc_is_not_unwrapped() -> None:
    """Found by the ingress target: a packet of the media payload type arriving on the SSRC
    latched as RTX was unwrapped all the same (RFC 4588's OSN taken from its payload), and its
    payload, two octets short, was forwarded to the subscriber."""
    from tests.fuzz.harnesses import ingress

    # the input the fuzzer kept: an SSRC first sending RTX (latched), then VP8 on it
    data = bytes.fromhex(CRASH_INGRESS)
    ingress.run(data)  # check_sent raises if the subscriber got a payload never sent


class _CountingDict(dict[int, Any]):
    """Counts how often the tracker starts iterating its missing numbers."""

    scans = 0

    def __iter__(self) -> Iterator[int]:
        self.scans += 1
        return super().__iter__()


def test_a_publisher_jumping_ahead_costs_one_scan_of_the_missing_per_packet() -> None:
    """Found while fuzzing the ingress path: sequence numbers jumping 512 ahead every other
    packet (the validator takes such a jump once the next packet confirms it) made the loss
    tracker forget its oldest entries one `next(iter(dict))` at a time; each rescans the
    entries deleted before it, so one packet cost 511 scans of a growing run of deleted
    slots (measured: ~600 us a packet, against ~1 us in order)."""
    tracker = LossTracker()
    counting = _CountingDict()
    tracker._missing = counting
    ext = 100_000
    skipped: list[int] = []
    for i in range(40):
        step = 512 if i % 2 == 0 else 1
        skipped += range(ext + 1, ext + step)
        ext += step
        counting.scans = 0
        tracker.on_packet(ext, 0.0)
        assert counting.scans <= 1, f"packet {i}: {counting.scans} scans"
    # what it keeps is what it kept before: the newest max_missing numbers missing
    assert list(counting) == skipped[-tracker.max_missing :]
    assert tracker.due(0.0, 0.1) == skipped[-tracker.max_missing :]


def test_a_vp8_keyframe_with_the_reserved_bit_set_is_a_keyframe() -> None:
    """Found by the vp8 target (the two VP8 parsers against each other): RFC 7741 §4.2 says
    receivers ignore R, parse_descriptor did, the keyframe test of non-simulcast tracks did
    not; a sender setting it had none of its keyframes seen (so no subscriber ever started)."""
    payload = bytes([0x18, 0x00, 0x00, 0x9D, 0x01, 0x2A]) + bytes(8)  # S, R; P clear
    descriptor = parse_descriptor(payload, 0, len(payload))
    assert descriptor is not None and descriptor.keyframe
    assert is_keyframe("VP8", payload)


def test_a_retransmission_with_csrcs_and_padding_on_an_unsignalled_rtx_ssrc_fills_its_hole() -> (
    None
):
    """Found by the ingress target as a failure of its own check, not of the server: a packet
    the harness sent as junk (8 CSRCs, padding, the RTX payload type, a new SSRC) was a valid
    RFC 4588 retransmission of a number missing since a jump; the server latched the SSRC as
    the track's RTX stream and forwarded the packet it carried under the number its place
    implies. The harness now counts what junk that parses carries as the publisher's."""
    from tests.fuzz.harnesses import ingress
    from tests.unit.media_doubles import vp8_packet

    connection, receiver, down_track, sink = ingress._setup()
    try:
        for seq in (0x14, 0x15, 0x36, 0x37):
            connection._on_rtp(vp8_packet(seq, keyframe=seq == 0x14), 100.0 + seq / 100)
        first = int.from_bytes(sink.packets[0][2:4], "big")
        assert len(sink.packets) == 4
        carried = bytes([0x10, 0x01, 0, 0]) + b"\x5a" * 21
        header = bytes([0xA8, 0x80 | 97]) + (0x2EFF).to_bytes(2, "big")
        header += (0xF07B0A05).to_bytes(4, "big") + (0x00200000).to_bytes(4, "big")
        rtx = header + bytes(32) + (0x20).to_bytes(2, "big") + carried + bytes(58) + b"\x3b"
        assert ingress.as_published(rtx)[1] == carried
        connection._on_rtp(rtx, 101.0)
        assert len(sink.packets) == 5
        recovered = sink.packets[-1]
        assert int.from_bytes(recovered[2:4], "big") == first + 0x20 - 0x14
        assert recovered[8:12] == ingress.SUBSCRIBER_SSRC.to_bytes(4, "big")
        ingress.check_sent(sink.packets[-1:], set(ingress.as_published(rtx)))
    finally:
        connection.remove_down_track(down_track)
        receiver.remove_down_track(down_track)
        connection.remove_receiver(receiver)
        receiver.close()


@pytest.mark.parametrize("value", ["FID\t1 2", "!\xe4\t)\xca\xd8", "FID 1\t)", ""])
def test_an_ssrc_group_is_split_as_aiortc_splits_it(value: str) -> None:
    """Found by the sdp target: a=ssrc-group's value was split on spaces, aiortc splits it on
    any whitespace; "<garbage>\\t<garbage>" was one odd semantics to the checks and a semantics
    and an SSRC that int() refuses to aiortc, reported as "the SDP could not be parsed"."""
    sdp = _with_line_after(CHROMIUM_OFFER, "a=mid:0\r\n", f"a=ssrc-group:{value}")
    if value == "FID\t1 2":  # well-formed to aiortc: accepted, as before
        bridge.parse_sdp(sdp, "offer")
        return
    with pytest.raises(ValueError, match="ssrc-group") as caught:
        bridge.parse_sdp(sdp, "offer")
    assert caught.value.__cause__ is None
