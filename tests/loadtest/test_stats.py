"""The load generator's pure pieces: stream statistics, latency matching, percentiles, parsing."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from loadtest.cli import is_loopback, main, parse_bitrate, parse_size
from loadtest.participant import LoadParticipant, Shared
from loadtest.report import _sdp, _tracks
from loadtest.runner import LoadConfig, LoadRun
from loadtest.server import Scrape, cpu_percent, merge, metrics_url, parse
from loadtest.stats import (
    FREEZE_GAP,
    CpuMeter,
    GcPauses,
    LargestSdp,
    LatencyBook,
    LoopLag,
    MachineCpu,
    ReceivedStream,
    histogram_quantile,
    m_lines,
    percentile,
    summary,
)

# --- a received stream ---


def test_loss_is_the_sequence_gap_left_unfilled() -> None:
    stream = ReceivedStream(0.0)
    for seq in (10, 11, 13, 14, 17):  # 12, 15 and 16 missing
        stream.on_packet(seq, False, 100, 0.0)
    assert (stream.expected, stream.packets, stream.lost) == (8, 5, 3)
    stream.on_packet(12, False, 100, 0.0)  # late, not lost after all
    assert stream.lost == 2
    assert stream.bytes == 600


def test_sequence_numbers_wrap() -> None:
    stream = ReceivedStream(0.0)
    for seq in (65534, 65535, 0, 1):
        stream.on_packet(seq, False, 10, 0.0)
    assert (stream.expected, stream.lost) == (4, 0)


def test_frames_end_with_the_marker_and_long_gaps_are_freezes() -> None:
    stream = ReceivedStream(0.0)
    times = [1.0, 1.033, 1.066, 1.066 + FREEZE_GAP + 0.1, 1.8]
    for seq, at in enumerate(times):
        stream.on_packet(seq, False, 100, at - 0.001)  # a first packet, not a frame yet
        stream.on_packet(seq + 1000, True, 100, at)
    assert stream.frames == 5
    assert stream.first_frame_at == 1.0
    assert stream.freezes == 1
    assert stream.frozen == pytest.approx(FREEZE_GAP + 0.1)
    assert stream.longest_gap == pytest.approx(FREEZE_GAP + 0.1)


def test_a_stream_silent_at_the_end_is_frozen_until_then() -> None:
    stream = ReceivedStream(0.0)
    stream.on_packet(1, True, 100, 1.0)
    stream.close(1.2)
    assert stream.freezes == 0
    stream.close(3.0)
    assert stream.freezes == 1 and stream.frozen == pytest.approx(2.0)


# --- latency matching ---


def test_latency_book_keeps_two_generations() -> None:
    book = LatencyBook(keep=5.0)
    book.rotate(0.0)
    book.sent("PA_a", 1, 0.5)
    book.rotate(5.0)  # 1 moves to the previous generation
    book.sent("PA_a", 2, 5.5)
    assert book.sent_at("PA_a", 1) == 0.5
    assert book.sent_at("PA_b", 1) is None  # keyed by publisher too
    book.rotate(10.0)  # 1 is forgotten
    assert book.sent_at("PA_a", 1) is None
    assert book.sent_at("PA_a", 2) == 5.5
    assert len(book) == 1


def test_a_payload_sent_again_keeps_its_latest_send_time() -> None:
    book = LatencyBook()
    book.sent("PA_a", 7, 1.0)
    book.sent("PA_a", 7, 3.0)
    assert book.sent_at("PA_a", 7) == 3.0


# --- percentiles ---


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)


def test_summary_scales_and_rounds() -> None:
    result = summary([0.001, 0.002, 0.003], scale=1000.0, digits=1)
    assert result["count"] == 3
    assert (result["min"], result["p50"], result["max"], result["mean"]) == (1.0, 2.0, 3.0, 2.0)
    assert summary([]) == {"count": 0}


def test_histogram_quantile_as_prometheus() -> None:
    buckets = [(0.001, 10.0), (0.002, 30.0), (math.inf, 40.0)]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.0015)
    assert histogram_quantile(0.99, buckets) == 0.002  # in +Inf: the last finite bound
    assert histogram_quantile(0.5, [(0.001, 0.0), (math.inf, 0.0)]) is None


def test_cpu_meter_is_percent_of_one_core() -> None:
    clock = iter([0.0, 1.0, 3.0])
    cpu = iter([10.0, 10.5, 12.5])
    meter = CpuMeter(cpu=lambda: next(cpu), clock=lambda: next(clock))
    assert meter.percent() == pytest.approx(50.0)
    assert meter.percent() == pytest.approx(100.0)


# --- the server's metrics ---

TEXT = """\
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# TYPE sfu_rtp_packets_received_total counter
sfu_rtp_packets_received_total{kind="audio"} 10.0
sfu_rtp_packets_received_total{kind="video"} 30.0
# TYPE sfu_forwarding_latency_seconds histogram
sfu_forwarding_latency_seconds_bucket{le="1e-05"} 3.0
sfu_forwarding_latency_seconds_bucket{le="+Inf"} 4.0
sfu_forwarding_latency_seconds_count 4.0
sfu_forwarding_latency_seconds_sum 0.0001
"""


def test_scrapes_parse_into_named_samples() -> None:
    scrape = parse(TEXT, at=1.0)
    assert scrape.total("sfu_rtp_packets_received_total") == 40.0
    assert scrape.get("sfu_rtp_packets_received_total{kind=video}") == 30.0
    assert scrape.buckets() == [(1e-05, 3.0), (math.inf, 4.0)]


def test_a_server_with_workers_parses_as_one() -> None:
    # sfu serve --workers 2: each worker's samples carry worker="k"; the load test adds them up
    text = """\
