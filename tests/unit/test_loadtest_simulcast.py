"""The load test's simulcast pieces: layer options, which layer arrives (VP8 keyframe sizes in
received RTP), latency matching through a rewritten VP8 descriptor, and the report's layers."""

from __future__ import annotations

import struct

import pytest
from click.testing import CliRunner

from loadtest.cli import main
from loadtest.media import EncodedClip, encode_video
from loadtest.participant import LoadParticipant, Shared
from loadtest.simulcast import (
    GRACE,
    LayerPlan,
    LayerSpec,
    counts_now,
    parse_layers,
    parse_subscriber_layers,
    plan_for,
    report,
    switches,
)
from loadtest.stats import ReceivedStream, vp8_descriptor_size
from sfu.rtp.vp8 import parse_descriptor, patch_descriptor
from sfu_client.simulcast_media import vp8_payloads

SSRC = 0x1234


def rtp(seq: int, payload: bytes, marker: bool = False, ssrc: int = SSRC) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 96, seq, seq * 3000, ssrc)
    return header + payload


def frame_packets(frame: bytes, seq: int, picture_id: int = 7) -> list[bytes]:
    payloads = vp8_payloads(frame, picture_id, max_size=300)
    last = len(payloads) - 1
    return [rtp(seq + i, p, marker=i == last) for i, p in enumerate(payloads)]


@pytest.fixture(scope="module")
def clips() -> dict[str, EncodedClip]:
    """Two tiny layers: frame 0 a keyframe, the rest not."""
    return {
        "q": encode_video(64, 36, 30, 0.2, 60_000),
        "f": encode_video(128, 72, 30, 0.2, 150_000),
    }


def participant(name: str = "sub", pid: str = "PA_sub") -> LoadParticipant:
    p = LoadParticipant(Shared(("ws://127.0.0.1:1/ws",), None, None), "room", name, False)
    p.participant_id, p.joined_at, p.state = pid, 0.0, "connected"
    return p


def resolved(p: LoadParticipant, publisher_id: str, track_id: str = "TR_v") -> ReceivedStream:
    stream = p.streams[SSRC] = ReceivedStream(0.0)
    stream.kind, stream.publisher_id, stream.track_id = "video", publisher_id, track_id
    return stream


# --- options ---


def test_layers_are_sorted_small_to_large_and_named_like_a_browser() -> None:
    layers = parse_layers("1280x720@1.5M, 320x180@150k,640x360")
    assert [(la.rid, la.label, la.bitrate) for la in layers] == [
        ("q", "320x180", 150_000),
        ("h", "640x360", 640 * 360 * 3),  # no bitrate: 0.1 bit per pixel at 30 fps
        ("f", "1280x720", 1_500_000),
    ]
    assert [la.rid for la in parse_layers("160x90,320x180")] == ["l0", "l1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("320x180", "2 to 4 layers"),
        ("320x180,641x360", "positive and even"),
        ("320x180,320x180@1M", "same size"),
        ("320x180,big", "not a layer: 'big'"),
        ("320x180@0k,640x360", "positive"),
    ],
)
def test_bad_layers_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_layers(text)


def test_subscriber_layer_plans() -> None:
    assert parse_subscriber_layers("spread", 3) == "spread"
    assert parse_subscriber_layers("2", 3) == 2
    with pytest.raises(ValueError, match="best, spread, cycle or a layer 0 to 2"):
        parse_subscriber_layers("3", 3)
    assert plan_for("best", 4, 3, 5.0) is None
    assert [plan_for("spread", i, 3, 5.0) for i in range(4)] == [
        LayerPlan(0, 3),
        LayerPlan(1, 3),
        LayerPlan(2, 3),
        LayerPlan(0, 3),
    ]
    cycle = plan_for("cycle", 2, 3, 4.0)
    assert cycle == LayerPlan(2, 3, 4.0)
    assert [cycle.layer(step) for step in range(4)] == [2, 0, 1, 2]
    assert plan_for(1, 0, 3, 5.0) == LayerPlan(1, 3)


