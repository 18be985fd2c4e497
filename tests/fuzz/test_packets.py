"""Structured properties of the packet parsers: RTP packets with random extensions (RFC 3550,
RFC 8285), compound RTCP with wrong lengths (RFC 3550 §6), transport-cc feedback (draft-holmer
-rmcat-transport-wide-cc-extensions-01) and VP8 payload descriptors (RFC 7741) in C and Python."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp import header, rtcp
from sfu.rtp.twcc import FeedbackBuilder, TransportFeedback, decode, encode, transport_sequence
from tests.fuzz.harnesses.ingress import FLOOD, flood
from tests.fuzz.harnesses.rtcp import check_compound
from tests.fuzz.harnesses.rtp import check_packet
from tests.fuzz.harnesses.twcc import check_fci
from tests.fuzz.harnesses.vp8 import check_descriptor, check_egress
from tests.fuzz.reader import Reader

u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
one_byte_elements = st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)))
two_byte_elements = st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=40)), min_size=1)


@st.composite
def rtp_packets(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]], bytes]:
    """(packet, its extension elements, its payload)."""
    elements = draw(st.one_of(st.just([]), one_byte_elements, two_byte_elements))
    block = header.build_extension_block(elements)
    csrcs = draw(st.integers(0, 15))
    payload = draw(st.binary(max_size=300))
    padding = draw(st.integers(0, 255))
    b0 = 0x80 | csrcs | (0x10 if block else 0) | (0x20 if padding else 0)
    fixed = struct.pack("!BBHII", b0, draw(st.integers(0, 255)), draw(u16), draw(u32), draw(u32))
    pad = bytes(max(padding - 1, 0)) + (bytes((padding,)) if padding else b"")
    return fixed + bytes(4 * csrcs) + block + payload + pad, elements, payload


@given(rtp_packets(), st.integers(1, 255))
def test_rtp_extensions_read_back(
    packet: tuple[bytes, list[tuple[int, bytes]], bytes], ext_id: int
) -> None:
    data, elements, payload = packet
    check_packet(data)
    start, end = header.payload_bounds(data)
    assert data[start:end] == payload
    expected = dict(elements)  # the last element of an id wins
    assert header.parse_extensions(data) == expected
    first = next((v for i, v in elements if i == ext_id), None)
    value = transport_sequence(data, ext_id)
    if first is not None and len(first) == 2:
        assert value == struct.unpack("!H", first)[0]
    elif first is None:
        assert value is None


@st.composite
def report_blocks(draw: st.DrawFn) -> rtcp.ReportBlock:
    return rtcp.ReportBlock(
        draw(u32), draw(st.integers(0, 255)), draw(st.integers(-0x800000, 0x7FFFFF)),
        draw(u32), draw(u32), draw(u32), draw(u32),
    )  # fmt: skip


rtcp_packets = st.one_of(
    st.builds(rtcp.SenderReport, u32, st.integers(0, 2**64 - 1), u32, u32, u32,
              st.lists(report_blocks(), max_size=31)),
    st.builds(rtcp.ReceiverReport, u32, st.lists(report_blocks(), max_size=31)),
    st.builds(rtcp.SourceDescription,
              st.lists(st.tuples(u32, st.text(max_size=80)), max_size=31)),
    st.builds(rtcp.Bye, st.lists(u32, max_size=31)),
    st.builds(rtcp.Nack, u32, u32, st.lists(u16, min_size=1, max_size=100)),
    st.builds(rtcp.Pli, u32, u32),
    st.builds(rtcp.Fir, u32, st.lists(st.tuples(u32, st.integers(0, 255)), max_size=10)),
    st.builds(rtcp.Remb, u32, st.integers(0, 0x3FFFF).map(lambda m: m << 5),
              st.lists(u32, max_size=255)),
    st.builds(rtcp.UnknownRtcp, st.sampled_from([rtcp.APP, rtcp.XR, 210]), st.integers(0, 31),
              st.binary(max_size=64).map(lambda b: b + bytes(-len(b) % 4))),
)  # fmt: skip


@given(st.lists(rtcp_packets, min_size=1, max_size=6))
def test_compound_rtcp_round_trips(packets: list[rtcp.RtcpPacket]) -> None:
    """Written then parsed, a compound packet is what was written (a NACK's numbers as a set;
    a CNAME over 255 bytes cannot be written)."""
    sdes_too_long = any(
        isinstance(p, rtcp.SourceDescription) and any(len(c.encode()) > 255 for _, c in p.chunks)
        for p in packets
    )
    if sdes_too_long:
        return
    data = rtcp.serialize(packets)
    parsed = check_compound(data)
    assert len(parsed) == len(packets)
    for wrote, read in zip(packets, parsed, strict=True):
        if isinstance(wrote, rtcp.Nack):
            assert isinstance(read, rtcp.Nack) and set(read.lost) == set(wrote.lost)
        else:
            assert read == wrote


@given(st.lists(rtcp_packets, min_size=1, max_size=4), st.data())
def test_compound_rtcp_with_wrong_lengths(
    packets: list[rtcp.RtcpPacket], data: st.DataObject
) -> None:
    """Any packet's length, count or padding bit changed: ValueError or packets, nothing else."""
    wire = bytearray(
        rtcp.serialize([p for p in packets if not isinstance(p, rtcp.SourceDescription)])
        or b"\x80\xc9\x00\x00"
    )
    at = 0
    for _ in range(data.draw(st.integers(0, 3))):
        if at + 4 > len(wire):
            break
        field = data.draw(st.sampled_from(["length", "count", "padding", "truncate"]))
        if field == "length":
            struct.pack_into("!H", wire, at + 2, data.draw(u16))
        elif field == "count":
            wire[at] = (wire[at] & 0xE0) | data.draw(st.integers(0, 31))
        elif field == "padding":
            wire[at] ^= 0x20
        else:
            del wire[data.draw(st.integers(0, len(wire) - 1)) :]
        at += 4 + 4 * struct.unpack_from("!H", wire, at + 2)[0] if at + 4 <= len(wire) else 0
    check_compound(bytes(wire))


