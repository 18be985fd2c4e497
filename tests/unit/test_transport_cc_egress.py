"""The C egress's transport-wide numbering and its matching of transport-cc feedback.

Wire format: draft-holmer-rmcat-transport-wide-cc-extensions-01 (§2 the header extension, §3.1
the feedback). Feedback messages here are written out by hand, chunk by chunk, so the parser is
checked against the draft's bytes rather than against our own encoder.
"""

from __future__ import annotations

import itertools
import struct
import time

import pytest

from sfu.bwe.feedback import FeedbackSummary, PacketGroup
from sfu.media.srtp import Egress
from sfu.rtp.header import build_extension_block, parse_extensions
from tests.unit.test_srtp import relayed, rtp

TCC = 5
BLOCK = build_extension_block([(1, b"3"), (TCC, bytes(2)), (3, bytes(3))])
NO_TCC = build_extension_block([(1, b"3")])


_seq = itertools.count()  # SRTP refuses to protect a sequence number twice


def send(egress: Egress, count: int, block: bytes = BLOCK, payload: int = 200) -> None:
    for _ in range(count):
        seq = next(_seq) & 0xFFFF
        egress.send_rewritten(rtp(0, b"\x42" * payload), 12, 96, seq, 0, 0x55, block, -1, b"")


def numbers(sent: list[bytes], rx: object, ext_id: int = TCC) -> list[int | None]:
    found = []
    for packet in sent:
        clear = rx.unprotect(packet)  # type: ignore[attr-defined]
        value = parse_extensions(clear).get(ext_id) if clear[0] & 0x10 else None
        found.append(None if value is None else struct.unpack("!H", value)[0])
    return found


def fci(base: int, count: int, reference: int, chunks: list[int], deltas: bytes) -> bytes:
    """base seq, status count, 24-bit reference time (64 ms units), feedback count 0."""
    head = struct.pack("!HHI", base, count, (reference & 0xFFFFFF) << 8)
    return head + b"".join(struct.pack("!H", c) for c in chunks) + deltas


def run(symbol: int, length: int) -> int:
    return (symbol << 13) | length


def one_bit(*symbols: int) -> int:
    value = 0x8000
    for i, s in enumerate(symbols):
        value |= s << (13 - i)
    return value


def two_bit(*symbols: int) -> int:
    value = 0xC000
    for i, s in enumerate(symbols):
        value |= s << (12 - 2 * i)
    return value


@pytest.fixture
def egress() -> tuple[Egress, list[bytes], object]:
    e, sent, rx = relayed("AEAD_AES_128_GCM")
    e.transport_cc_id = TCC
    return e, sent, rx


def test_packets_carrying_the_element_are_numbered_in_order(
    egress: tuple[Egress, list[bytes], object],
) -> None:
    e, sent, rx = egress
    send(e, 3)
    send(e, 1, NO_TCC)  # not numbered: the m-line did not negotiate it
    seq = next(_seq) & 0xFFFF
    e.send_vp8(rtp(9, b"\x90\x80\x05" + bytes(50)), 12, 96, seq, 0, 0x55, BLOCK, -1, b"", 3, 1, 1)
    whole = rtp(next(_seq) & 0xFFFF)[:12]
    whole = bytes([whole[0] | 0x10]) + whole[1:] + BLOCK + b"\x01" * 20
    e.send_rtp(whole)  # retransmissions and probes: whole packets
    e.send_rtcp(struct.pack("!BBHI", 0x80, 201, 1, 0x1234))
    assert numbers(sent[:-1], rx) == [0, 1, 2, None, 3, 4]
    assert e.transport_cc_sent == 5


def test_two_byte_form_and_an_id_not_negotiated() -> None:
    e, sent, rx = relayed("AES_CM_128_HMAC_SHA1_80")
    block = build_extension_block([(15, b"7"), (20, bytes(2))])
    e.transport_cc_id = 20
    send(e, 2, block)
    e.transport_cc_id = 0  # not negotiated: the zero goes out as it is
    send(e, 1, block)
    assert numbers(sent, rx, 20) == [0, 1, 0]
    with pytest.raises(ValueError, match="transport_cc_id"):
        e.transport_cc_id = 256


def test_feedback_counts_arrivals_and_losses(egress: tuple[Egress, list[bytes], object]) -> None:
    e, sent, _ = egress
    send(e, 10)
    size = len(sent[0])
    # 0-5 received (small deltas of 1 ms), 6 lost, 7 received late (large delta), 8-9 lost
    message = fci(
        0,
        10,
        1000,
        [two_bit(1, 1, 1, 1, 1, 1, 0), two_bit(2, 0, 0)],
        bytes([4] * 6) + struct.pack("!h", 40),
    )
    summary = e.transport_feedback(message)
    assert summary is not None
    parsed = FeedbackSummary.from_egress(summary)
    assert (parsed.received, parsed.lost, parsed.received_bytes) == (7, 3, 7 * size)
    assert parsed.first_arrival == pytest.approx(64.001)
    assert parsed.last_arrival == pytest.approx(64.016)  # 6 ms + 10 ms
    assert parsed.probes == ()