# TYPE sfu_rooms gauge
sfu_rooms{worker="0"} 1.0
sfu_rooms{worker="1"} 2.0
# TYPE sfu_rtp_packets_received_total counter
sfu_rtp_packets_received_total{kind="video",worker="0"} 30.0
sfu_rtp_packets_received_total{kind="video",worker="1"} 12.0
# TYPE sfu_forwarding_latency_seconds histogram
sfu_forwarding_latency_seconds_bucket{le="1e-05",worker="0"} 3.0
sfu_forwarding_latency_seconds_bucket{le="+Inf",worker="0"} 4.0
sfu_forwarding_latency_seconds_bucket{le="1e-05",worker="1"} 1.0
sfu_forwarding_latency_seconds_bucket{le="+Inf",worker="1"} 5.0
"""
    scrape = parse(text, at=1.0)
    assert scrape.get("sfu_rooms") == 3.0
    assert scrape.samples["sfu_rtp_packets_received_total{kind=video}"] == 42.0
    assert scrape.buckets() == [(1e-05, 4.0), (math.inf, 9.0)]


def test_server_cpu_between_two_scrapes() -> None:
    before = Scrape(10.0, {"process_cpu_seconds_total": 1.0})
    after = Scrape(12.0, {"process_cpu_seconds_total": 2.5})
    assert cpu_percent(before, after) == pytest.approx(75.0)
    assert cpu_percent(None, after) is None
    assert cpu_percent(before, Scrape(12.0, {})) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/metrics"),
        ("ws://h:9/ws", "http://h:9/metrics"),
        ("wss://sfu.example/ws", "https://sfu.example/metrics"),
    ],
)
def test_metrics_url(url: str, expected: str) -> None:
    assert metrics_url(url) == expected


def test_the_nodes_scrapes_merge_into_the_cluster_s() -> None:
    a = Scrape(1.0, {"process_cpu_seconds_total": 2.0, "sfu_participants": 3.0})
    b = Scrape(1.0, {"process_cpu_seconds_total": 0.5, "sfu_nacks_received_total{kind=x}": 1.0})
    merged = merge([a, b])
    assert merged is not None
    assert merged.samples == {
        "process_cpu_seconds_total": 2.5,
        "sfu_participants": 3.0,
        "sfu_nacks_received_total{kind=x}": 1.0,
    }
    assert merge([a]) is a
    assert merge([a, None]) is None  # a node that did not answer: no cluster total this time


# --- rooms over several servers ---


def test_rooms_go_round_robin_over_the_urls() -> None:
    urls = ("ws://127.0.0.2:1/ws", "ws://127.0.0.3:1/ws")
    config = LoadConfig(urls=urls, rooms=5, participants=2)
    participants = LoadRun(config)._participants(Shared(urls, None, None))
    rooms = {(p.room, p.node) for p in participants}
    assert sorted(node for _, node in rooms) == [0, 0, 0, 1, 1]  # rooms 0, 2, 4 and 1, 3
    assert len({room for room, _ in rooms}) == 5  # a room on one node only
    assert [p.node for p in participants[:5]] == [0, 1, 0, 1, 0]


@pytest.mark.parametrize(
    "urls",
    [
        ["http://127.0.0.1:1", "http://127.0.0.1:1"],  # twice
        ["127.0.0.1:8080"],  # no scheme
        ["ftp://127.0.0.1/"],
    ],
)
def test_bad_server_urls_are_refused_before_anything_starts(urls: list[str]) -> None:
    result = CliRunner().invoke(main, [*urls, "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "URL" in result.output


def test_every_url_needs_a_room() -> None:
    urls = ["http://127.0.0.2:1", "http://127.0.0.3:1", "http://127.0.0.4:1"]
    result = CliRunner().invoke(main, [*urls, "--rooms", "2", "--no-progress"])
    assert result.exit_code == 2
    assert "3 URLs need at least 3 rooms" in result.output


# --- command-line values ---


def test_command_line_values() -> None:
    assert parse_bitrate("300k") == 300_000
    assert parse_bitrate("1.5M") == 1_500_000
    assert parse_bitrate("64000") == 64_000
    assert parse_size("640x360") == (640, 360)
    assert is_loopback("http://127.0.0.1:8080") and is_loopback("ws://localhost/ws")
    assert not is_loopback("http://192.0.2.1:8080")
    for bad in ("fast", "-3k"):
        with pytest.raises(click.BadParameter):
            parse_bitrate(bad)
    for bad in ("640", "641x360", "0x0"):
        with pytest.raises(click.BadParameter):
            parse_size(bad)


# --- the generator's health ---


def test_machine_cpu_from_proc_stat(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 ...\n")
    machine = MachineCpu(str(stat))
    stat.write_text("cpu  250 0 150 900 0 0 0 0 0 0\n")  # 200 busy of 300
    cpus = os.cpu_count() or 1
    assert machine.percent() == pytest.approx(100.0 * cpus * 200 / 300)
    assert MachineCpu(str(tmp_path / "missing")).percent() is None


async def test_loop_lag_sees_a_blocked_loop() -> None:
    lag = LoopLag(period=0.005)
    lag.start()
    await asyncio.sleep(0.02)
    time.sleep(0.1)  # noqa: ASYNC251 - block the loop, as a slow callback would
    await asyncio.sleep(0.02)
    lag.stop()
    assert lag.take() >= 0.05
    assert lag.take() == 0.0


def test_gc_pauses_are_timed() -> None:
    pauses = GcPauses()
    pauses.start()
    try:
        gc.collect()
    finally:
        pauses.stop()
    total, worst = pauses.take()
    assert total > 0 and worst > 0
    assert pauses.take() == (0.0, 0.0)


# --- SDP sizes and tracks received ---


def _sdp_text(kinds: list[str]) -> str:
    return "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" + "".join(
        f"m={kind} 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{i}\r\n" for i, kind in enumerate(kinds)
    )


def test_largest_sdp_keeps_the_largest_and_its_m_lines() -> None:
    assert m_lines(_sdp_text(["audio", "video", "video"])) == 3
    assert m_lines("m=audio 9 RTP/AVP 0\r\n") == 1
    largest = LargestSdp()
    for kinds in (["audio"], ["audio", "video", "video"], ["video"]):
        largest.note(_sdp_text(kinds))
    assert (largest.count, largest.m_lines) == (3, 3)
    assert largest.chars == len(_sdp_text(["audio", "video", "video"]))


def _participant(room: str, name: str, pid: str, tracks: list[str]) -> LoadParticipant:
    p = LoadParticipant(Shared(("ws://127.0.0.1:1/ws",), None, None), room, name, bool(tracks))
    p.participant_id, p.track_ids, p.joined_at, p.state = pid, tracks, 1.0, "connected"
    return p


def _receives(p: LoadParticipant, ssrc: int, track_id: str, packets: int = 1) -> None:
    stream = p.streams[ssrc] = ReceivedStream(0.0)
    stream.track_id = track_id
    for seq in range(packets):
        stream.on_packet(seq, False, 100, 0.0)


def test_tracks_missing_are_counted_per_room_and_participant() -> None:
    a = _participant("r1", "a", "PA_a", ["TR_a1", "TR_a2"])
    b = _participant("r1", "b", "PA_b", [])
    c = _participant("r1", "c", "PA_c", [])
    other_room = _participant("r2", "d", "PA_d", ["TR_d1"])
    _receives(b, 1, "TR_a1")
    _receives(b, 2, "TR_a2")
    _receives(c, 3, "TR_a1")
    _receives(c, 4, "TR_a2", packets=0)  # an m-line that never carried a packet
    report = _tracks([a, b, c, other_room])
    assert report["published"] == 3
    assert report["participants_checked"] == 4
    assert report["participants_missing_any"] == 1
    assert report["missing"] == 1
    assert report["examples"] == ["c (connected): 1 of 2"]
    assert report["expected_per_participant"]["max"] == 2


def test_sdp_report_takes_the_largest_and_checks_the_budget() -> None:
    a = _participant("r1", "a", "PA_a", [])
    b = _participant("r1", "b", "PA_b", [])
    a.sdp_received.note(_sdp_text(["audio"] * 12))
    a.sdp_sent.note(_sdp_text(["audio"] * 12))
    b.sdp_received.note(_sdp_text(["audio"] * 2))
    b.sdp_sent.note("x" * 200_000 + "\nm=audio")  # over what 1 m-line (and 16 more) may take
    report = _sdp([a, b])
    assert report["largest_received"] == {"chars": len(_sdp_text(["audio"] * 12)), "m_lines": 12}
    assert report["largest_sent"]["m_lines"] == 1
    assert report["received_m_lines"]["max"] == 12
    assert report["sent_over_budget"] == 1
    assert report["message_limit_chars"] > 0
    assert report["server_errors"] == {}
