"""The forwarding benchmark's simulcast case: case syntax, layer rates and counts, the layers'
packets, and a quick run against aiosfu in which each subscriber gets only its layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import forwarding
from benchmarks.cases import SIMULCAST_LAYERS, Case, layer_rates, layer_stats
from benchmarks.packets import TRAILER
from benchmarks.simulcast_peers import LayerStream
from sfu.media.params import URI_MID, URI_RID
from sfu.rtp.header import parse_extensions, payload_bounds
from sfu.rtp.vp8 import keyframe_size
from sfu_client.simulcast_layer import OutboundLayer, PacketWriter
from sfu_client.simulcast_sdp import Negotiated


def test_simulcast_cases_parse_and_keep_their_keys() -> None:
    case = Case.parse("sim:2x12@2000")
    assert case == Case(2, 12, 2000, simulcast=True)
    assert case.key == "sim:2x12@2000" and Case.parse(case.key) == case
    assert Case.parse("simulcast") == case
    assert Case.parse("16@2000") == Case(1, 16, 2000)  # the old cases are unchanged
    assert Case.parse("16@2000").key == "16@2000"
    with pytest.raises(ValueError, match="sim:RxK@RATE"):
        Case.parse("sim:12")


def test_layer_rates_follow_the_bitrates_with_a_packet_per_frame() -> None:
    assert layer_rates(2000, 30) == (140, 465, 1395)
    assert layer_rates(240, 30) == (30, 56, 167)  # the small layer: one packet per frame
    # 4 subscribers per layer in each of 2 rooms
    assert Case.parse("sim:2x12@2000").forwarded_rate == 2 * 4 * (140 + 465 + 1395)


def test_layer_stats_count_what_each_layers_subscribers_got() -> None:
    sent = {"a": [10, 30, 90], "b": [10, 30, 90]}
    subscribers = [
        {"room": "a", "layer": 0, "by_layer": [10, 0, 0]},
        {"room": "b", "layer": 0, "by_layer": [9, 0, 0]},
        {"room": "a", "layer": 2, "by_layer": [0, 2, 90]},  # 2 packets of the middle layer
    ]
    q, h, f = layer_stats(sent, subscribers, seconds=2.0, payload=1000)
    assert (q["subscribers"], q["expected"], q["received"], q["other_layers"]) == (2, 20, 19, 0)
    assert q["per_subscriber_per_s"] == [4.5, 5.0] and q["sent_per_s"] == 5.0
    assert q["per_subscriber_kbit_s"] == [36.0, 40.0]
    assert (h["subscribers"], h["expected"], h["received"]) == (0, 0, 0)
    assert (f["expected"], f["received"], f["other_layers"]) == (90, 90, 2)
    assert f["received_by_layer"] == [0, 2, 90]


def _stream(layer: int, rate: int = 300) -> tuple[LayerStream, OutboundLayer]:
    negotiated = Negotiated(
        rids=("q", "h", "f"),
        extensions={URI_MID: 1, URI_RID: 2},
        payload_types={"vp8": 96},
    )
    out = OutboundLayer(SIMULCAST_LAYERS[layer].rid)
    out.negotiated = True
    stream = LayerStream(layer, rate, 30, 1100, out, PacketWriter("0", negotiated, True))
    return stream, out


def test_layer_packets_carry_the_layer_its_size_and_rid_until_acknowledged() -> None:
    stream, out = _stream(1)
    first = stream.packet(0, 123)
    start, end = payload_bounds(first)
    assert end - start == 1100 and first[1] & 0x7F == 96
    assert keyframe_size(first, start, end) == (640, 360)
    assert parse_extensions(first) == {1: b"0", 2: b"h"}
    _, sent, index = TRAILER.unpack_from(first, len(first) - TRAILER.size)
    assert (sent, index >> 24, index & 0xFFFFFF) == (123, 1, 0)
    # 10 packets per frame at 300/s and 30 fps: the 10th carries the marker, the 11th is not
    # a keyframe until a PLI asks for one
    packets = [stream.packet(i, 0) for i in range(1, 12)]
    assert [p[1] >> 7 for p in packets[8:11]] == [1, 0, 0]
    assert keyframe_size(packets[9], *payload_bounds(packets[9])) is None
    out.acked = True
    out.request_keyframe()
    assert keyframe_size(stream.packet(21, 0), *payload_bounds(first)) is None  # mid-frame
    key = stream.packet(30, 0)  # frame 3 starts
    assert keyframe_size(key, *payload_bounds(key)) == (640, 360)
    assert not out.keyframe_wanted
    assert parse_extensions(key) == {}  # acknowledged: no mid, no rid


@pytest.mark.e2e
def test_quick_simulcast_run_gives_each_subscriber_only_its_layer(tmp_path: Path) -> None:
    options = ["--quick", "--forwarders", "aiosfu", "--no-netns", "--case", "sim:6@600"]
    document = forwarding.main([*options, "--out", str(tmp_path)])
    (trial,) = document["trials"]
    assert trial["case"] == "sim:6@600" and trial["received"] > 0
    q, h, f = trial["layers"]
    for layer in (q, h, f):
        assert layer["subscribers"] == 2
        assert layer["received"] > 0 and layer["other_layers"] == 0, layer
    assert q["per_subscriber_per_s"][1] < h["per_subscriber_per_s"][0]
    assert h["per_subscriber_per_s"][1] < f["per_subscriber_per_s"][0]
    assert trial["expected"] == sum(layer["expected"] for layer in trial["layers"])
    saved = json.loads(next(tmp_path.glob("forwarding-*.json")).read_text())
    assert [x["rid"] for x in saved["summary"][0]["layers"]] == ["q", "h", "f"]
