from __future__ import annotations

import pytest

from sfu.rtp.rtcp import (
    Bye,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    parse_compound,
    serialize,
)
from sfu.rtp.twcc import TransportFeedback

H = bytes.fromhex

BLOCK = ReportBlock(0xAABBCCDD, 0x40, 5, 0x00010010, 0x20, 0x12345678, 0x00010000)
BLOCK_HEX = "aabbccdd 40000005 00010010 00000020 12345678 00010000"

# packets and the bytes laid out by hand from the RFC figures
VECTORS: list[tuple[RtcpPacket, str]] = [
    (
        SenderReport(0x01020304, 0xE1B2C3D480000000, 0x11223344, 10, 1000, [BLOCK]),
        "81c8000c 01020304 e1b2c3d4 80000000 11223344 0000000a 000003e8 " + BLOCK_HEX,
    ),
    (
        SenderReport(1, 0, 0, 0, 0, []),
        "80c80006 00000001 00000000 00000000 00000000 00000000 00000000",
    ),
    (ReceiverReport(0x01020304, [BLOCK]), "81c90007 01020304 " + BLOCK_HEX),
    (ReceiverReport(0x01020304, []), "80c90001 01020304"),
    (
        ReceiverReport(1, [ReportBlock(2, 255, -1, 0xFFFFFFFF, 0, 0, 0)]),
        "81c90007 00000001 00000002 ffffffff ffffffff 00000000 00000000 00000000",
    ),
    (
        ReceiverReport(1, [ReportBlock(2, 0, -0x800000, 0, 0, 0, 0)]),
        "81c90007 00000001 00000002 00800000 00000000 00000000 00000000 00000000",
    ),
    # CNAME "abc": 9 bytes + 3 null octets; "ab": 8 bytes + 4 (at least one terminator)
    (SourceDescription([(0x01020304, "abc")]), "81ca0003 01020304 01036162 63000000"),
    (SourceDescription([(0x01020304, "ab")]), "81ca0003 01020304 01026162 00000000"),
    (
        SourceDescription([(1, "a"), (2, "")]),
        "82ca0004 00000001 01016100 00000002 01000000",
    ),
    (Bye([0x01020304, 0x05060708]), "82cb0002 01020304 05060708"),
    (Bye([]), "80cb0000"),
    # PID 100, BLP: 101 (bit 0) and 116 (bit 15); 117 is 17 away: a new item
    (Nack(1, 2, [100, 101, 116, 117]), "81cd0004 00000001 00000002 00648001 00750000"),
    (Nack(1, 2, [7]), "81cd0003 00000001 00000002 00070000"),
    # a run across 65535 -> 0 stays one item
    (Nack(1, 2, [65534, 65535, 0, 1]), "81cd0003 00000001 00000002 fffe0007"),
    (Nack(1, 2, [65530, 3]), "81cd0003 00000001 00000002 fffa0100"),
    (Nack(1, 2, [65535, 15, 17]), "81cd0004 00000001 00000002 ffff8000 00110000"),
    (Pli(1, 2), "81ce0002 00000001 00000002"),
    (Fir(1, [(0x0A0B0C0D, 7)]), "84ce0004 00000001 00000000 0a0b0c0d 07000000"),
    (
        Fir(1, [(2, 255), (3, 0)]),
        "84ce0006 00000001 00000000 00000002 ff000000 00000003 00000000",
    ),
    # 2_500_000 = 156250 (0x2625a) << 4
    (
        Remb(1, 2_500_000, [0x11111111]),
        "8fce0005 00000001 00000000 52454d42 0112625a 11111111",
    ),
    (Remb(1, 0, []), "8fce0004 00000001 00000000 52454d42 00000000"),
    (TransportFeedback(1, 2, H("0001abcd")), "8fcd0003 00000001 00000002 0001abcd"),
    # an FCI of 5 bytes: P set, the padding's last octet counts 3
    (TransportFeedback(1, 2, H("0001abcd01")), "afcd0004 00000001 00000002 0001abcd 01000003"),
    (UnknownRtcp(205, 3, H("00000001 00000002 0001abcd")), "83cd0003 00000001 00000002 0001abcd"),
    (UnknownRtcp(204, 0, H("00000001 6e616d65")), "80cc0002 00000001 6e616d65"),
    (UnknownRtcp(207, 0, H("00000001")), "80cf0001 00000001"),
    (
        UnknownRtcp(206, 15, H("00000001 00000000 41424344")),  # AFB that is not REMB
        "8fce0003 00000001 00000000 41424344",
    ),
    (UnknownRtcp(206, 3, H("00000001 00000002")), "83ce0002 00000001 00000002"),
]


@pytest.mark.parametrize(("packet", "data"), VECTORS)
def test_vectors(packet: RtcpPacket, data: str) -> None:
    assert bytes(packet) == H(data)
    assert parse_compound(H(data)) == [packet]


