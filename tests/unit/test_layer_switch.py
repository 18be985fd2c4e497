"""A down-track's layer switch at the target's keyframe: H264 simulcast (no descriptor to rewrite).

Rows drive one down-track of a two-layer H264 track packet by packet: which packets reach the
subscriber, with which outgoing sequence numbers. The switch waits for an IDR of the target
layer; until then the current layer keeps flowing; after it, nothing of the old layer passes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from itertools import pairwise

import pytest

from sfu.api import TrackInfo, TrackSettings
from sfu.media.allocation import CUT_BELOW, PublisherSide, SubscriberAllocation
from sfu.media.downtrack import DownTrack, OutgoingStream
from sfu.media.layer_meter import Layer
from sfu.media.params import URI_MID, Codec, MediaParams
from sfu.media.receiver import TrackReceiver
from sfu.media.reports import PublisherClock
from sfu.rtp.header import payload_bounds

from .media_doubles import RecordingSink, Upstream

H264 = Codec(102, "H264", 90000, fmtp={"packetization-mode": "1", "profile-level-id": "42e01f"})
SSRC = {"q": 0x10, "f": 0x20}
IDR, SLICE = b"\x65", b"\x41"  # NAL unit types 5 (IDR) and 1 (non-IDR slice)


def packet(rid: str, seq: int, nal: bytes, ts: int | None = None) -> bytes:
    ts = seq * 3000 if ts is None else ts
    header = struct.pack("!BBHII", 0x80, 0x80 | H264.payload_type, seq, ts, SSRC[rid])
    return header + nal + b"\xaa" * 50


def make() -> tuple[TrackReceiver, DownTrack, RecordingSink, Upstream]:
    params = MediaParams(
        mid="0", kind="video", codecs=(H264,), extensions={URI_MID: 1}, local_ssrc=1,
        local_rtx_ssrc=2, rids=("q", "f"),
    )  # fmt: skip
    upstream = Upstream()
    track = TrackReceiver(
        TrackInfo("TR_h", "PA_h", "video"), params, upstream, 0.5, PublisherClock()
    )
    for layer in track.layers:
        assert layer.rid is not None
        layer.ssrc = SSRC[layer.rid]
    sub = MediaParams("3", "video", (H264,), {URI_MID: 4}, local_ssrc=0xBEEF, local_rtx_ssrc=0xBEF0)
    sink = RecordingSink()
    down_track = DownTrack(track, OutgoingStream(sub, 500, 9000), sink)
    track.down_tracks.append(down_track)
    return track, down_track, sink, upstream


def sender(track: TrackReceiver) -> Callable[[str, bytes], None]:
    """send(rid, nal): the next packet of that layer, in its own numbering."""
    q, f = track.layers
    seq = {"q": 100, "f": 40000}

    def send(rid: str, nal: bytes) -> None:
        (q if rid == "q" else f).on_rtp(packet(rid, seq[rid], nal), 1.0)
        seq[rid] += 1

    return send


# (rid, NAL, forwarded?) after starting on q and asking for f
ROWS: list[tuple[str, bytes, bool, str]] = [
    ("q", SLICE, True, "the current layer flows while the switch waits"),
    ("f", SLICE, False, "the target's frames before its IDR are not forwarded"),
    ("q", SLICE, True, "still the current layer"),
    ("q", IDR, False, "the current layer's IDR is held back: the target's may follow"),
    ("f", IDR, True, "the target's IDR: the switch (the held one is never sent)"),
    ("q", SLICE, False, "the old layer stops at once"),
    ("f", SLICE, True, "the new layer flows"),
    ("q", IDR, False, "even an IDR of the old layer"),
]


def test_an_h264_switch_happens_at_the_targets_idr_and_numbers_stay_continuous() -> None:
    track, down_track, sink, upstream = make()
    q, f = track.layers
    send = sender(track)

    down_track.set_layer(q, 1.0)
    for _ in range(2):  # probation (RFC 3550 A.1) takes the second packet of each layer
        send("q", IDR)
        send("f", SLICE)
    assert down_track.layer is q
    started = len(sink.packets)
    upstream.requests.clear()
    down_track.set_layer(f, 1.0)
    assert upstream.requests == [SSRC["f"]], "a keyframe asked of the target layer only"
    for rid, nal, forwarded, why in ROWS:
        before = len(sink.packets)
        send(rid, nal)
        assert len(sink.packets) - before == int(forwarded), why
    out = [struct.unpack_from("!H", p, 2)[0] for p in sink.packets[started - 1 :]]
    assert [b - a for a, b in pairwise(out)] == [1] * (len(out) - 1)
    assert down_track.layer is f and down_track.stream.layer_switches == 1


@pytest.mark.parametrize("again", ["target", "current"])
def test_changing_the_target_while_waiting_leaves_no_trace(again: str) -> None:
    """Asked for f twice: one wait, one switch. Asked for f, then q again: f's IDRs start
    nothing (the switch is off), and the down-track waits on no layer."""
    track, down_track, _, _ = make()
    q, f = track.layers
    down_track.set_layer(q, 1.0)
    q.on_rtp(packet("q", 1, IDR), 1.0)
    q.on_rtp(packet("q", 2, IDR), 1.0)
    down_track.set_layer(f, 1.0)
    down_track.set_layer(f if again == "target" else q, 1.0)
    assert f.waiting == ([down_track] if again == "target" else [])
    for s in (1, 2):
        f.on_rtp(packet("f", s, IDR), 1.0)
    assert down_track.layer is (f if again == "target" else q)


@pytest.mark.parametrize("release", ["next frame", "timer", "switch called off"])
def test_a_held_keyframe_is_sent_late_when_the_targets_does_not_come(release: str) -> None:
    """Held back for the target's keyframe, the current layer's keyframe goes out after all —
    before the next frame, when the hold times out, or when the switch is called off — and
    the subscriber's sequence numbers have no gap."""
    track, down_track, sink, upstream = make()
    q, f = track.layers
    down_track.set_layer(q, 1.0)
    for seq in (1, 2):
        q.on_rtp(packet("q", seq, IDR), 1.0)
    down_track.set_layer(f, 1.0)
    upstream.timers.clear()
    sent = len(sink.packets)
    q.on_rtp(packet("q", 3, IDR, ts=9000), 1.0)
    q.on_rtp(packet("q", 4, SLICE, ts=9000), 1.0)  # the rest of that frame: held too
    assert len(sink.packets) == sent
    ((_, fire),) = upstream.timers
    if release == "next frame":
        q.on_rtp(packet("q", 5, SLICE, ts=12000), 1.0)
        expected = [3, 4, 5]
    elif release == "timer":
        fire()
        expected = [3, 4]
    else:
        down_track.set_layer(q, 1.0)
        expected = [3, 4]
    fire()  # a late timer after a release changes nothing
    timestamps = [struct.unpack_from("!I", p, 4)[0] for p in sink.packets[sent:]]
    assert len(timestamps) == len(expected)
    out = [struct.unpack_from("!H", p, 2)[0] for p in sink.packets[sent - 1 :]]
    assert [b - a for a, b in pairwise(out)] == [1] * len(expected)
    assert down_track.layer is q and q.down_tracks == [down_track]


