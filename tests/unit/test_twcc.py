"""Transport-cc feedback (sfu.rtp.twcc): the FCI laid out by hand from the draft's figures, round
trips, the receive side's message building and the RTP header extension lookup."""

from __future__ import annotations

import random
import struct

import pytest

from sfu.bwe.feedback import FeedbackSummary
from sfu.media.srtp import Egress
from sfu.rtp.header import build_extension_block
from sfu.rtp.rtcp import parse_compound
from sfu.rtp.twcc import (
    FeedbackBuilder,
    FeedbackPackets,
    TransportFeedback,
    decode,
    encode,
    transport_sequence,
)
from tests.unit.test_srtp import relayed, rtp

H = bytes.fromhex
R = 256  # ticks (250 µs) per reference time unit (64 ms)

# (base seq, fb count, arrivals in ticks or None) -> FCI; the bytes laid out by hand (§3.1)
ENCODED: list[tuple[str, int, int, list[int | None], str]] = [
    (
        "three small deltas: one run length chunk (T=0, S=01, length 3)",
        100,
        0,
        [2 * R + 4, 2 * R + 5, 2 * R + 260],
        "0064 0003 000002 00  2003  04 01 ff",
    ),
    (
        "a lost packet between small deltas: one-bit vector (1 0 1, then padding bits)",
        7,
        1,
        [R, None, R + 1],
        "0007 0003 000001 01  a800  00 01",
    ),
    (
        "a delta over 63.75 ms: two-bit vector (01 10), a 2-byte delta",
        7,
        2,
        [R, R + 256],
        "0007 0002 000001 02  d800  00 0100",
    ),
    (
        "reordered: a negative delta is large (01 10 01)",
        0,
        3,
        [R + 10, R + 6, R + 7],
        "0000 0003 000001 03  d900  0a fffc 01",
    ),
    (
        "30 lost between two: a vector, a run length chunk of S=00 (17), one of S=01 (1)",
        65530,
        255,
        [R, *([None] * 30), R + 1],
        "fffa 0020 000001 ff  a000 0011 2001  00 01",
    ),
    (
        "14 small deltas: run length chunk",
        1,
        0,
        list(range(R, R + 14)),
        "0001 000e 000001 00  200e  00" + " 01" * 13,
    ),
    (
        "a run shorter than 14 then a change: one-bit vector of 14",
        1,
        0,
        [R, R, R, None, *range(R, R + 11)],
        "0001 000f 000001 00  bbff 2001  00 00 00 00" + " 01" * 10,
    ),
    ("tick 0 is reference time 0", 0, 0, [0], "0000 0001 000000 00  2001  00"),
    ("a negative arrival: reference -1", 0, 0, [-R + 3], "0000 0001 ffffff 00  2001  03"),
]


@pytest.mark.parametrize(
    ("name", "base", "count", "arrivals", "fci"), ENCODED, ids=[e[0] for e in ENCODED]
)
def test_encode_and_decode(
    name: str, base: int, count: int, arrivals: list[int | None], fci: str
) -> None:
    data = H(fci)
    assert encode(base, count, arrivals) == data
    decoded = decode(data)
    expected = [
        ((base + i) & 0xFFFF, None if t is None else t * 250) for i, t in enumerate(arrivals)
    ]
    assert decoded.packets == expected
    assert decoded.base_seq == base
    assert decoded.fb_count == count


@pytest.mark.parametrize(
    ("fci", "decoded"),
    [
        # a run longer than the count is cut to it; trailing zero padding is allowed
        ("0005 0002 000000 00  2010  01 02 0000", FeedbackPackets(5, 0, 0, [(5, 250), (6, 750)])),
        # two-bit vector with a lost packet (00) and padding symbols past the count
        ("0005 0002 000000 00  c400  05", FeedbackPackets(5, 0, 0, [(5, None), (6, 1250)])),
        # the largest reference time: 2^23 - 1
        ("0000 0001 7fffff 00  2001  00", FeedbackPackets(0, 0x7FFFFF, 0, [(0, 0x7FFFFF * 64000)])),
        # only lost packets (a two-bit vector of 00s): valid, though a builder never sends it
        ("0000 0001 000000 00  c000", FeedbackPackets(0, 0, 0, [(0, None)])),
    ],
)
def test_decode_cases(fci: str, decoded: FeedbackPackets) -> None:
    assert decode(H(fci)) == decoded