def test_compound_round_trip() -> None:
    packets = [p for p, _ in VECTORS]
    data = serialize(packets)
    assert data == b"".join(H(d) for _, d in VECTORS)
    assert parse_compound(data) == packets


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        ("", []),
        # padding on the last packet (RR, 4 bytes of padding)
        ("a0c90002 01020304 00000004", [ReceiverReport(0x01020304, [])]),
        (
            "80c90001 00000001 a0c90002 00000002 00000004",
            [ReceiverReport(1, []), ReceiverReport(2, [])],
        ),
        # SDES: other items skipped (NAME before CNAME); a chunk without CNAME
        (
            "82ca0005 00000001 02017801 02616200 00000002 02017800",
            [SourceDescription([(1, "ab"), (2, "")])],
        ),
        # BYE with a reason
        ("81cb0002 01020304 03616263", [Bye([0x01020304])]),
        # SR with a profile-specific extension after the blocks
        (
            "80c80007 00000001 00000000 00000002 00000003 00000004 00000005 deadbeef",
            [SenderReport(1, 2, 3, 4, 5, [])],
        ),
        # NACK items are listed in wire order
        ("81cd0004 00000001 00000002 00100000 00050001", [Nack(1, 2, [16, 5, 6])]),
        # REMB: 300_000_000 is sent as 146484 << 11 and so reads back rounded down
        (
            "8fce0006 00000001 00000000 52454d42 022e3c34 00000003 00000004",
            [Remb(1, 299_999_232, [3, 4])],
        ),
        # FIR media SSRC is ignored
        ("84ce0004 00000001 00000009 0a0b0c0d 07ffffff", [Fir(1, [(0x0A0B0C0D, 7)])]),
    ],
)
def test_parse(data: str, parsed: list[RtcpPacket]) -> None:
    assert parse_compound(H(data)) == parsed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("81c8", "header truncated at byte 0"),
        ("80c90001 00000001 8000", "header truncated at byte 8"),
        ("40c90001 01020304", "version 1"),
        ("80c90001 00000001 00c90001 01020304", "version 0 at byte 8"),
        ("81c90007 01020304", "type 201 at byte 0 truncated"),
        ("81c90001 01020304", "RR with 1 report blocks truncated"),
        ("80c90000", "RR truncated"),
        ("80c80001 01020304", "SR truncated"),
        (
            "82c8000c 01020304 e1b2c3d4 80000000 11223344 0000000a 000003e8 " + BLOCK_HEX,
            "SR with 2",
        ),
        ("a0c90001 01020300", "padding count 0"),
        ("a0c90001 01020309", "padding count 9"),
        ("a0c90000", "padding count 0"),
        ("81ca0001 01020304", "SDES item list truncated"),
        ("81ca0002 01020304 01096162", "SDES item truncated"),
        ("81ca0000", "SDES chunk truncated"),
        ("82cb0001 01020304", "BYE with 2 sources truncated"),
        ("81cd0001 00000001", "NACK truncated"),
        ("81ce0001 00000001", "PLI truncated"),
        ("8fcd0001 00000001", "transport-cc feedback truncated"),
        ("84ce0003 00000001 00000000 0a0b0c0d", "FIR entries truncated"),
        ("8fce0004 00000001 00000000 52454d42 0212625a", "REMB with 2 SSRCs truncated"),
    ],
)
def test_malformed(data: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_compound(H(data))


@pytest.mark.parametrize(
    ("bitrate", "decoded"),
    [
        (0, 0),
        (1, 1),
        (262_143, 262_143),  # the largest 18-bit mantissa, exponent 0
        (262_144, 262_144),
        (262_145, 262_144),  # rounds down
        (2_500_000, 2_500_000),
        (300_000_000, 299_999_232),
        (2**40 + 2**30, 2**40 + 2**30),
    ],
)
def test_remb_bitrate(bitrate: int, decoded: int) -> None:
    (parsed,) = parse_compound(bytes(Remb(1, bitrate, [2])))
    assert parsed == Remb(1, decoded, [2])
    assert decoded <= bitrate


@pytest.mark.parametrize(
    ("lost", "wire"),
    [
        ([65535, 0], [65535, 0]),
        ([0, 65535], [65535, 0]),  # canonical order: after the largest circular gap
        ([1, 0, 65535, 65534, 65533], [65533, 65534, 65535, 0, 1]),
        ([5, 5, 5], [5]),
        ([65520, 65535, 0, 10, 30000], [65520, 65535, 0, 10, 30000]),
        ([30000, 0, 10, 65520, 65535], [65520, 65535, 0, 10, 30000]),
        (list(range(65500, 65536)) + list(range(40)), list(range(65500, 65536)) + list(range(40))),
        ([], []),
    ],
)
def test_nack_order_and_wrap(lost: list[int], wire: list[int]) -> None:
    (parsed,) = parse_compound(bytes(Nack(1, 2, lost)))
    assert parsed == Nack(1, 2, wire)


def test_nack_items_are_compact() -> None:
    # 76 consecutive seqs across the wrap need ceil(76 / 17) = 5 items
    lost = list(range(65500, 65536)) + list(range(40))
    assert len(bytes(Nack(1, 2, lost))) == 12 + 4 * 5


@pytest.mark.parametrize(
    "packet",
    [
        ReportBlock(1, 0, 0x800000, 0, 0, 0, 0),
        ReceiverReport(1, [ReportBlock(1, 0, -0x800001, 0, 0, 0, 0)]),
        UnknownRtcp(204, 0, b"abc"),
        SourceDescription([(1, "x" * 256)]),
        Remb(1, 2**82, []),
    ],
)
def test_unencodable(packet: RtcpPacket | ReportBlock) -> None:
    with pytest.raises(ValueError):
        bytes(packet)