def test_packets_never_sent_or_forgotten_are_left_out(
    egress: tuple[Egress, list[bytes], object],
) -> None:
    e, _, _ = egress
    send(e, 3)
    # seqs 60000.. were never sent: neither received nor lost
    raw = e.transport_feedback(fci(60000, 4, 1, [run(1, 2), run(0, 2)], bytes([1, 1])))
    assert raw is not None
    assert FeedbackSummary.from_egress(raw).received == 0
    assert FeedbackSummary.from_egress(raw).lost == 0


@pytest.mark.parametrize(
    "message",
    [
        b"\x00\x00\x00",  # shorter than the fixed part
        fci(0, 5, 1, [], b""),  # chunks missing
        fci(0, 3, 1, [run(1, 3)], bytes([1, 1])),  # a receive delta missing
        fci(0, 2, 1, [run(3, 2)], b""),  # the reserved symbol
        fci(0, 2, 1, [two_bit(1, 3)], bytes([1])),
        fci(0, 2, 1, [run(1, 0), run(1, 2)], bytes([1, 1])),  # an empty run
    ],
)
def test_malformed_feedback_is_refused_and_counted(
    egress: tuple[Egress, list[bytes], object], message: bytes
) -> None:
    e, _, _ = egress
    send(e, 5)
    assert e.transport_feedback(message) is None
    assert (e.feedback_received, e.feedback_malformed) == (1, 1)


def test_groups_are_send_bursts_completed_by_the_next(
    egress: tuple[Egress, list[bytes], object],
) -> None:
    e, sent, _ = egress
    for _ in range(3):  # three bursts of 4 packets, 20 ms apart
        send(e, 4)
        time.sleep(0.02)
    size = len(sent[0])
    # arrivals: each burst's packets 1 ms apart, bursts 20 ms apart (deltas: 1,1,1,17,...)
    deltas = bytes([4, 4, 4, 4, 68, 4, 4, 4])
    first = e.transport_feedback(fci(0, 8, 10, [run(1, 8)], deltas))
    assert first is not None
    groups = [PacketGroup(*g) for g in FeedbackSummary.from_egress(first).groups]
    assert len(groups) == 1  # the second burst is still open: the next message may add to it
    assert groups[0].size == 4 * size
    assert groups[0].arrival_time == pytest.approx(10 * 0.064 + 0.004)
    second = e.transport_feedback(fci(8, 4, 10, [run(1, 4)], bytes([164, 4, 4, 4])))
    assert second is not None
    more = [PacketGroup(*g) for g in FeedbackSummary.from_egress(second).groups]
    assert len(more) == 1 and more[0].size == 4 * size
    assert 0.015 < more[0].send_time - groups[0].send_time < 0.2


def test_probe_cluster_packets_come_back_with_their_cluster(
    egress: tuple[Egress, list[bytes], object],
) -> None:
    e, _, _ = egress
    send(e, 2)
    e.probe_cluster = 7
    send(e, 3)
    e.probe_cluster = -1
    send(e, 1)
    raw = e.transport_feedback(fci(0, 6, 3, [run(1, 6)], bytes([4] * 6)))
    assert raw is not None
    probes = FeedbackSummary.from_egress(raw).probes
    assert [p.cluster for p in probes] == [7, 7, 7]
    assert probes[0].arrival_time == pytest.approx(3 * 0.064 + 0.003)


def test_sequence_numbers_and_reference_times_wrap(
    egress: tuple[Egress, list[bytes], object],
) -> None:
    e, _, _ = egress
    send(e, 65530, payload=0)  # numbered, to just before the wrap
    send(e, 12)  # 65530 .. 65541: wraps after 65535
    raw = e.transport_feedback(fci(65534, 6, 0xFFFFFF, [run(1, 6)], bytes([4] * 6)))
    assert raw is not None
    wrapped = FeedbackSummary.from_egress(raw)
    assert wrapped.received == 6
    # the next reference time, 0, follows 0xFFFFFF: 64 ms later, not 12 days earlier
    raw = e.transport_feedback(fci(4, 2, 0, [run(1, 2)], bytes([4, 4])))
    assert raw is not None
    later = FeedbackSummary.from_egress(raw)
    assert later.received == 2
    assert later.first_arrival is not None and wrapped.last_arrival is not None
    assert later.first_arrival - wrapped.last_arrival == pytest.approx(0.064 + 0.001 - 0.006)


