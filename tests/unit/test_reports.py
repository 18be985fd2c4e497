from __future__ import annotations

import pytest

from sfu.media.reports import (
    NTP_EPOCH_OFFSET,
    PublisherClock,
    ReceptionStats,
    SenderClock,
    ntp_middle,
    ntp_timestamp,
    ntp_to_unix,
    rtt_from_report,
)
from sfu.rtp.rtcp import ReportBlock

S = 0x10000  # extended sequence numbers from SequenceUnwrapper start in cycle 1


@pytest.mark.parametrize(
    ("wall", "ntp"),
    [
        (0.0, NTP_EPOCH_OFFSET << 32),
        (1.5, ((NTP_EPOCH_OFFSET + 1) << 32) | 0x80000000),
        (1_700_000_000.25, ((1_700_000_000 + NTP_EPOCH_OFFSET) << 32) | 0x40000000),
        (2_085_978_495.75, (0xFFFFFFFF << 32) | 0xC0000000),  # the last second of NTP era 0
        (2_085_978_496.0, 0),  # 2036-02-07: era 1 starts over
        (-NTP_EPOCH_OFFSET + 0.0, 0),
    ],
)
def test_ntp_timestamp(wall: float, ntp: int) -> None:
    assert ntp_timestamp(wall) == ntp


@pytest.mark.parametrize(
    ("ntp", "middle"),
    [(0x0123456789ABCDEF, 0x456789AB), (0, 0), (0xFFFFFFFFFFFFFFFF, 0xFFFFFFFF)],
)
def test_ntp_middle(ntp: int, middle: int) -> None:
    assert ntp_middle(ntp) == middle


# the second before an NTP second count that is a multiple of 65536: LSR wraps in between
WRAP_WALL = 65536 * 33707 - NTP_EPOCH_OFFSET - 0.125


@pytest.mark.parametrize(
    ("sent", "dlsr", "now", "rtt"),
    [
        (1000.0, 0.5, 1000.75, 0.25),
        (1000.0, 0.0, 1000.0, 0.0),
        (1_700_000_000.5, 1.0, 1_700_000_001.625, 0.125),
        (WRAP_WALL, 0.25, WRAP_WALL + 0.5, 0.25),  # middle 32 bits wrap between SR and now
        (1000.0, 0.5, 1000.4375, 0.0),  # "negative" (the reporter's rounding): 0
    ],
)
def test_rtt_from_report(sent: float, dlsr: float, now: float, rtt: float) -> None:
    lsr = ntp_middle(ntp_timestamp(sent))
    assert rtt_from_report(lsr, int(dlsr * 65536), now) == pytest.approx(rtt, abs=1 / 65536)


def test_rtt_without_sender_report() -> None:
    assert rtt_from_report(0, 0, 1000.0) is None


def block(fraction: int, lost: int, highest: int, jitter: int = 0) -> ReportBlock:
    return ReportBlock(0x1234, fraction, lost, highest, jitter, 0, 0)


# a list of intervals: the packets (extended seqs) received, then the block expected
Interval = tuple[list[int], ReportBlock]

LOSS_CASES: dict[str, list[Interval]] = {
    "nothing received": [([], block(0, 0, 0))],
    "in order": [([S + i for i in range(100, 110)], block(0, 0, 109))],
    "two lost of ten": [([S + i for i in range(10) if i not in (3, 7)], block(51, 2, 9))],
    "loss then none": [
        ([S + i for i in range(10) if i not in (3, 7)], block(51, 2, 9)),
        ([S + i for i in range(10, 20)], block(0, 2, 19)),
        ([], block(0, 2, 19)),
    ],
    "late arrival repairs the count": [
        ([S + 0, S + 1, S + 3], block(64, 1, 3)),  # 1 of 4
        ([S + 2, S + 4], block(0, 0, 4)),
    ],
    "duplicates make loss negative": [([S + 1, S + 2, S + 3, S + 3, S + 3], block(0, -2, 3))],
    "half lost": [([S + 2 * i for i in range(50)], block(126, 49, 98))],  # 49 of 99
    "cumulative loss clamps to 24 bits": [([S, S + 10_000_000], block(255, 0x7FFFFF, 10_000_000))],
    "wrap counts a cycle": [
        ([S + 65534, S + 65535, 2 * S, 2 * S + 1], block(0, 0, 0x10001)),
    ],
    "the first packet's cycle is cycle 0": [([3 * S + 5, 3 * S + 6], block(0, 0, 6))],
    "reordered before the first": [([S + 5, S + 3, S + 4], block(0, 0, 5))],
}