def test_the_cli_says_what_is_wrong_with_the_layer_options() -> None:
    runner = CliRunner()
    url = "http://127.0.0.1:1"
    done = runner.invoke(main, [url, "--layers", "320x180,640x360"])
    assert done.exit_code == 2 and "--layers needs --simulcast" in done.output
    done = runner.invoke(main, [url, "--simulcast", "--layers", "320x180"])
    assert done.exit_code == 2 and "2 to 4 layers" in done.output
    done = runner.invoke(main, [url, "--simulcast", "--subscriber-layers", "all"])
    assert done.exit_code == 2 and "not 'all'" in done.output


# --- which layer arrives ---


def test_a_stream_takes_the_size_of_each_keyframe_and_counts_switches(
    clips: dict[str, EncodedClip],
) -> None:
    p = participant()
    stream = resolved(p, "PA_pub")
    small, large = clips["q"].frames, clips["f"].frames
    seq, now = 100, 10.0
    # a keyframe of the small layer, then delta frames, then the large layer's keyframe
    for frame in (small[0], small[1], small[2], large[0], large[1], small[0]):
        for packet in frame_packets(frame, seq):
            p._on_rtp_received(packet, now)
            seq += 1
        now += 1 / 30
    assert stream.keyframes == 3
    assert [(w, h) for _, w, h in stream.sizes] == [(64, 36), (128, 72), (64, 36)]
    assert stream.size == (64, 36)
    assert stream.sizes[1][0] == pytest.approx(10.0 + 3 / 30)
    assert switches([stream]) == 2
    assert stream.frames == 6 and stream.lost == 0


def test_only_the_packet_that_starts_a_keyframe_is_looked_at(
    clips: dict[str, EncodedClip],
) -> None:
    """A keyframe's later packets (S=0) and delta frames carry no size; audio is skipped even
    if its bytes look like a VP8 keyframe's first packet."""
    p = participant()
    stream = resolved(p, "PA_pub")
    packets = frame_packets(clips["f"].frames[0], 1)
    assert len(packets) > 2
    for packet in packets[1:]:
        p._on_rtp_received(packet, 1.0)
    assert stream.keyframes == 0 and stream.size is None
    stream.kind = "audio"
    p._on_rtp_received(packets[0], 1.1)
    assert stream.keyframes == 0
    stream.kind = None  # not matched to a track yet: still looked at
    p._on_rtp_received(packets[0], 1.2)
    assert stream.size == (128, 72)


def test_latency_is_matched_through_a_rewritten_vp8_descriptor(
    clips: dict[str, EncodedClip],
) -> None:
    """A simulcast down-track rewrites picture id (and TL0PICIDX/KEYIDX): the packet the
    subscriber gets differs from the one sent, yet its send time is found."""
    publisher = participant("pub", "PA_pub")
    publisher._sent_kinds = {SSRC: "video"}
    sub = participant()
    sub.shared = publisher.shared
    resolved(sub, "PA_pub")
    sent = frame_packets(clips["f"].frames[1], 50, picture_id=300)
    for packet in sent:
        publisher._on_rtp_sent(packet, 2.0)
    for packet in sent:
        rewritten = patch_descriptor(packet, 12, 4242, -1, -1)
        assert rewritten != packet
        sub._on_rtp_received(rewritten, 2.005)
    assert list(sub.latencies) == pytest.approx([0.005] * len(sent))


@pytest.mark.parametrize(
    "descriptor",
    [
        b"\x10",  # no X
        b"\x90\x80\x05",  # 7-bit picture id
        b"\x90\x80\x81\x05",  # 15-bit picture id
        b"\x90\xe0\x81\x05\x11\x40",  # + TL0PICIDX + TID
        b"\x90\xf0\x05\x11\x40",  # 7-bit id, L, T and K in one byte
        b"\x90\x40\x11",  # L only
    ],
)
def test_the_descriptor_size_agrees_with_the_parser(descriptor: bytes) -> None:
    data = b"\x00" * 12 + descriptor + b"\x9c\x01\x2a\x00"
    parsed = parse_descriptor(data, 12, len(data))
    assert parsed is not None
    assert vp8_descriptor_size(data, 12) == parsed.size == len(descriptor)


# --- per second and in the report ---