def test_a_move_down_at_once_stops_the_current_layer_before_the_targets_idr() -> None:
    """A downgrade for congestion: the layer left sends nothing more (its packets would only
    fill the queues the target's IDR must cross); numbers stay continuous across the gap."""
    track, down_track, sink, _ = make()
    q, f = track.layers
    send = sender(track)

    down_track.set_layer(f, 1.0)
    for _ in range(2):
        send("f", IDR)
        send("q", SLICE)
    assert down_track.layer is f
    before = len(sink.packets)
    down_track.set_layer(q, 1.1, at_once=True)
    assert down_track.layer is None and down_track.target is q
    send("f", SLICE)
    send("f", IDR)
    send("q", SLICE)
    assert len(sink.packets) == before, "neither layer until the target's IDR"
    send("q", IDR)
    send("q", SLICE)
    nals = [p[payload_bounds(p)[0]] for p in sink.packets[before:]]
    assert nals == [IDR[0], SLICE[0]], "the target's IDR, then its frames"
    assert down_track.layer is q and down_track.stream.layer_switches == 1
    seqs = [struct.unpack_from("!H", p, 2)[0] for p in sink.packets]
    assert all(b - a == 1 for a, b in pairwise(seqs)), seqs


@pytest.mark.parametrize(
    ("budget", "cut"),
    [(1_000_000, False), (400_000, True)],
    ids=["an estimate sawing down: f flows until q's IDR", "a link far below f: f stops at once"],
)
def test_a_downgrade_for_budget_stops_the_layer_at_once_only_far_below_it(
    budget: int, cut: bool
) -> None:
    track, down_track, _, _ = make()
    q, f = track.layers
    side = track.publisher_side = PublisherSide(track)
    side.ranked = (Layer("q", 150e3), Layer("f", 1.2e6))
    allocation = SubscriberAllocation(lambda track_id: TrackSettings())
    allocation.run([down_track], 0.0, 10e6)
    send = sender(track)
    for _ in range(2):  # the first packets of a source are on probation
        send("f", IDR)
    assert down_track.layer is f and allocation.last.allocated == 1.2e6
    allocation.run([down_track], 1.0, budget)
    assert down_track.target is q
    assert (down_track.layer is None) == cut == (budget < CUT_BELOW * 1.2e6)


def test_a_track_the_operator_muted_is_paused_whatever_the_subscriber_asked() -> None:
    track, down_track, sink, _ = make()
    _, f = track.layers
    side = track.publisher_side = PublisherSide(track)
    side.ranked = (Layer("q", 150e3), Layer("f", 1.2e6))
    allocation = SubscriberAllocation(lambda track_id: TrackSettings(max_layer=1))
    allocation.run([down_track], 0.0, 10e6)
    send = sender(track)
    for _ in range(2):
        send("f", IDR)
    assert down_track.layer is f
    track.block(True)
    allocation.run([down_track], 1.0, 10e6)
    sent = len(sink.packets)
    for nal in (IDR, SLICE, IDR):
        send("f", nal)
        send("q", nal)
    assert down_track.layer is None and len(sink.packets) == sent  # nothing passes
    assert allocation.last.paused == frozenset()  # not a pause for bandwidth
    track.block(False)
    allocation.run([down_track], 2.0, 10e6)
    send("f", IDR)
    assert down_track.layer is f and len(sink.packets) == sent + 1
