"""sfu.media.bandwidth: the budget a subscriber's video gets, and how its connection is rated."""

from __future__ import annotations

import pytest

from sfu.bwe.estimator import BandwidthEstimator
from sfu.bwe.feedback import FeedbackSummary, PacketGroup
from sfu.media.bandwidth import PACKET_OVERHEAD, PROBE_STEP, SubscriberBandwidth, rate_quality

# (loss, rtt, a track paused, a track held below its preferences) -> quality
QUALITY = [
    (0.0, 0.02, False, False, "excellent"),
    (0.0, None, False, False, "excellent"),  # no receiver report yet
    (0.019, 0.149, False, False, "excellent"),
    (0.02, 0.02, False, False, "good"),
    (0.0, 0.15, False, False, "good"),
    (0.0, 0.02, False, True, "good"),
    (0.099, 0.399, False, True, "good"),
    (0.10, 0.02, False, False, "poor"),
    (0.0, 0.4, False, False, "poor"),
    (0.0, 0.02, True, False, "poor"),
]


@pytest.mark.parametrize(("loss", "rtt", "paused", "limited", "expected"), QUALITY)
def test_rate_quality(
    loss: float, rtt: float | None, paused: bool, limited: bool, expected: str
) -> None:
    assert rate_quality(loss, rtt, paused, limited) == expected


def test_no_estimate_at_all_means_no_limit() -> None:
    bandwidth = SubscriberBandwidth(estimator=BandwidthEstimator(initial_probing=False))
    assert bandwidth.budget(0.0, 0, []) is None
    bandwidth.negotiated = True  # transport-cc or REMB negotiated: the estimate counts at once
    assert bandwidth.budget(0.25, 0, []) == pytest.approx(1_000_000)


def test_remb_is_the_estimate_without_transport_cc() -> None:
    bandwidth = SubscriberBandwidth(estimator=BandwidthEstimator(initial_probing=False))
    bandwidth.on_remb(400_000, 0.0)
    assert bandwidth.budget(0.25, 0, []) == pytest.approx(400_000)
    assert bandwidth.stats().source == "remb"


def test_audio_comes_off_the_budget() -> None:
    bandwidth = SubscriberBandwidth(estimator=BandwidthEstimator(initial_probing=False))
    bandwidth.negotiated = True
    bandwidth.budget(0.0, 0, [(0, 0), (0, 0)])
    # two audio tracks, 1 s: 4,000 octets and 50 packets each = 2 x 48 kbit/s with overhead
    budget = bandwidth.budget(1.0, 10_000, [(4_000, 50), (4_000, 50)])
    audio = 2 * (4_000 + 50 * PACKET_OVERHEAD) * 8
    assert budget == pytest.approx(1_000_000 - audio)
    assert bandwidth.send_rate == pytest.approx(80_000)
    report = bandwidth.quality(0.05, 500_000, paused=False, limited=False)
    assert report.allocated == pytest.approx(500_000 + audio)
    assert report.estimate == pytest.approx(1_000_000)


def test_transport_cc_feedback_wins_over_remb() -> None:
    bandwidth = SubscriberBandwidth(estimator=BandwidthEstimator(initial_probing=False))
    bandwidth.on_remb(100_000, 0.0)
    groups = tuple(PacketGroup(0.02 * i, 5.0 + 0.02 * i, 1200) for i in range(10))
    bandwidth.on_feedback(FeedbackSummary(groups, 10, 0, 12_000, 5.0, 5.18), 0.3)
    assert bandwidth.stats().source == "transport-cc"
    assert bandwidth.budget(0.5, 0, []) != pytest.approx(100_000)


def test_pausing_needs_a_measured_estimate() -> None:
    bandwidth = SubscriberBandwidth(estimator=BandwidthEstimator(initial_probing=False))
    bandwidth.negotiated = True
    assert not bandwidth.may_pause(10.0), "the starting guess pauses nothing"
    bandwidth.on_remb(100_000, 10.0)
    assert not bandwidth.may_pause(20.0), "nor REMB: no probe lifts it once nothing is sent"
    groups = tuple(PacketGroup(0.02 * i, 5.0 + 0.02 * i, 1200) for i in range(10))
    bandwidth.on_feedback(FeedbackSummary(groups, 10, 0, 12_000, 5.0, 5.18), 21.0)
    assert not bandwidth.may_pause(22.9)
    assert bandwidth.may_pause(23.0)


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        ([(1.0, False)], 2.5),  # paced at 2.5x the estimate, as libwebrtc
        ([(1.0, True)], 1.0),  # the estimate just fell: at the estimate
        ([(1.0, True), (1.5, False)], 1.0),  # ... for CONGESTED_PACING
        ([(1.0, True), (2.0, False)], 2.5),  # ... then as before
        ([(1.0, True), (1.8, True), (2.5, False)], 1.0),  # a second fall extends it
    ],
    ids=["steady", "fell", "held", "after", "fell again"],
)
def test_pacing_after_the_estimate_fell_drains_the_bottleneck(
    calls: list[tuple[float, bool]], expected: float
) -> None:
    bandwidth = SubscriberBandwidth(estimator=BandwidthEstimator(initial_probing=False))
    assert bandwidth.pacing_rate(0.0) == 0, "no measured estimate: not paced"
    groups = tuple(PacketGroup(0.02 * i, 5.0 + 0.02 * i, 1200) for i in range(10))
    bandwidth.on_feedback(FeedbackSummary(groups, 10, 0, 12_000, 5.0, 5.18), 0.3)
    rate = 0
    for now, fell in calls:
        rate = bandwidth.pacing_rate(now, fell=fell)
    assert rate == int(bandwidth.stats().estimate * expected)


def test_the_loss_reported_is_what_the_feedback_said_since_the_last_report() -> None:
    bandwidth = SubscriberBandwidth(estimator=BandwidthEstimator(initial_probing=False))
    bandwidth.negotiated = True
    groups = (PacketGroup(0.0, 5.0, 1200), PacketGroup(0.02, 5.02, 1200))
    for _ in range(3):
        bandwidth.on_feedback(FeedbackSummary(groups, 85, 15, 100_000, 5.0, 5.02), 1.0)
    assert bandwidth.quality(0.05, 0, False, False).loss == pytest.approx(0.15)
    bandwidth.on_feedback(FeedbackSummary(groups, 100, 0, 100_000, 5.0, 5.02), 3.0)
    assert bandwidth.quality(0.05, 0, False, False).loss == 0.0
    # nothing reported in an interval (everything paused): the last measured loss stands
    bandwidth.on_feedback(FeedbackSummary(groups, 1, 9, 1_200, 5.0, 5.02), 5.0)
    assert bandwidth.quality(0.05, 0, True, False).loss == pytest.approx(0.9)
    report = bandwidth.quality(0.05, 0, True, False)
    assert report.loss == pytest.approx(0.9) and report.quality == "poor"


def test_a_requested_probe_steps_up_rather_than_jump() -> None:
    bandwidth = SubscriberBandwidth(estimator=BandwidthEstimator(initial_probing=False))
    groups = tuple(PacketGroup(0.02 * i, 5.0 + 0.02 * i, 1200) for i in range(10))
    bandwidth.on_feedback(FeedbackSummary(groups, 10, 0, 12_000, 5.0, 5.18), 0.2)
    estimate = bandwidth.estimator.target
    cluster = bandwidth.probe(8 * estimate, 0.3)  # a layer four times what the link took
    assert cluster is not None
    assert estimate < cluster.bitrate <= estimate * PROBE_STEP * 1.15 + 1
