"""The estimator's interface as the connection uses it (no link simulation)."""

from __future__ import annotations

import pytest

from sfu.bwe.estimator import BandwidthEstimator
from sfu.bwe.feedback import FeedbackSummary, PacketGroup, ProbePacket


def steady_feedback(start: float, rate: float, count: int = 20) -> FeedbackSummary:
    """``count`` groups 5 ms apart, arriving as sent (no queue) at ``rate`` bit/s."""
    size = int(rate * 0.005 / 8)
    groups = tuple(
        PacketGroup(start + i * 0.005, 100 + start + i * 0.005, size) for i in range(count)
    )
    return FeedbackSummary(
        groups,
        received=count,
        lost=0,
        received_bytes=size * count,
        first_arrival=groups[0].arrival_time,
        last_arrival=groups[-1].arrival_time,
    )


def test_defaults_before_any_feedback() -> None:
    est = BandwidthEstimator(initial_bitrate=800_000)
    assert est.target == 800_000
    stats = est.stats()
    assert (stats.source, stats.state, stats.alr, stats.loss_fraction) == (
        "none",
        "normal",
        False,
        0,
    )


def test_initial_probes_on_first_call_then_none() -> None:
    est = BandwidthEstimator(initial_bitrate=1_000_000)
    first, second = est.next_probe(0.0), est.next_probe(0.0)
    assert first is not None and second is not None
    assert (first.bitrate, second.bitrate) == (3_000_000, 6_000_000)
    assert first.cluster != second.cluster
    assert est.next_probe(0.0) is None
    assert est.stats().probing


def test_no_initial_probes_when_disabled() -> None:
    assert BandwidthEstimator(initial_probing=False).next_probe(0.0) is None


@pytest.mark.parametrize(("low", "high"), [(0, 1e6), (2e6, 1e6), (-1, 1e6)])
def test_bad_bounds_rejected(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="0 < min_bitrate <= max_bitrate"):
        BandwidthEstimator(min_bitrate=low, max_bitrate=high)


def test_target_clamped_to_bounds() -> None:
    est = BandwidthEstimator(initial_bitrate=10e6, max_bitrate=2e6)
    assert est.target == 2e6
    est = BandwidthEstimator(initial_bitrate=10e3, min_bitrate=50e3)
    assert est.target == 50e3


def test_remb_only_while_no_transport_cc() -> None:
    est = BandwidthEstimator(initial_bitrate=1e6, initial_probing=False)
    est.on_remb(700_000, 0.0)
    assert (est.target, est.stats().source) == (700_000, "remb")
    assert est.next_probe(0.0) is None  # nothing to measure probes with
    est.on_feedback(steady_feedback(0.1, 1e6), 0.2)
    est.on_remb(300_000, 0.3)
    assert est.stats().source == "transport-cc"
    assert est.target >= 1e6  # REMB ignored while transport-cc feedback comes
    est.on_remb(300_000, 2.5)  # feedback stopped 2.3 s ago: REMB again
    assert (est.target, est.stats().source) == (300_000, "remb")


def probe_feedback(
    cluster: int, rate: float, received_rate: float, start: float
) -> FeedbackSummary:
    """A complete 50 ms cluster of 300-byte packets sent at ``rate``, arriving at
    ``received_rate``, and a later group that shows the cluster is over."""
    spacing, arrival_spacing = 300 * 8 / rate, 300 * 8 / received_rate
    count = int(0.05 / spacing) + 1
    probes = tuple(
        ProbePacket(cluster, start + i * spacing, 100 + start + i * arrival_spacing, 300)
        for i in range(count)
    )
    later = PacketGroup(start + 0.2, 100 + start + 0.2, 1200)
    return FeedbackSummary(groups=(later,), received=count, probes=probes)


@pytest.mark.parametrize(
    ("received_rate", "expected"),
    [
        (4e6, 4e6),  # fitted: lifts the estimate to the probe's rate
        (1.2e6, 0.95 * 1.2e6),  # saturated at 1.2 Mbit/s: the estimate comes down to it
    ],
    ids=["fits", "saturated"],
)
def test_probe_result_sets_the_estimate(received_rate: float, expected: float) -> None:
    est = BandwidthEstimator(initial_bitrate=2e6, initial_probing=False)
    est.on_feedback(steady_feedback(0.0, 500e3), 0.1)
    est.on_sent(0, 0.0)
    for i in range(1, 9):  # application-limited: 500 kbit/s of a 2 Mbit/s estimate
        est.on_sent(int(i * 0.25 * 500e3 / 8), i * 0.25)
    assert est.stats().alr
    cluster = est.next_probe(2.0)
    assert cluster is not None  # the ALR probe: twice the estimate
    assert cluster.bitrate == pytest.approx(2 * est.target)
    est.on_feedback(probe_feedback(cluster.cluster, 4e6, received_rate, 2.0), 2.3)
    assert est.target == pytest.approx(expected, rel=0.01)
