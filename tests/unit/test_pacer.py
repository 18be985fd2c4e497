"""The egress's pacer (sfu/media/_pacer.c): RTP beyond the pacing rate waits for drain()."""

from __future__ import annotations

import itertools
import struct
import time

from sfu.media.srtp import Egress
from sfu.rtp.header import build_extension_block, parse_extensions
from tests.unit.test_srtp import relayed

VIDEO_PT, AUDIO_PT = 96, 111
BLOCK = build_extension_block([(1, b"3"), (5, bytes(2))])
_seq = itertools.count(1)


def send(egress: Egress, count: int, pt: int = VIDEO_PT, size: int = 1000) -> list[int]:
    seqs = []
    for _ in range(count):
        seq = next(_seq)
        data = struct.pack("!BBHII", 0x80, pt, 0, 0, 0x55) + b"\x42" * size
        egress.send_rewritten(data, 12, pt, seq, 0, 0x55, BLOCK, -1, b"")
        seqs.append(seq)
    return seqs


def sent_seqs(sent: list[bytes], rx: object) -> list[int]:
    return [struct.unpack_from("!H", rx.unprotect(p), 2)[0] for p in sent]  # type: ignore[attr-defined]


def paced(rate: int) -> tuple[Egress, list[bytes], object, list[int]]:
    egress, sent, rx = relayed("AEAD_AES_128_GCM")
    calls: list[int] = []
    egress.on_paced = lambda: calls.append(len(sent))
    egress.pacing_rate = rate
    return egress, sent, rx, calls


def test_not_paced_at_rate_zero() -> None:
    egress, sent, _, calls = paced(0)
    send(egress, 50)
    assert len(sent) == 50 and egress.queued == 0 and calls == []


def test_a_burst_waits_and_drains_in_order_at_the_rate() -> None:
    rate = 100_000  # bytes/s
    egress, sent, rx, calls = paced(rate * 8)
    seqs = send(egress, 30)
    sent_at_once = len(sent)
    # the first packets go on the 3,000-byte minimum burst, the rest wait; one call arms a timer
    assert 2 <= sent_at_once <= 4 and egress.queued == 30 - sent_at_once and len(calls) == 1
    assert egress.paced == egress.queued
    queued_at = time.monotonic()
    time.sleep(0.05)
    left = egress.drain()
    elapsed = time.monotonic() - queued_at
    drained = sum(len(p) for p in sent[sent_at_once:])
    assert left == 30 - len(sent) and len(sent) > sent_at_once
    # what the rate allowed since the burst, give or take the packet that overdraws it
    assert drained <= rate * elapsed + len(sent[0])
    egress.pacing_rate = 0  # no longer paced: the rest goes at the next drain
    assert egress.drain() == 0
    assert sent_seqs(sent, rx) == seqs, "in order"
    assert len(calls) == 1


def test_audio_and_probes_are_never_paced() -> None:
    egress, sent, rx, _ = paced(80_000)
    egress.unpace(AUDIO_PT)
    video = send(egress, 10)
    before = len(sent)
    audio = send(egress, 3, pt=AUDIO_PT, size=100)
    assert len(sent) == before + 3, "audio goes past the queue"
    egress.probe_cluster = 4
    probe = struct.pack("!BBHII", 0x90, 97, 7, 0, 0x66) + BLOCK + b"\x00" * 200
    egress.send_rtp(probe)
    egress.probe_cluster = -1
    assert len(sent) == before + 4, "so does a probe (its cluster has its own rate)"
    assert sent_seqs(sent, rx)[before : before + 3] == audio
    assert egress.queued == 10 - before and video


def test_transport_wide_numbers_in_the_order_packets_leave() -> None:
    egress, sent, rx, _ = paced(80_000)
    egress.transport_cc_id = 5
    egress.unpace(AUDIO_PT)
    send(egress, 5)  # most wait
    send(egress, 2, pt=AUDIO_PT, size=50)  # these leave before them
    egress.pacing_rate = 0
    egress.drain()
    numbers = [
        struct.unpack("!H", parse_extensions(rx.unprotect(p))[5])[0]  # type: ignore[attr-defined]
        for p in sent
    ]
    assert numbers == list(range(7))


def test_a_full_queue_drops_and_counts() -> None:
    egress, sent, _, _ = paced(8_000)
    send(egress, 600, size=200)
    assert egress.queued == 512 and egress.pace_drops == 600 - 512 - len(sent)
    assert egress.send_errors == egress.pace_drops
    egress.close()
    assert egress.queued == 0 and egress.drain() == 0