def test_a_reference_time_walked_without_bound_starts_again(
    egress: tuple[Egress, list[bytes], object],
) -> None:
    """A hostile peer stepping its reference time ahead by half the 24-bit range each message
    would walk the unwrapped time until it overflows: it starts again from the raw value."""
    e, _, _ = egress
    send(e, 1)
    reference, latest = 0, 0.0
    for _ in range(300):  # 300 steps of 2^23 - 1 units: past 2^31 units (4 years)
        raw = e.transport_feedback(fci(0, 1, reference, [run(1, 1)], bytes([4])))
        assert raw is not None
        arrival = FeedbackSummary.from_egress(raw).first_arrival
        assert arrival is not None
        latest = max(latest, arrival)
        reference = (reference + 0x7FFFFF) & 0xFFFFFF
    assert latest <= 2**31 * 0.064 + 0x1000000 * 0.064  # never beyond the limit plus a wrap


def test_one_bit_status_vectors(egress: tuple[Egress, list[bytes], object]) -> None:
    e, _, _ = egress
    send(e, 14)
    raw = e.transport_feedback(fci(0, 14, 2, [one_bit(*[1, 0] * 7)], bytes([8] * 7)))
    assert raw is not None
    summary = FeedbackSummary.from_egress(raw)
    assert (summary.received, summary.lost) == (7, 7)
    assert summary.last_arrival == pytest.approx(2 * 0.064 + 0.014)


def test_min_delay_is_the_lowest_one_way_delay_of_what_arrived(
    egress: tuple[Egress, list[bytes], object],
) -> None:
    e, sent, _ = egress
    e.probe_cluster = 1  # probe packets come back with their own send and arrival times
    for _ in range(3):  # 20 ms apart, reported arriving 1 ms apart: the last waited least
        send(e, 1)
        time.sleep(0.02)
    send(e, 1)  # reported lost: no delay of its own
    raw = e.transport_feedback(fci(0, 4, 10, [two_bit(1, 1, 1, 0)], bytes([4, 4, 4])))
    assert raw is not None
    summary = FeedbackSummary.from_egress(raw)
    delays = [p.arrival_time - p.send_time for p in summary.probes]
    assert len(delays) == 3 and delays[0] - delays[2] > 0.035
    assert summary.min_delay == pytest.approx(min(delays), abs=1e-6)
    assert summary.first_size == len(sent[0])  # the first arrival's: the span carries the rest
    send(e, 1)
    nothing = e.transport_feedback(fci(4, 1, 10, [run(0, 1)], b""))
    assert nothing is not None
    assert FeedbackSummary.from_egress(nothing).min_delay is None
    assert FeedbackSummary.from_egress(nothing).first_size == 0


def rtcp_feedback(message: bytes, padding: int = 0, fmt: int = 15, kind: int = 205) -> bytes:
    """An RTPFB packet (RFC 4585 §6.1) around ``message`` (the FCI), with RFC 3550 padding."""
    body = struct.pack("!II", 0x1111, 0x2222) + message
    if padding:
        body += bytes(padding - 1) + bytes([padding])
    first = 0x80 | (0x20 if padding else 0) | fmt
    return struct.pack("!BBH", first, kind, len(body) // 4) + body


RECEIVED_4 = fci(0, 4, 1, [run(1, 4)], bytes([4] * 4)) + bytes(2)  # to a whole number of words
RR = struct.pack("!BBHI", 0x80, 201, 1, 0x1111)


@pytest.mark.parametrize(
    ("packet", "outcome"),
    [
        (rtcp_feedback(RECEIVED_4), 4),  # matched: four packets received
        (rtcp_feedback(RECEIVED_4, padding=4), 4),  # padding is not FCI
        (rtcp_feedback(RECEIVED_4 + bytes(4)), 4),  # trailing zero octets of the last word
        (rtcp_feedback(fci(0, 5, 1, [], b"")), None),  # malformed FCI: counted, None
        (RR + rtcp_feedback(RECEIVED_4), False),  # a compound: the caller parses it
        (rtcp_feedback(RECEIVED_4) + RR, False),
        (rtcp_feedback(RECEIVED_4, fmt=1), False),  # a NACK
        (rtcp_feedback(RECEIVED_4, kind=206), False),  # PSFB
        (rtcp_feedback(RECEIVED_4)[:-4], False),  # length says more than there is
        (rtcp_feedback(RECEIVED_4, padding=4)[:-1] + b"\x00", False),  # padding count 0
        (rtcp_feedback(RECEIVED_4, padding=4)[:-1] + b"\xff", False),  # more than the packet
        (b"\x8f\xcd\x00\x02" + bytes(8), None),  # no FCI at all: malformed
    ],
)
def test_a_lone_feedback_message_is_matched_and_anything_else_left_to_the_parser(
    egress: tuple[Egress, list[bytes], object], packet: bytes, outcome: int | bool | None
) -> None:
    e, _, _ = egress
    send(e, 4)
    raw = e.lone_transport_feedback(packet)
    if outcome is False or outcome is None:
        assert raw is outcome
    else:
        assert raw is not None and raw is not False
        assert FeedbackSummary.from_egress(raw).received == outcome
