"""The per-subscriber stream state machines: sequence numbers and timestamps (sfu/media/munger.py,
RFC 7667 §3.7) and VP8 picture ids (sfu/media/vp8_rewriter.py, RFC 7741 §4.2).

Both are driven here by a source that reorders within the munger's window, drops packets the
SFU decides not to send, and switches sources; the subscriber must see one continuous stream.
"""

from __future__ import annotations

from itertools import pairwise

from sfu.media.munger import HISTORY_SIZE, RtpMunger
from sfu.media.vp8_rewriter import MAX_TEMPORAL_LAYER, Vp8Rewriter
from sfu.rtp.vp8 import Vp8Descriptor
from tests.fuzz.reader import Reader


def arrival_order(reader: Reader, count: int) -> list[int]:
    """0..count-1 reordered: each swap moves a packet at most 40 places."""
    order = list(range(count))
    for _ in range(reader.below(count + 1)):
        i = reader.below(count)
        j = min(count - 1, i + reader.below(41))
        order[i], order[j] = order[j], order[i]
    return order


def check_munger(reader: Reader) -> None:
    """Every packet of every source arrives (reordered), is forwarded or, while newest, dropped:
    the forwarded ones, in source order then sequence order, are numbered one after the other
    from the initial number, and each source keeps its timestamp offset."""
    initial_seq, initial_ts = reader.uint(2), reader.uint(4)
    munger = RtpMunger(initial_seq, initial_ts)
    sent: list[tuple[int, int, int]] = []  # (source, incoming ext seq, outgoing seq)
    for source in range(1 + reader.below(3)):
        count = 1 + reader.below(120)
        base = 0x10000 + reader.uint(3)
        ts_base = reader.uint(4)
        order = arrival_order(reader, count)
        first = base + order[0]
        munger.switch_source(first, ts_base + 90 * order[0], reader.uint(2))
        newest = -1
        offsets = set()
        mine: list[tuple[int, int]] = []
        for k, i in enumerate(order):
            ext = base + i
            ts = (ts_base + 90 * i) & 0xFFFFFFFF
            if k > 0 and ext > newest and reader.uint() < 40:
                munger.drop(ext)
                newest = ext
                continue
            newest = max(newest, ext)
            out = munger.forward(ext, ts)
            if ext < first:
                assert out is None, "a packet from before the source's start was forwarded"
                continue
            assert out is not None, f"packet {ext} of source {source} could not be placed"
            seq, out_ts = out
            assert 0 <= seq <= 0xFFFF and 0 <= out_ts <= 0xFFFFFFFF
            offsets.add((out_ts - ts) & 0xFFFFFFFF)
            sent.append((source, ext, seq))
            mine.append((ext, seq))
            assert munger.forward(ext, ts) == out, "a resent packet got another number"
        assert len(offsets) <= 1, "one source's timestamps moved against each other"
        highest = munger.last_seq
        for ext, seq in mine:
            if highest is not None and (highest - seq) & 0xFFFF < HISTORY_SIZE:
                assert munger.source_packet(seq) == (munger.generation, ext)
    sent.sort()
    numbers = [seq for _, _, seq in sent]
    expected = [(initial_seq + k) & 0xFFFF for k in range(len(sent))]
    assert numbers == expected, "the outgoing sequence numbers are not continuous"


def _descriptor(pid: int, tl0: int, tid: int, sync: bool, key: bool, start: bool) -> Vp8Descriptor:
    return Vp8Descriptor(pid, True, tl0, tid, sync, 0, start, 0, key and start, 6)


def check_vp8_rewriter(reader: Reader) -> None:
    """Frames in order, one to three packets each, temporal layers 0-2 (L1T3 pattern or random),
    the wanted layer changing: kept frames get consecutive picture ids, all their packets alike,
    and a retransmission is given what its packet was sent with."""
    rewriter = Vp8Rewriter(reader.below(MAX_TEMPORAL_LAYER + 1))
    pid = reader.uint(2) & 0x7FFF
    tl0 = reader.uint()
    kept: list[int] = []
    for frame in range(1 + reader.below(200)):
        choice = reader.uint()
        if choice < 10:
            rewriter.max_temporal_layer = reader.below(MAX_TEMPORAL_LAYER + 1)
        key = frame == 0 or choice == 255
        tid = 0 if key else (reader.below(3) if choice & 1 else (0, 2, 1, 2)[frame % 4])
        if tid == 0:
            tl0 = (tl0 + 1) & 0xFF
        sync = reader.flag()
        results = set()
        for packet in range(1 + reader.below(3)):
            d = _descriptor(pid, tl0, tid, sync, key, packet == 0)
            result = rewriter.forward(d)
            if result is not None:
                out_pid, out_tl0, keyidx = result
                assert 0 <= out_pid <= 0x7FFF and 0 <= out_tl0 <= 0xFF and 0 <= keyidx <= 0x1F
                assert rewriter.resend(d) == result, "a retransmission got other values"
            results.add(result)
        assert len(results) == 1, f"frame {frame}'s packets were not all kept or all dropped"
        result = results.pop()
        if result is not None:
            kept.append(result[0])
        pid = (pid + 1) & 0x7FFF
    for a, b in pairwise(kept):
        assert b == (a + 1) & 0x7FFF, f"picture ids of kept frames jump: {a} -> {b}"


def check_vp8_hostile(reader: Reader) -> None:
    """Any descriptors in any order with any calls: values stay in their fields' widths."""
    rewriter = Vp8Rewriter()
    while reader.more():
        op = reader.uint()
        long_pid = bool(op & 0x80)
        pid = reader.uint(2) & (0x7FFF if long_pid else 0x7F) if op & 0x40 else -1
        b = reader.uint()
        tid = b & 0x03 if b & 0x40 else -1
        start, partition = bool(b & 0x08), int(bool(b & 0x04))
        d = Vp8Descriptor(
            pid,
            long_pid and pid >= 0,
            reader.uint() if b & 0x80 else -1,
            tid,
            tid >= 0 and bool(b & 0x20),
            reader.uint() & 0x1F if b & 0x10 else -1,
            start,
            partition,
            start and not partition and bool(b & 0x02),
            1,
        )
        kind = op & 0x07
        if kind == 0:
            rewriter.switch_source()
        elif kind == 1:
            rewriter.drop(d)
        elif kind == 2:
            rewriter.max_temporal_layer = op >> 3 & 3
        for result in (rewriter.resend(d) if kind == 3 else rewriter.forward(d),):
            if result is None:
                continue
            out_pid, tl0, keyidx = result
            mask = 0x7FFF if d.long_picture_id else 0x7F
            assert (out_pid == -1) if pid < 0 else 0 <= out_pid <= mask, (d, result)
            assert (tl0 == -1) if d.tl0picidx < 0 else 0 <= tl0 <= 0xFF, (d, result)
            assert (keyidx == -1) if d.keyidx < 0 else 0 <= keyidx <= 0x1F, (d, result)


def run(data: bytes) -> None:
    reader = Reader(data)
    mode = reader.uint() % 3
    (check_munger, check_vp8_rewriter, check_vp8_hostile)[mode](reader)


def seeds() -> list[bytes]:
    return [bytes([m]) + bytes(range(i, 256)) * 4 for m in range(3) for i in (0, 7, 100)]
