"""One subscriber connection's bandwidth: feedback in, a budget for its video out.

The estimate (:class:`~sfu.bwe.estimator.BandwidthEstimator`) takes the subscriber's
transport-wide feedback (matched by the egress), REMB as the fallback, and the RTT. On the
connection's tick this turns it into the budget the layer allocator divides among the video
tracks — what is left after the audio it forwards, which is never cut — starts the probe
clusters the estimator asks for, and rates the connection for the client.

A subscriber that negotiated neither transport-cc nor REMB gives no estimate at all: its budget
is unlimited (None), as before bandwidth estimation existed. A video track is paused for
bandwidth only on a measured estimate: transport-cc feedback for :data:`SETTLE_TIME` (the
initial probes have told what the link takes), never on the starting guess nor on REMB, which
no probe can lift again once nothing is sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from sfu.api import ConnectionQualityReport
from sfu.bwe.estimator import BandwidthEstimator, BandwidthStats
from sfu.bwe.feedback import FeedbackSummary, ProbeCluster
from sfu.media.latency import Histogram

Quality = Literal["excellent", "good", "poor"]

#: Octets an RTP packet costs beyond its payload (header, mid and transport-wide sequence number
#: extensions, SRTP tag), for the rate of audio taken off the budget.
PACKET_OVERHEAD = 40
#: Loss fraction and RTT (s) above which a connection is no longer "excellent"; and "poor".
GOOD_LOSS, POOR_LOSS = 0.02, 0.10
GOOD_RTT, POOR_RTT = 0.15, 0.4

#: Where the exponential probing at a subscriber's start stops (bit/s): more than any usual set
#: of layers needs, and a join costs at most a few hundred kilobytes of padding; a subscriber
#: that could use more gets there by requested probes.
INITIAL_PROBE_MAX = 10_000_000
#: The most a requested probe asks for, as a multiple of the estimate (before the probe
#: controller's own overshoot of 1.15: about 2x the estimate on the wire).
PROBE_STEP = 1.75
#: Seconds of transport-cc feedback before the estimate may pause a track.
SETTLE_TIME = 2.0
#: Pacing rate / estimate, as libwebrtc paces: a keyframe's burst goes out over a few frame
#: intervals instead of into the bottleneck's queue at once.
PACING_FACTOR = 2.5
#: For this long (s) after the estimate fell, pace at the estimate itself: the bottleneck's
#: queue is still full of the layer just left, and the new layer's keyframe, paced faster than
#: the link drains, would overflow it — its tail lost, the picture frozen until the next
#: keyframe (2 of 4 step-down runs froze 6.5 s that way; 0 of 7 with this).
CONGESTED_PACING = 1.0

#: Every subscriber connection's estimate, observed with each connectionQuality report (bit/s).
ESTIMATES = Histogram((100e3, 250e3, 500e3, 1e6, 2e6, 4e6, 8e6, 16e6))


def rate_quality(loss: float, rtt: float | None, paused: bool, limited: bool) -> Quality:
    """Poor: heavy loss, a long RTT or a video paused for bandwidth; good: some loss, a
    noticeable RTT or video held below what the subscriber asked for; else excellent."""
    if paused or loss >= POOR_LOSS or (rtt is not None and rtt >= POOR_RTT):
        return "poor"
    if limited or loss >= GOOD_LOSS or (rtt is not None and rtt >= GOOD_RTT):
        return "good"
    return "excellent"


class SubscriberBandwidth:
    """The estimate of one subscriber connection and what follows from it each tick."""

    __slots__ = (
        "_audio_last",
        "_audio_rate",
        "_congested_until",
        "_feedback_since",
        "_loss",
        "_reported",
        "_sent_last",
        "estimator",
        "negotiated",
        "send_rate",
    )

    def __init__(
        self, max_bitrate: float = 50_000_000, estimator: BandwidthEstimator | None = None
    ) -> None:
        # probes only when the allocator wants more (request_probe), and at the start: an SFU
        # has no use for the periodic ALR probes of a sender that could always send more
        self.estimator = estimator or BandwidthEstimator(
            max_bitrate=max_bitrate, initial_probe_max=INITIAL_PROBE_MAX, alr_probing=False
        )
        self._feedback_since: float | None = None
        #: (received, lost) the feedback reported since the last quality report, and the loss
        #: fraction of the last interval that had packets (the controllers' own loss windows
        #: restart on every decrease: not what a person asking "how lossy is my link" means)
        self._reported = [0, 0]
        self._loss = 0.0
        #: transport-cc or REMB negotiated on some m-line: the estimate counts from the start
        self.negotiated = False
        self._audio_last: tuple[float, int] | None = None  # (time, octets incl. overhead)
        self._audio_rate = 0.0
        self._sent_last: tuple[float, int] | None = None
        #: bit/s the connection sent since the previous tick (media, RTX, probes)
        self.send_rate = 0.0
        self._congested_until = -1.0

    # --- feedback (on RTCP, not on the tick) ---

    def on_feedback(self, feedback: FeedbackSummary, now: float) -> None:
        if self._feedback_since is None:
            self._feedback_since = now
        self._reported[0] += feedback.received
        self._reported[1] += feedback.lost
        self.estimator.on_feedback(feedback, now)

    def may_pause(self, now: float) -> bool:
        """Whether the estimate is measured enough to pause a track for (see the module)."""
        since = self._feedback_since
        return (
            since is not None
            and now - since >= SETTLE_TIME
            and self.estimator.source == "transport-cc"
        )

    def on_remb(self, bitrate: float, now: float) -> None:
        self.estimator.on_remb(bitrate, now)

    def on_rtt(self, rtt: float, now: float) -> None:
        self.estimator.on_rtt(rtt, now)

    # --- the tick ---

    def budget(self, now: float, bytes_sent: int, audio: Iterable[tuple[int, int]]) -> float | None:
        """bit/s for the video tracks, None for unlimited. ``bytes_sent``: the egress's total;
        ``audio``: (octets, packets) sent so far on each audio down-track."""
        estimator = self.estimator
        estimator.on_sent(bytes_sent, now)
        self.send_rate = _rate(self._sent_last, bytes_sent, now, self.send_rate)
        self._sent_last = (now, bytes_sent)
        octets = sum(o + PACKET_OVERHEAD * p for o, p in audio)
        self._audio_rate = _rate(self._audio_last, octets, now, self._audio_rate)
        self._audio_last = (now, octets)
        return self.current_budget()

    def current_budget(self) -> float | None:
        """The budget as of now, with the audio rate of the last tick (:meth:`budget` samples
        it; between ticks a feedback message may just have lowered the estimate)."""
        if not self.negotiated and self.estimator.source == "none":
            return None
        return max(self.estimator.target - self._audio_rate, 0.0)

    def pacing_rate(self, now: float, *, fell: bool = False) -> int:
        """bit/s to pace at (0: not paced: no measured estimate yet); ``fell``: the estimate
        just fell and the layers were chosen again (see :data:`CONGESTED_PACING`)."""
        if self.estimator.source != "transport-cc":
            return 0
        if fell:
            self._congested_until = now + CONGESTED_PACING
        factor = 1.0 if now < self._congested_until else PACING_FACTOR
        return int(self.estimator.target * factor)

    def probe(self, wanted: float | None, now: float) -> ProbeCluster | None:
        """The next cluster to send, if any; ``wanted``: what the allocator would use if the
        link carried it (None: it has all it wants).

        A request goes at most to PROBE_STEP times the estimate: on a 400 kbit/s link a probe
        for a 1.5 Mbit/s layer would overflow the bottleneck's queue every time it is tried,
        while a link whose limit was lifted climbs there in two or three steps.
        """
        if wanted is not None:
            target = self.estimator.target
            self.estimator.request_probe(min(wanted + self._audio_rate, target * PROBE_STEP), now)
        return self.estimator.next_probe(now)

    def quality(
        self, rtt: float | None, video: float, paused: bool, limited: bool
    ) -> ConnectionQualityReport:
        """``video``: what the chosen layers cost; audio is added."""
        stats = self.stats()
        estimate = None if stats.source == "none" and not self.negotiated else stats.estimate
        if estimate is not None:
            ESTIMATES.observe(estimate)
        received, lost = self._reported
        if received + lost:
            self._loss = lost / (received + lost)
        self._reported = [0, 0]
        loss = self._loss
        allocated = video + self._audio_rate
        return ConnectionQualityReport(
            rate_quality(loss, rtt, paused, limited), rtt, loss, estimate, allocated, stats.probing
        )

    def stats(self) -> BandwidthStats:
        return self.estimator.stats()


def _rate(last: tuple[float, int] | None, total: int, now: float, previous: float) -> float:
    """bit/s from a running byte total sampled at ``last`` and ``now`` (a restarted counter, or
    no time passed: the previous rate)."""
    if last is None or now <= last[0] or total < last[1]:
        return previous
    return (total - last[1]) * 8 / (now - last[0])
