"""A paused subscriber must be able to come back: once feedback stopped (nothing is sent), the
last verdict (over-use, heavy loss) no longer forbids the probe that would show the recovery."""

from __future__ import annotations

from sfu.bwe.estimator import STALE_FEEDBACK, BandwidthEstimator
from sfu.bwe.feedback import FeedbackSummary, PacketGroup


def lossy(start: float) -> FeedbackSummary:
    """A feedback message: 2 of 20 packets arrived."""
    groups = (
        PacketGroup(start, 100 + start, 1200),
        PacketGroup(start + 0.02, 100.03 + start, 1200),
    )
    return FeedbackSummary(groups, 2, 18, 2400, 100 + start, 100.03 + start)


def test_a_stale_verdict_does_not_forbid_probes() -> None:
    estimator = BandwidthEstimator(initial_probing=False, alr_probing=False)
    now = 0.0
    for i in range(20):
        now = i * 0.05
        estimator.on_feedback(lossy(now), now)
    assert estimator.stats().loss_fraction > 0.5
    wanted = estimator.target * 2
    estimator.request_probe(wanted, now)
    assert estimator.next_probe(now) is None, "heavy loss, reported now: no probe"
    later = now + 1.5  # no feedback since: everything was paused
    assert later - now > STALE_FEEDBACK
    estimator.request_probe(wanted, later)
    cluster = estimator.next_probe(later)
    assert cluster is not None and cluster.bitrate >= wanted