arrivals = st.lists(st.one_of(st.none(), st.integers(0, 255)), min_size=1, max_size=3000)


@given(u16, st.integers(0, 255), st.integers(0, 2**30), arrivals)
def test_transport_cc_round_trips(
    base: int, fb_count: int, start: int, steps: list[int | None]
) -> None:
    """Any received/lost pattern with any deltas encodes and decodes to itself, and the C parser
    reads it too."""
    times: list[int | None] = []
    now = start
    for step in steps:
        if step is not None:
            now += step
        times.append(None if step is None else now)
    if all(t is None for t in times):
        times[0] = start
    fci = encode(base, fb_count, times)
    decoded = decode(fci)
    assert decoded.base_seq == base and decoded.fb_count == fb_count
    first = next(t for t in times if t is not None)
    shift = first // 256 * 256  # reference times are whole 64 ms units of the arrival clock
    assert [(s, t) for s, t in decoded.packets] == [
        (
            (base + i) & 0xFFFF,
            None if t is None else (t - shift) * 250 + decoded.reference_time * 64000,
        )
        for i, t in enumerate(times)
    ]
    check_fci(fci)


@given(
    st.integers(0, 0xFFFF),
    st.lists(st.tuples(st.integers(1, 3), st.floats(0, 0.2)), max_size=400),
    st.integers(1, 50),
)
def test_feedback_builder_reports_every_packet_once(
    first: int, gaps: list[tuple[int, float]], every: int
) -> None:
    """Packets recorded in order (numbers skipped: lost), built every ``every`` packets: each
    recorded one is reported received once with its arrival, each skipped one lost."""
    builder = FeedbackBuilder(1, 2, max_size=300)
    seq, now = first, 1000.0
    expected: dict[int, float | None] = {}
    messages: list[TransportFeedback] = []
    for k, (step, gap) in enumerate(gaps):
        for lost in range(1, step):
            expected.setdefault((seq + lost) & 0xFFFF, None)
        seq = (seq + step) & 0xFFFF
        now += gap
        builder.record(seq, now)
        expected[seq] = now
        if k % every == 0:
            messages += builder.build()
    messages += builder.build()
    seen: dict[int, int | None] = {}
    for message in messages:
        assert len(bytes(message)) <= 300
        for s, t in decode(message.fci).packets:
            assert s not in seen, f"sequence number {s} reported twice"
            seen[s] = t
    received = {s for s, t in expected.items() if t is not None}
    assert {s for s, t in seen.items() if t is not None} == received
    origin = min(t for t in expected.values() if t is not None) if received else 0.0
    base = None
    for s in received:
        arrival = seen[s]
        assert arrival is not None
        offset = arrival - round(((expected[s] or 0.0) - origin) * 4000) * 250
        base = offset if base is None else base
        assert offset == base, "arrivals moved against each other"


@st.composite
def vp8_payloads(draw: st.DrawFn) -> bytes:
    """A descriptor with any of I (7 or 15 bits), L, T, K, cut anywhere, then VP8 bytes."""
    i, ell, t, k, m = (draw(st.booleans()) for _ in range(5))
    first = draw(st.integers(0, 255)) | 0x80
    x = (i << 7) | (ell << 6) | (t << 5) | (k << 4)
    body = bytes([first, x])
    if i:
        body += bytes(
            [0x80 | draw(st.integers(0, 127)), draw(st.integers(0, 255))]
            if m
            else [draw(st.integers(0, 127))]
        )
    if ell:
        body += bytes([draw(st.integers(0, 255))])
    if t or k:
        body += bytes([draw(st.integers(0, 255))])
    body = body[: draw(st.integers(1, len(body)))] if draw(st.booleans()) else body
    return body + draw(st.binary(max_size=40))


@given(vp8_payloads(), st.integers(0, 255), st.binary(min_size=8, max_size=8))
def test_vp8_descriptors_in_c_and_python(payload: bytes, padding: int, choices: bytes) -> None:
    b0 = 0xA0 if padding else 0x80
    pad = bytes(max(padding - 1, 0)) + (bytes((padding,)) if padding else b"")
    packet = struct.pack("!BBHII", b0, 96, 1, 2, 3) + payload + pad
    reader = Reader(choices)
    fields = (
        reader.uint(2) % 0x8001 - 1,
        reader.uint() - 1 if reader.flag() else -1,
        reader.below(0x21) - 1,
    )
    try:
        start, end = header.payload_bounds(packet)
    except ValueError:
        start, end = 12, len(packet)
    check_descriptor(packet, start, end, fields)
    check_egress(packet, start, Reader(choices[::-1]))


@given(u32, st.one_of(u16, st.sampled_from([0, 0xFFFF, 0x10000 - FLOOD, 0x10000 - FLOOD + 1])))
def test_the_ingress_nack_flood_is_what_the_serializer_builds(media: int, first: int) -> None:
    """The ingress harness builds its flood of NACKs itself (not through the instrumented
    serializer): the same bytes, a run across 65535 -> 0 included."""
    lost = [(first + i) & 0xFFFF for i in range(FLOOD)]
    assert flood(media, first) == bytes(rtcp.Nack(1, media, lost))