@pytest.mark.parametrize("intervals", LOSS_CASES.values(), ids=LOSS_CASES)
def test_report_block_loss(intervals: list[Interval]) -> None:
    stats = ReceptionStats(90000)
    received = 0
    for i, (packets, expected) in enumerate(intervals):
        for ext_seq in packets:
            stats.on_packet(ext_seq, 0, 0.0)  # equal timestamps and arrivals: no jitter
        received += len(packets)
        assert stats.report_block(0x1234, float(i)) == expected, f"interval {i}"
        assert stats.packets_received == received
        if abs(expected.packets_lost) < 0x7FFFFF:  # else clamped in the block only
            assert stats.packets_lost == expected.packets_lost


def test_packets_lost_is_not_clamped() -> None:
    stats = ReceptionStats(90000)
    stats.on_packet(S, 0, 0.0)
    stats.on_packet(S + 10_000_000, 0, 1.0)
    assert stats.packets_lost == 9_999_999
    assert stats.report_block(1, 1.0).packets_lost == 0x7FFFFF


@pytest.mark.parametrize(
    ("clock_rate", "packets", "jitter"),
    [
        # (rtp timestamp, arrival): perfectly paced -> 0
        (8000, [(160 * i, 0.02 * i) for i in range(50)], 0.0),
        # the third packet 10 ms late: |D| = 10, then 10 ms early relative to it: |D| = 10
        (1000, [(0, 0.0), (20, 0.02), (40, 0.05), (60, 0.06)], 1.2109375),
        # timestamps wrap: still paced
        (48000, [((0xFFFFFE00 + 960 * i) & 0xFFFFFFFF, 0.02 * i) for i in range(5)], 0.0),
        # a video frame's packets share a timestamp and arrive together
        (90000, [(3000 * (i // 3), (i // 3) / 30) for i in range(30)], 0.0),
        # constant network delay does not count
        (90000, [(3000 * i, 5.0 + i / 30) for i in range(30)], 0.0),
    ],
)
def test_jitter(clock_rate: int, packets: list[tuple[int, float]], jitter: float) -> None:
    stats = ReceptionStats(clock_rate)
    for seq, (rtp_ts, arrival) in enumerate(packets):
        stats.on_packet(S + seq, rtp_ts, arrival)
    assert stats.jitter_seconds == pytest.approx(jitter / clock_rate, abs=1e-9)
    assert stats.report_block(1, 10.0).jitter == int(jitter + 1e-6)


def test_jitter_matches_rfc_3550_a8() -> None:
    """Against a direct transcription of the RFC's transit-time formula, with uneven delays."""
    clock_rate = 90000
    delays = [0.010, 0.030, 0.012, 0.050, 0.011, 0.020, 0.015, 0.090, 0.013, 0.014]
    stats = ReceptionStats(clock_rate)
    expected = 0.0
    last_transit = None
    for i, delay in enumerate(delays * 3):
        rtp_ts, arrival = 3000 * i, i / 30 + delay
        stats.on_packet(S + i, rtp_ts, arrival)
        transit = arrival * clock_rate - rtp_ts
        if last_transit is not None:
            expected += (abs(transit - last_transit) - expected) / 16
        last_transit = transit
    assert stats.jitter_seconds * clock_rate == pytest.approx(expected)


@pytest.mark.parametrize(
    ("sr_ntp", "sr_at", "now", "lsr", "dlsr"),
    [
        (None, 0.0, 5.0, 0, 0),
        (0x0123456789ABCDEF, 10.0, 10.5, 0x456789AB, 32768),
        (0x0123456789ABCDEF, 10.0, 10.0, 0x456789AB, 0),
        (0x0000FFFF80000000, 1.0, 3.25, 0xFFFF8000, 2 * 65536 + 16384),
    ],
)
def test_lsr_dlsr(sr_ntp: int | None, sr_at: float, now: float, lsr: int, dlsr: int) -> None:
    stats = ReceptionStats(90000)
    stats.on_packet(S, 0, 0.0)
    if sr_ntp is not None:
        stats.on_sender_report(sr_ntp, sr_at)
    report = stats.report_block(7, now)
    assert (report.ssrc, report.lsr, report.dlsr) == (7, lsr, dlsr)


def test_report_block_and_rtt_round_trip() -> None:
    """Our SR's NTP comes back as LSR with a DLSR; the RTT follows."""
    sender_wall = 1_700_000_000.0
    receiver = ReceptionStats(48000)
    receiver.on_packet(S, 0, 0.0)
    receiver.on_sender_report(ntp_timestamp(sender_wall), now=100.0)  # SR took 50 ms
    report = receiver.report_block(1, now=100.5)  # sent 0.5 s later, arrives 50 ms later
    rtt = rtt_from_report(report.lsr, report.dlsr, sender_wall + 0.05 + 0.5 + 0.05)
    assert rtt == pytest.approx(0.1, abs=2 / 65536)


UNIX = 1_700_000_000.0  # a wall-clock time for the tables below


@pytest.mark.parametrize(
    ("sr_rtp", "transit", "elapsed", "clock_rate", "rtp"),
    [
        (1000, 0.0, 0.0, 90000, 1000),
        (1000, 0.0, 1.0, 90000, 91000),
        (1000, 0.05, 1.0, 90000, 91000),  # one SR: its transit is taken as the clock offset
        (1000, 0.0, 0.5, 48000, 25000),
        (0xFFFFFF00, 0.0, 0.01, 48000, 0xFFFFFF00 + 480 - 0x100000000),  # wraps
        (1000, 0.0, -0.01, 90000, 100),  # an instant before the SR's own
        (100, 0.0, -0.01, 90000, 100 - 900 + 0x100000000),
    ],
)
def test_sender_clock_extrapolates_from_the_sr_ntp_time(
    sr_rtp: int, transit: float, elapsed: float, clock_rate: int, rtp: int
) -> None:
    clock = SenderClock()
    assert clock.rtp_at(UNIX, clock_rate) is None
    ntp = ntp_timestamp(UNIX)
    clock.on_sender_report(ntp, sr_rtp, UNIX + transit)
    assert clock.rtp_at(UNIX + transit + elapsed, clock_rate) == rtp
    assert clock.last_ntp == ntp


def test_ntp_to_unix_inverts_ntp_timestamp() -> None:
    assert ntp_to_unix(ntp_timestamp(UNIX + 0.25)) == pytest.approx(UNIX + 0.25, abs=1e-6)


def test_publisher_clock_takes_the_least_delayed_report() -> None:
    clock = PublisherClock()
    assert clock.offset is None
    for sent, arrived in ((10.0, 10.08), (11.0, 11.02), (12.0, 12.05)):
        clock.on_sender_report(ntp_timestamp(UNIX + sent), UNIX + arrived)
    assert clock.offset == pytest.approx(0.02, abs=1e-6)
    for i in range(PublisherClock.WINDOW):  # old samples age out
        clock.on_sender_report(ntp_timestamp(UNIX + 20 + i), UNIX + 20 + i + 0.04)
    assert clock.offset == pytest.approx(0.04, abs=1e-6)


@pytest.mark.parametrize(
    ("audio_staleness", "video_staleness"),
    [
        (0.0, 0.0),
        (0.02, 0.066),  # aiortc stamps an SR with the time of the last packet sent
        (0.0, 0.3),
    ],
)
def test_streams_of_one_publisher_keep_their_relative_timing(
    audio_staleness: float, video_staleness: float
) -> None:
    """Each stream's RTP time at one wall instant is what the publisher's own mapping says."""
    a0, v0 = 123_456, 3_000_000_000
    offset, transit = 500.0, 0.03  # our clock = publisher's + 500 s; SRs take 30 ms
    publisher = PublisherClock()
    audio, video = SenderClock(publisher), SenderClock(publisher)
    for t in (1.0, 2.0, 3.0):
        # the SR stamped at NTP time (t - staleness) maps that instant to its RTP time
        ta, tv = t - audio_staleness, t + 0.3 - video_staleness
        audio.on_sender_report(
            ntp_timestamp(UNIX + ta), a0 + round(48000 * ta), UNIX + offset + t + transit
        )
        video.on_sender_report(
            ntp_timestamp(UNIX + tv), v0 + round(90000 * tv), UNIX + offset + t + 0.3 + transit
        )
    for dt in (0.0, 0.5, 2.5):
        now = UNIX + offset + 3.3 + dt
        audio_rtp, video_rtp = audio.rtp_at(now, 48000), video.rtp_at(now, 90000)
        assert audio_rtp is not None and video_rtp is not None
        audio_t = ((audio_rtp - a0) & 0xFFFFFFFF) / 48000
        video_t = ((video_rtp - v0) & 0xFFFFFFFF) / 90000
        assert audio_t == pytest.approx(video_t, abs=1 / 48000 + 1 / 90000)