@pytest.mark.parametrize(
    ("fci", "message"),
    [
        ("", "truncated: needs 8 bytes, got 0"),
        ("0001 0001 000000", "truncated: needs 8 bytes, got 7"),
        ("0001 0000 000000 00 2001 00", "reports no packets"),
        ("0001 0003 000000 00 2001 00", "1 of 3 packet statuses before its end"),
        ("0001 0001 000000 00 6001 00", "run length chunk at byte 8: status 3"),
        ("0001 0001 000000 00 2000 00", "run length chunk at byte 8: length 0"),
        ("0001 0001 000000 00 f000 00", "vector chunk at byte 8: status 3"),
        ("0001 0002 000000 00 2002 00", "receive delta of sequence number 2 is past its end"),
        ("0001 0001 000000 00 4001 00", "receive delta of sequence number 1 is past its end"),
        ("0001 0001 000000 00 2001 00 00000000", "4 bytes after its last delta"),
    ],
)
def test_decode_malformed(fci: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(H(fci))


@pytest.mark.parametrize(
    ("arrivals", "message"),
    [
        ([], "1 to 65535 packets, not 0"),
        ([None] * 65536, "1 to 65535 packets, not 65536"),
        ([None, None], "at least one received packet"),
        ([0, 0x8000], "receive delta of 8192000 µs exceeds 16 bits"),
        ([0x8000, -1], "receive delta of -8192250 µs exceeds 16 bits"),
    ],
)
def test_encode_refuses(arrivals: list[int | None], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(0, 0, arrivals)


@pytest.mark.parametrize("seed", range(8))
def test_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    t = rng.randrange(-(2**20), 2**20)
    arrivals: list[int | None] = []
    for _ in range(rng.randrange(1, 3000)):
        if rng.random() < 0.2:
            arrivals.append(None)
            continue
        t += rng.choice((0, 1, 3, 40, 255, 256, 300, 5000, -1, -200, -32768, 32767))
        arrivals.append(t)
    if all(a is None for a in arrivals):
        arrivals.append(t)
    base = rng.randrange(65536)
    decoded = decode(encode(base, seed, arrivals))
    assert decoded.packets == [
        ((base + i) & 0xFFFF, None if a is None else a * 250) for i, a in enumerate(arrivals)
    ]


def test_transport_feedback_in_a_compound() -> None:
    feedback = TransportFeedback(0x11, 0x22, encode(9, 0, [R, None, R + 1]))
    (parsed,) = parse_compound(bytes(feedback))
    assert parsed == feedback
    assert len(bytes(feedback)) % 4 == 0


# --- the receive side ---


def _decoded(messages: list[TransportFeedback]) -> list[tuple[int, int | None]]:
    return [p for m in messages for p in decode(m.fci).packets]


def _ticks(arrival: float, origin: float) -> int:
    return round((arrival - origin) * 1e6 / 250) * 250


def test_builder_reports_each_packet_once_with_its_arrival() -> None:
    builder = FeedbackBuilder(0xAB, 0xCD)
    t0 = 1000.0
    times = {10: t0, 11: t0 + 0.0012, 13: t0 + 0.0031, 12: t0 + 0.0040}
    for seq, t in times.items():
        builder.record(seq, t)
    builder.record(11, t0 + 0.009)  # a duplicate keeps the first arrival
    (message,) = builder.build()
    assert (message.sender_ssrc, message.media_ssrc) == (0xAB, 0xCD)
    assert _decoded([message]) == [(s, _ticks(times[s], t0)) for s in (10, 11, 12, 13)]
    assert builder.build() == []
    builder.record(12, t0 + 0.05)  # already reported: not again
    builder.record(16, t0 + 0.06)
    (second,) = builder.build()
    assert _decoded([second]) == [(14, None), (15, None), (16, _ticks(t0 + 0.06, t0))]
    assert [decode(m.fci).fb_count for m in (message, second)] == [0, 1]
    assert (builder.recorded, builder.messages) == (7, 2)


def test_builder_wraps_around_65535() -> None:
    builder = FeedbackBuilder(1)
    seqs = [65533, 65534, 65535, 0, 1, 2]
    for i, seq in enumerate(seqs[:4]):
        builder.record(seq, 5.0 + i * 0.001)
    first = builder.build()
    for i, seq in enumerate(seqs[4:], start=4):
        builder.record(seq, 5.0 + i * 0.001)
    second = builder.build()
    assert [decode(m.fci).base_seq for m in first + second] == [65533, 1]
    assert [s for s, _ in _decoded(first + second)] == seqs
    assert all(t is not None for _, t in _decoded(first + second))


def test_builder_late_packet_across_the_wrap_is_dropped() -> None:
    builder = FeedbackBuilder(1)
    builder.record(0, 1.0)
    builder.record(2, 1.001)
    builder.build()
    builder.record(65535, 1.002)  # older than anything reported: dropped
    builder.record(1, 1.003)  # reported lost in the first message: not again
    builder.record(3, 1.004)
    assert _decoded(builder.build()) == [(3, _ticks(1.004, 1.0))]


@pytest.mark.parametrize(
    ("name", "seqs", "times", "bases"),
    [
        # 10 s between two packets: a delta does not fit 16 bits of 250 µs (8.19 s)
        ("delta", [0, 1, 2], [0.0, 0.001, 10.0], [0, 2]),
        ("negative delta", [0, 1, 2], [10.0, 10.001, 0.0], [0, 2]),
        # 90000 - 0 + 1 statuses exceed 65535 (unwrapped: 0, 30000, 60000, 90000); the second
        # message starts right after the first: 60001 (lost) to 90000
        ("status count", [0, 30000, 60000, 90000 & 0xFFFF], [0.0, 0.01, 0.02, 0.03], [0, 60001]),
    ],
)
def test_builder_splits_messages(
    name: str, seqs: list[int], times: list[float], bases: list[int]
) -> None:
    builder = FeedbackBuilder(1)
    for seq, t in zip(seqs, times, strict=True):
        builder.record(seq, t)
    messages = builder.build()
    assert [decode(m.fci).base_seq for m in messages] == bases
    received = [(s, t) for s, t in _decoded(messages) if t is not None]
    assert received == [(s, _ticks(t, times[0])) for s, t in zip(seqs, times, strict=True)]


@pytest.mark.parametrize(
    ("name", "step", "loss", "max_size"),
    [
        ("large deltas", 0.07, 0.0, 1200),
        ("small deltas and loss", 0.0005, 0.3, 1200),
        ("a tiny limit", 0.001, 0.1, 100),
    ],
)
def test_builder_splits_to_the_size_limit(
    name: str, step: float, loss: float, max_size: int
) -> None:
    rng = random.Random(1)
    builder = FeedbackBuilder(1, max_size=max_size)
    sent = range(65000, 65000 + 3000)  # across the wrap
    arrived = {s: 2.0 + i * step for i, s in enumerate(sent) if rng.random() >= loss}
    for seq, t in arrived.items():
        builder.record(seq & 0xFFFF, t)
    messages = builder.build()
    assert len(messages) > 1
    assert all(len(bytes(m)) <= max_size for m in messages)
    assert [decode(m.fci).fb_count for m in messages] == list(range(len(messages)))
    received = {s: t for s, t in _decoded(messages) if t is not None}
    origin = next(iter(arrived.values()))
    assert received == {s & 0xFFFF: _ticks(t, origin) for s, t in arrived.items()}
    # every number from the first to the last that arrived, once, the lost ones as lost
    reported = [s for s, _ in _decoded(messages)]
    assert reported == [s & 0xFFFF for s in range(min(arrived), max(arrived) + 1)]


def test_builder_fb_count_wraps() -> None:
    builder = FeedbackBuilder(1)
    counts = []
    for i in range(258):
        builder.record(i, i * 0.01)
        counts += [decode(m.fci).fb_count for m in builder.build()]
    assert counts == [*range(256), 0, 1]


# --- the header extension ---


def _rtp(extension: bytes = b"", *, profile: int = 0xBEDE, csrcs: int = 0) -> bytes:
    first = 0x80 | csrcs | (0x10 if extension else 0)
    header = struct.pack("!BBHII", first, 96, 1, 2, 3) + bytes(4 * csrcs)
    if extension:
        padded = extension + bytes(-len(extension) % 4)
        header += struct.pack("!HH", profile, len(padded) // 4) + padded
    return header + b"payload"


@pytest.mark.parametrize(
    ("packet", "seq"),
    [
        (_rtp(H("31 1234")), 0x1234),  # id 3, length 2 (L=1)
        (_rtp(H("10 aa 31 1234")), 0x1234),  # after a 1-byte element
        (_rtp(H("00 00 31 fffe")), 0xFFFE),  # after padding
        (_rtp(H("31 1234"), csrcs=2), 0x1234),
        (_rtp(H("0101 aa 0302 beef"), profile=0x1000), 0xBEEF),  # two-byte form
        (_rtp(H("00 0302 beef"), profile=0x1000), 0xBEEF),
        (_rtp(H("21 1234")), None),  # another id
        (_rtp(H("30 12")), None),  # id 3 of the wrong length
        (_rtp(H("f0 31 1234")), None),  # id 15 stops the parse
        (_rtp(), None),  # no extension
        (_rtp(H("31 1234"), profile=0x0100), None),  # an unknown profile
        (_rtp(H("31 1234"))[:15], None),  # truncated header
        (_rtp(H("31 1234"))[:17], None),  # block truncated
        (_rtp(H("4f 1234")), None),  # an element longer than the block
    ],
)
def test_transport_sequence(packet: bytes, seq: int | None) -> None:
    assert transport_sequence(packet, 3) == seq


# --- cross-check: the egress's C parser reads what the builder writes as the decoder does ---


@pytest.mark.parametrize("seed", range(3))
def test_the_c_parser_agrees_with_the_decoder(seed: int) -> None:
    egress, sent, _ = relayed("AEAD_AES_128_GCM")
    assert isinstance(egress, Egress)
    egress.transport_cc_id = 5
    block = build_extension_block([(1, b"0"), (5, bytes(2))])
    total = 65_536 + 500  # the egress numbers them 0..65535, 0..499: across the wrap
    for i in range(total):
        egress.send_rewritten(rtp(i & 0xFFFF, b"x" * 20), 12, 96, i & 0xFFFF, 0, 7, block, -1, b"")
        if i % 4096 == 0:
            sent.clear()  # only the numbering matters here
    size = len(sent[-1])
    rng = random.Random(seed)
    builder = FeedbackBuilder(1, max_size=200)  # several messages per build
    t = 50.0
    for i in range(total - 1500, total):
        t += rng.choice((0.0001, 0.0005, 0.002, 0.07))
        if rng.random() >= 0.1:
            builder.record(i & 0xFFFF, t + rng.choice((0.0, 0.0, -0.0004)))  # some reordering
    messages = builder.build()
    assert len(messages) > 3
    for message in messages:
        raw = egress.transport_feedback(message.fci)
        assert raw is not None
        summary = FeedbackSummary.from_egress(raw)
        packets = decode(message.fci).packets
        received = sum(1 for _, arrival in packets if arrival is not None)
        assert (summary.received, summary.lost) == (received, len(packets) - received)
        assert summary.received_bytes == received * size
