"""A publisher's garbage stops at ingress: sequence probation, RTX checks and SSRC routing.

Drives a MediaConnection's ingress directly (no network); a down-track's sink records what a
subscriber would receive.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import AsyncIterator
from itertools import pairwise
from unittest.mock import patch

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sfu.api import TrackInfo
from sfu.config import MediaConfig
from sfu.counters import MediaTotals
from sfu.media.connection import MediaConnection
from sfu.media.downtrack import DownTrack, OutgoingStream
from sfu.media.params import URI_MID, Codec, MediaParams
from sfu.media.receiver import TrackReceiver
from sfu.media.reports import ntp_timestamp
from sfu.metrics import build_registry
from sfu.rtp import rtcp
from sfu.rtp.header import build_extension_block, payload_bounds, wrap_rtx
from sfu.service import Sfu

from .media_doubles import (
    PUBLISHER_SSRC,
    VP8,
    RecordingSink,
    publisher_receiver,
    subscriber_params,
    vp8_packet,
)

RTX_SSRC = 0x4321
MID_EXT = 1  # the mid extension's id in publisher_params()


@pytest.fixture
async def connection() -> AsyncIterator[MediaConnection]:
    connection = MediaConnection(MediaConfig(), lambda reason: None, lambda: None)
    yield connection
    await connection.close()


def subscribe(receiver: TrackReceiver) -> RecordingSink:
    sink = RecordingSink()
    receiver.add_down_track(
        DownTrack(receiver, OutgoingStream(subscriber_params(), 500, 9000), sink)
    )
    return sink


def packet(seq: int, ssrc: int = PUBLISHER_SSRC, ts: int | None = None, pt: int = 96) -> bytes:
    """A VP8 packet (a keyframe at seq 0 mod 100) whose timestamp advances 3000 per packet."""
    data = bytearray(vp8_packet(seq & 0xFFFF, keyframe=seq % 100 == 0, ssrc=ssrc))
    struct.pack_into("!I", data, 4, (seq * 3000 if ts is None else ts) & 0xFFFFFFFF)
    data[1] = (data[1] & 0x80) | pt
    return bytes(data)


def with_mid(data: bytes, mid: str) -> bytes:
    block = build_extension_block([(MID_EXT, mid.encode())])
    return bytes([data[0] | 0x10]) + data[1:12] + block + data[12:]


def sent(sink: RecordingSink) -> list[tuple[int, int]]:
    """(seq, timestamp) of what the subscriber got."""
    return [struct.unpack_from("!HI", p, 2) for p in sink.packets]


def steps(values: list[int], modulus: int) -> list[int]:
    return [(b - a) % modulus for a, b in pairwise(values)]


# --- sequence numbers on the publisher's own SSRC ---


async def test_random_sequence_numbers_on_the_declared_ssrc_are_not_forwarded(
    connection: MediaConnection,
) -> None:
    receiver = publisher_receiver(connection)
    sink = subscribe(receiver)
    rng = random.Random(5)
    garbage = set()
    for seq in range(1000, 4000):
        connection._on_rtp(packet(seq), seq / 100)
        junk = bytearray(rng.randbytes(300))
        junk[:12] = struct.pack("!BBHII", 0x80, 96, rng.getrandbits(16), 0, PUBLISHER_SSRC)
        garbage.add(bytes(junk[12:]))
        connection._on_rtp(bytes(junk), seq / 100)
    payloads = [p[payload_bounds(p)[0] :] for p in sink.packets]
    leaked = sum(p in garbage for p in payloads)
    assert leaked <= 5  # a random number continues the stream 16 times in 65,536
    seqs = [s for s, _ in sent(sink)]
    assert len(set(seqs)) == len(seqs)  # no number twice
    assert all(step < 17 or step > 0x10000 - 17 for step in steps(seqs, 0x10000))
    assert len(sink.packets) <= 3000
    assert receiver.layers[0].packets_dropped >= 2900
    totals = MediaTotals()
    totals.add_receiver(receiver)
    assert totals.packets_dropped_sequence == receiver.layers[0].packets_dropped


async def test_a_restarted_source_continues_the_subscribers_stream(
    connection: MediaConnection,
) -> None:
    receiver = publisher_receiver(connection)
    sink = subscribe(receiver)
    t0 = time.monotonic()  # the connection's NACK timer reads this clock
    for seq in range(100, 150):
        connection._on_rtp(packet(seq), t0 + seq / 100)
    before = sent(sink)
    # the publisher's stack starts over: new sequence numbers, new timestamps, 0.51 s later
    for i in range(20):
        connection._on_rtp(packet(40000 + i, ts=7_000_000 + 3000 * i), t0 + 2.0 + i / 100)
    after = sent(sink)[len(before) :]
    assert len(before) == 50 and len(after) == 20  # nothing lost: the first one was held
    seqs = [s for s, _ in before + after]
    assert steps(seqs, 0x10000) == [1] * 69
    jump = (after[0][1] - before[-1][1]) % 2**32
    assert jump == pytest.approx(90000 * 0.51, abs=1)  # by the time elapsed
    assert steps([t for _, t in after], 2**32) == [3000] * 19
    # NACKs still name the publisher's own numbers: 40020 lost, 40021 arrives
    with patch.object(connection, "send_rtcp") as send_rtcp:
        connection._on_rtp(packet(40021, ts=7_000_000 + 3000 * 21), time.monotonic())
    ((packets,), _) = send_rtcp.call_args
    assert [(p.media_ssrc, p.lost) for p in packets] == [(PUBLISHER_SSRC, [40020])]
    # the publisher's sender reports are read in the forwarded timeline
    munger_offset = (before[-1][1] - 149 * 3000) % 2**32
    layer = receiver.layers[0]
    layer.on_sender_report(ntp_timestamp(1000.0), 7_000_000, t0 + 2.4, 1000.0)
    assert layer.sender_clock.rtp_at(1000.0, 90000) == (after[0][1] - munger_offset) % 2**32
    assert isinstance(packets[0], rtcp.Nack)


async def test_duplicates_are_dropped(connection: MediaConnection) -> None:
    receiver = publisher_receiver(connection)
    sink = subscribe(receiver)
    for seq in (100, 101, 102, 102, 101, 103):
        connection._on_rtp(packet(seq), 1.0)
    assert [s - 500 for s, _ in sent(sink)] == [0, 1, 2, 3]
    assert receiver.layers[0].packets_dropped == 2


# --- retransmissions (RFC 4588) ---


def rtx(original: bytes, rtx_seq: int) -> bytes:
    return wrap_rtx(original, VP8.rtx_payload_type or 0, rtx_seq, RTX_SSRC)


async def test_rtx_is_taken_only_for_a_missing_packet(connection: MediaConnection) -> None:
    params = publisher_params_with_rtx()
    receiver = TrackReceiver(
        TrackInfo("TR_x", "PA_x", "video"), params, connection, 0.5, connection.publisher_clock
    )
    connection.add_receiver(receiver)
    sink = subscribe(receiver)
    for seq in (100, 101, 102, 104, 105):  # 103 lost
        connection._on_rtp(packet(seq), 1.0)
    assert len(sink.packets) == 5
    rng = random.Random(7)
    for i in range(2000):  # garbage original sequence numbers, then a repeat of one received
        connection._on_rtp(rtx(packet(rng.choice((0, 102, 105, 200, 40000, 102 - 600))), i), 1.1)
    assert len(sink.packets) == 5
    connection._on_rtp(rtx(packet(103), 5000), 1.2)
    connection._on_rtp(rtx(packet(103), 5001), 1.2)  # twice: the second is a duplicate
    assert [s - 500 for s, _ in sent(sink)] == [0, 1, 2, 4, 5, 3]
    layer = receiver.layers[0]
    assert layer.loss is not None and layer.loss.missing == 0
    assert (layer.retransmissions_dropped, layer.packets_dropped) == (2001, 0)
    totals = MediaTotals()
    totals.add_receiver(receiver)
    assert totals.packets_dropped_retransmission == 2001


def publisher_params_with_rtx(ssrcs: tuple[int, ...] = (PUBLISHER_SSRC,)) -> MediaParams:
    return MediaParams(
        mid="0",
        kind="video",
        codecs=(VP8,),
        extensions={URI_MID: MID_EXT},
        local_ssrc=1,
        local_rtx_ssrc=2,
        remote_ssrcs=ssrcs,
        remote_rtx={RTX_SSRC: ssrcs[0]} if ssrcs else {},
    )


# --- routing by SSRC ---


def undeclared_receiver(connection: MediaConnection, mid: str, pt: int = 96) -> TrackReceiver:
    codec = Codec(pt, "VP8", 90000, rtx_payload_type=pt + 1, feedback=("nack", "nack pli"))
    params = MediaParams(
        mid=mid,
        kind="video",
        codecs=(codec,),
        extensions={URI_MID: MID_EXT},
        local_ssrc=10 + int(mid),
        local_rtx_ssrc=20 + int(mid),
    )
    receiver = TrackReceiver(
        TrackInfo(f"TR_{mid}", "PA_x", "video"), params, connection, 0.5, connection.publisher_clock
    )
    connection.add_receiver(receiver)
    return receiver


async def test_undeclared_ssrcs_do_not_reach_a_declared_track(connection: MediaConnection) -> None:
    receiver = publisher_receiver(connection)
    sink = subscribe(receiver)
    connection._on_rtp(packet(0), 1.0)
    connection._on_rtp(packet(1), 1.0)
    # same payload type, no mid; and with the mid of the m-line that has an SSRC already
    for seq, ssrc in enumerate(range(0x5000, 0x5000 + 50), start=2):
        connection._on_rtp(packet(seq, ssrc=ssrc), 1.0)
        connection._on_rtp(with_mid(packet(seq, ssrc=ssrc + 1000), "0"), 1.0)
    assert len(sink.packets) == 2
    assert connection.rtp_unroutable == 100
    assert receiver.layers[0].ssrc == PUBLISHER_SSRC
    connection._on_rtp(packet(2), 1.0)
    assert len(sink.packets) == 3
    totals = MediaTotals()
    totals.add_connection(connection)
    assert totals.packets_dropped_unknown_ssrc == 100


async def test_an_undeclared_track_latches_one_ssrc(connection: MediaConnection) -> None:
    receiver = undeclared_receiver(connection, "0")
    sink = subscribe(receiver)
    for seq in range(3):  # by payload type: the only m-line without an SSRC sending it
        connection._on_rtp(packet(seq, ssrc=0xA), 1.0)
    assert receiver.layers[0].ssrc == 0xA and len(sink.packets) == 3
    connection._on_rtp(packet(3, ssrc=0xB), 1.0)  # by payload type: taken
    connection._on_rtp(with_mid(packet(3, ssrc=0xC), "0"), 1.0)  # by mid: taken too
    assert len(sink.packets) == 3 and connection.rtp_unroutable == 2
    # its RTX stream latches once, by the RTX payload type
    connection._on_rtp(wrap_rtx(packet(1, ssrc=0xA), 97, 1, 0xD), 1.0)
    connection._on_rtp(wrap_rtx(packet(1, ssrc=0xA), 97, 2, 0xE), 1.0)
    assert receiver.layers[0].rtx_ssrc == 0xD and connection.rtp_unroutable == 3


async def test_mid_latches_only_an_m_line_without_an_ssrc(connection: MediaConnection) -> None:
    first = undeclared_receiver(connection, "0")
    second = undeclared_receiver(connection, "1")
    # both m-lines send VP8 on 96: the payload type alone cannot tell them apart

    def ssrcs() -> tuple[int | None, int | None]:
        return first.layers[0].ssrc, second.layers[0].ssrc

    connection._on_rtp(packet(0, ssrc=0xA), 1.0)
    assert ssrcs() == (None, None) and connection.rtp_unroutable == 1
    connection._on_rtp(with_mid(packet(1, ssrc=0xA), "1"), 1.0)
    assert ssrcs() == (None, 0xA)
    connection._on_rtp(packet(0, ssrc=0xB), 1.0)  # now only the first is open to it
    assert ssrcs() == (0xB, 0xA)
    connection._on_rtp(with_mid(packet(0, ssrc=0xC), "1"), 1.0)
    connection._on_rtp(with_mid(packet(0, ssrc=0xC), "7"), 1.0)  # no such m-line
    assert ssrcs() == (0xB, 0xA) and connection.rtp_unroutable == 3


async def test_a_flood_of_random_ssrcs_costs_no_legitimate_route(
    connection: MediaConnection,
) -> None:
    receiver = publisher_receiver(connection)
    sink = subscribe(receiver)
    rng = random.Random(11)
    connection._on_rtp(packet(0), 1.0)
    for i in range(10_000):
        ssrc = rng.getrandbits(32)
        data = packet(i, ssrc=ssrc)
        connection._on_rtp(with_mid(data, "0") if i % 2 else data, 1.0)
    connection._on_rtp(packet(1), 1.0)
    assert len(sink.packets) == 2
    assert connection.rtp_unroutable == 10_000
    assert len(connection._routes) == 1 and len(connection._unroutable) <= 256
    # an m-line negotiated after the flood still learns its SSRC from its mid
    late = undeclared_receiver(connection, "2", pt=98)
    late_sink = subscribe(late)
    connection._on_rtp(with_mid(packet(0, ssrc=0xF00, pt=98), "2"), 1.0)
    connection._on_rtp(packet(1, ssrc=0xF00, pt=98), 1.0)  # later packets carry no mid
    assert late.layers[0].ssrc == 0xF00 and len(late_sink.packets) == 2


class ForgettingTransport:
    connected = True

    def __init__(self) -> None:
        self.forgotten: list[int] = []

    def send_rtcp(self, packet: bytes) -> None:
        return None

    def forget_remote_ssrc(self, ssrc: int) -> None:
        self.forgotten.append(ssrc)


async def test_unroutable_ssrcs_are_forgotten_by_srtp_once(connection: MediaConnection) -> None:
    """libsrtp keeps a stream per SSRC it decrypted: the unroutable ones are freed at once."""
    transport = ForgettingTransport()
    connection.transport = transport  # type: ignore[assignment]
    receiver = publisher_receiver(connection)
    sink = subscribe(receiver)
    for seq in range(3):
        connection._on_rtp(packet(seq, ssrc=0xBAD), 1.0)
        connection._on_rtp(packet(seq), 1.0)
    connection._on_rtp(packet(0, ssrc=0xBAD2), 1.0)
    assert transport.forgotten == [0xBAD, 0xBAD2]
    assert len(sink.packets) == 3
    connection.transport = None


def test_dropped_packets_are_exported_by_reason() -> None:
    service = Sfu()
    totals = MediaTotals(
        packets_dropped_sequence=3, packets_dropped_retransmission=5, packets_dropped_unknown_ssrc=4
    )
    service._departed.add(totals)
    text = generate_latest(build_registry(service, process=False)).decode()
    samples = {
        s.labels.get("reason"): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "sfu_rtp_packets_dropped_total"
    }
    assert samples == {"sequence": 3, "retransmission": 5, "unknown_ssrc": 4}