def stream_with(sizes: list[tuple[float, int, int]], track_id: str = "TR_v") -> ReceivedStream:
    stream = ReceivedStream(0.0)
    stream.kind, stream.publisher_id, stream.track_id = "video", "PA_pub", track_id
    for at, width, height in sizes:
        stream.on_keyframe(width, height, at)
        stream.last_frame_at = at
    return stream


def test_counts_per_second_leave_out_streams_without_a_recent_frame() -> None:
    a = stream_with([(1.0, 320, 180)])
    b = stream_with([(1.0, 320, 180), (2.0, 1280, 720)])
    c = stream_with([(1.0, 640, 360)])
    a.last_frame_at = b.last_frame_at = 2.4
    c.last_frame_at = 1.4  # paused, or frozen
    assert counts_now([a, b, c], 2.5, 1.0) == {"320x180": 1, "1280x720": 1}
    assert switches([a, b, c]) == 1


LAYERS = (
    LayerSpec("q", 320, 180, 150_000),
    LayerSpec("h", 640, 360, 500_000),
    LayerSpec("f", 1280, 720, 1_500_000),
)


def test_the_report_checks_each_stream_against_the_layer_asked_for() -> None:
    publisher = participant("pub", "PA_pub")
    publisher.first_video_sent_at = 1.0
    best = participant("best", "PA_1")  # asks nothing: must end on the best layer
    best.streams[1] = stream_with([(1.2, 1280, 720)])
    low = participant("low", "PA_2")  # asked layer 0 at 1.1 s; got it at 1.25 s
    low.layer_plan = LayerPlan(0, 3)
    low.layer_requests = [(1.1, "TR_v", 0)]
    low.streams[1] = stream_with([(1.2, 1280, 720), (1.25, 320, 180)])
    cycling = participant("cycling", "PA_3")  # 1 (already on it), 2 (came), 0 (never), 1 (late)
    cycling.layer_plan = LayerPlan(1, 3, 2.0)
    cycling.layer_requests = [(2.0, "TR_v", 1), (4.0, "TR_v", 2), (6.0, "TR_v", 0)]
    cycling.layer_requests.append((10.0 - GRACE / 2, "TR_v", 1))
    cycling.streams[1] = stream_with([(1.5, 640, 360), (4.1, 1280, 720)])
    landed = participant("landed", "PA_4")  # its last ask, in the grace period, already came
    landed.layer_plan = LayerPlan(0, 3, 7.5)
    landed.layer_requests = [(2.0, "TR_v", 0), (9.5, "TR_v", 2), (10.5, "TR_v", 0)]
    landed.streams[1] = stream_with([(2.1, 320, 180), (9.6, 1280, 720), (10.6, 320, 180)])
    parts = [publisher, best, low, cycling, landed]

    section = report(parts, 0.0, 10.0, LAYERS, "cycle")

    assert section["video_streams"] == 4
    assert section["switches"] == 3  # what came after the end (10.6) is not counted
    assert section["on_expected_layer"] == {"checked": 4, "matched": 3}  # cycling: not on 0
    moved = section["settings_to_layer_ms"]
    assert moved["count"] == 4 and moved["min"] == pytest.approx(100.0)  # 4.0 -> 4.1
    assert moved["max"] == pytest.approx(150.0)  # 1.1 -> 1.25
    assert (moved["already"], moved["missing"], moved["pending"]) == (1, 1, 1)
    by_layer = section["by_layer"]
    assert list(by_layer) == ["320x180", "640x360", "1280x720"]
    assert by_layer["1280x720"]["streams_at_end"] == 3
    assert by_layer["640x360"]["stream_seconds"] == pytest.approx(2.6)
    # from the later of joined (0) and the publisher's first video (1.0)
    assert by_layer["320x180"]["first_frame_ms"]["min"] == pytest.approx(250.0)
    assert by_layer["320x180"]["first_frame_ms"]["max"] == pytest.approx(1100.0)
    (listed,) = [s for s in section["streams"] if s["subscriber"] == "cycling"]
    assert listed["changes"] == [[1.5, "640x360"], [4.1, "1280x720"]]
    assert listed["expected"] == "320x180" and listed["final"] == "1280x720"
    assert [layer for _, layer in listed["asked_layers"]] == [1, 2, 0, 1]
