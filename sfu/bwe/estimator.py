"""One subscriber connection's bandwidth estimate (draft-ietf-rmcat-gcc-02).

Send-side estimation from transport-wide feedback: a delay-based controller (inter-group delay
variation → trendline → over-use detector with adaptive threshold → AIMD, §5) and a loss-based
controller on the loss the subscriber reports (§6); the target is the lower of the two (§4),
clamped to the configured bounds. A link that falls far below the estimate is measured directly
(:mod:`sfu.bwe.capacity`, ours) before those two have seen it. A queue that stopped growing,
and the path's jitter that neither rule may take for a queue, are read from the one-way delay's
level per message (:mod:`sfu.bwe.standing`). Probe clusters verify rates above
the estimate; while the sender is application-limited the estimate does not grow beyond what the
link showed it delivers. REMB (the subscriber's own estimate) is used only while no
transport-wide feedback came for ``REMB_FALLBACK_AFTER`` seconds.

Pure and clock-injected: every call takes ``now`` (seconds, ``time.monotonic`` in the server);
no I/O, no tasks, nothing per packet (the egress does per-packet work in C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sfu.bwe.acked import AckedBitrate
from sfu.bwe.aimd import AimdRateControl
from sfu.bwe.alr import AlrDetector
from sfu.bwe.capacity import CapacityDrop
from sfu.bwe.delay import BandwidthUsage, DelayDetector
from sfu.bwe.feedback import FeedbackSummary, ProbeCluster
from sfu.bwe.loss import LossBasedControl
from sfu.bwe.probe import ProbeController
from sfu.bwe.probe_result import ProbeResult, ProbeResultEstimator
from sfu.bwe.standing import StandingQueue

EstimateSource = Literal["transport-cc", "remb", "none"]

#: Transport-wide feedback newer than this (seconds) wins over REMB.
REMB_FALLBACK_AFTER = 2.0
#: After a decrease, loss of packets sent before it is ignored at most this long (seconds).
MAX_LOSS_BLINDNESS = 1.0
#: Over-use detected this soon (seconds) after a probe saturated the link is the probe's doing.
PROBE_OVERUSE_WINDOW = 0.5
#: After such a probe, the delay-based estimate goes to this fraction of its receive rate.
SATURATED_UTILIZATION = 0.95
#: A queue that stays this long (seconds) is a standing queue: over-use (sfu.bwe.standing).
STANDING_QUEUE = 0.025
#: The RTT assumed until a receiver report gives one.
DEFAULT_RTT = 0.1
#: Seconds without transport-wide feedback after which its last verdict no longer stops probes.
STALE_FEEDBACK = 1.0


@dataclass(frozen=True, slots=True)
class BandwidthStats:
    """A snapshot for stats and events. Rates in bit/s, ``rtt`` in seconds."""

    estimate: float
    delay_based: float
    loss_based: float
    state: BandwidthUsage
    loss_fraction: float
    acked_bitrate: float | None
    alr: bool
    probing: bool
    source: EstimateSource
    rtt: float


class BandwidthEstimator:
    """The estimate the allocator divides among one subscriber connection's tracks."""

    def __init__(
        self,
        *,
        initial_bitrate: float = 1_000_000,
        min_bitrate: float = 50_000,
        max_bitrate: float = 20_000_000,
        initial_probing: bool = True,
        initial_probe_max: float = math.inf,
        alr_probing: bool = True,
    ) -> None:
        if not 0 < min_bitrate <= max_bitrate:
            raise ValueError("bitrate bounds must satisfy 0 < min_bitrate <= max_bitrate")
        self._min = min_bitrate
        self._max = max_bitrate
        self._usage: BandwidthUsage = "normal"
        self._detector = DelayDetector()
        self._standing = StandingQueue()
        self._aimd = AimdRateControl(
            initial_bitrate, min_bitrate=min_bitrate, max_bitrate=max_bitrate
        )
        self._loss = LossBasedControl(
            initial_bitrate, min_bitrate=min_bitrate, max_bitrate=max_bitrate
        )
        self._acked = AckedBitrate()
        self._capacity = CapacityDrop()
        #: times the link was measured far below the estimate (sfu.bwe.capacity)
        self.capacity_drops = 0
        #: groups sent up to this time are kept from the trend (restarted at a capacity drop)
        self._trend_from = -math.inf
        self._alr = AlrDetector()
        self._probes = ProbeController(
            max_bitrate=max_bitrate,
            initial_probing=initial_probing,
            initial_max=initial_probe_max,
            alr_probing=alr_probing,
        )
        self._probe_results = ProbeResultEstimator()
        self._rtt = DEFAULT_RTT
        self._last_feedback: float | None = None
        self._remb: float | None = None
        self._now = 0.0
        self._target = self._aimd.estimate
        self._decreased_at: float | None = None
        #: (when, receive rate) of the last probe that saturated the link.
        self._saturated_probe: tuple[float, float] | None = None
        #: The newest send time among the groups reported so far.
        self._newest_send = -math.inf

    # -- inputs ---------------------------------------------------------------------------------

    def on_feedback(self, feedback: FeedbackSummary, now: float) -> None:
        """One transport-wide feedback message, matched by the egress."""
        self._now = now
        self._last_feedback = now
        self._loss.on_report(
            feedback.received, feedback.lost, now, current=self._sent_after_decrease(now)
        )
        if feedback.groups:
            self._newest_send = max(self._newest_send, feedback.groups[-1][0])  # its send time
        self._acked.on_feedback(feedback)
        # the jitter as of the messages before this one: a fall's own messages do not hide it
        fell = self._capacity.update(feedback, self._target, now, jitter=self._standing.jitter)
        usage = self._usage = self._delay_usage(feedback)
        probe = self._probe_result(feedback, now)
        acked = self._acked.bitrate
        aimd = self._aimd
        probed: float | None = None
        if fell is not None:
            # the link fell far below the estimate and measured itself (sfu.bwe.capacity): go
            # there now rather than after the trend and the loss window have seen it
            self._probes.stop()
            aimd.limit(fell, now)
            self.capacity_drops += 1
            # what the trend saw so far is the fall itself: it would go on reading over-use
            # for a second from those groups and cut the measured rate again
            self._detector.restart_trend()
            self._trend_from = now
        elif usage == "overusing":
            self._probes.stop()
            saturated = self._saturated_probe
            if saturated is not None and now - saturated[0] <= PROBE_OVERUSE_WINDOW:
                # Our own probe filled the queue, and measured the link while doing so: that
                # measurement is a better decrease than a fraction of the acknowledged rate
                # (which the probe's own bytes inflate or its queue deflates).
                aimd.limit(saturated[1], now)
            elif aimd.time_to_reduce_further(now, acked, self._rtt):
                aimd.update(usage, acked, now, self._rtt)
        elif probe is not None and (probe.saturated or probe.bitrate > aimd.estimate):
            # A probe that fitted lifts the estimate; one that saturated the link measured it,
            # which is news either way (an estimate grown while application-limited comes down).
            probed = probe.bitrate
            aimd.set_estimate(probed, now)
        elif feedback.groups:
            aimd.update(usage, acked, now, self._rtt, limited=self._alr.in_alr)
        loss = self._loss
        loss.update(now, self._rtt, min(aimd.estimate, self._target), acked)
        if probed is not None and probed > loss.estimate and loss.may_rise:
            loss.set_estimate(probed)
        target = self._clamp(min(aimd.estimate, loss.estimate))
        if target < self._target:
            self._decreased_at = now
            loss.restart()
        self._target = target
        loss.note_target(target, now)

    def _sent_after_decrease(self, now: float) -> bool:
        """Whether this message's packets left after the target's last decrease: the previous
        messages already covered packets sent since then. If none did for a while (nothing
        arrives at all), count anyway, or a dead link would never count as lossy."""
        decreased = self._decreased_at
        return (
            decreased is None
            or self._newest_send >= decreased
            or now - decreased > MAX_LOSS_BLINDNESS
        )

    def _delay_usage(self, feedback: FeedbackSummary) -> BandwidthUsage:
        """The detector's verdict after this message's groups; a standing queue the trend
        cannot see (it no longer grows) counts as over-use too."""
        groups = feedback.groups
        if groups and groups[0][0] <= self._trend_from:
            groups = [g for g in groups if g[0] > self._trend_from]
        state = self._detector.update(groups)
        self._standing.update(feedback.min_delay, self._now)
        if state == "normal" and self._standing.standing(STANDING_QUEUE):
            return "overusing"
        return state

    def _probe_result(self, feedback: FeedbackSummary, now: float) -> ProbeResult | None:
        """The best rate a probe cluster completed with this message showed, if any; a
        saturated one counts at :data:`SATURATED_UTILIZATION` of its receive rate."""
        best: ProbeResult | None = None
        for result in self._probe_results.on_packets(feedback.probes, self._newest_send):
            self._probes.on_result(result, now)
            if result.saturated:
                result = result._replace(bitrate=SATURATED_UTILIZATION * result.bitrate)
                self._saturated_probe = (now, result.bitrate)
            if best is None or result.bitrate > best.bitrate:
                best = result
        return best

    def on_remb(self, bitrate: float, now: float) -> None:
        """The subscriber's REMB; the estimate while no transport-wide feedback comes."""
        self._now = now
        if bitrate > 0:
            self._remb = bitrate

    def on_rtt(self, rtt: float, now: float) -> None:
        """The round-trip time from a receiver report (seconds)."""
        self._now = now
        if rtt > 0:
            self._rtt = rtt

    def on_sent(self, bytes_sent_total: int, now: float) -> None:
        """The egress's byte counter (media, RTX and probes), sampled on each tick."""
        self._now = now
        self._alr.on_sent(bytes_sent_total, now, self.target)
        if self.source == "transport-cc":
            self._probes.on_tick(
                self._target, now, in_alr=self._alr.in_alr, allowed=self._probing_allowed()
            )

    def request_probe(self, bitrate: float, now: float) -> None:
        """The allocator would use ``bitrate`` if the link carries it: find out."""
        self._now = now
        if self.source == "transport-cc":
            self._probes.request(bitrate, self._target, now, allowed=self._probing_allowed())

    def next_probe(self, now: float) -> ProbeCluster | None:
        """A cluster to send now, or None; call again for the next (the initial probes go out on
        the first call). The egress tags what it sends for it with ``cluster``."""
        self._now = now
        if self.source == "remb":
            return None
        self._probes.start(self._target, now)
        cluster = self._probes.next(now)
        if cluster is not None:
            self._probe_results.expect(cluster)
        return cluster

    def _probing_allowed(self) -> bool:
        """Not while over-using, nor while the loss-based controller is decreasing — as of
        feedback that is still news. Once none came for STALE_FEEDBACK (the allocator paused
        everything: nothing is sent, nothing reported), that verdict describes a link nobody
        sends on any more, and only a probe can tell the link has recovered."""
        last = self._last_feedback
        if last is not None and self._now - last >= STALE_FEEDBACK:
            return True
        return self._usage != "overusing" and self._loss.may_rise

    # -- outputs --------------------------------------------------------------------------------

    @property
    def source(self) -> EstimateSource:
        if self._last_feedback is not None and (
            self._remb is None or self._now - self._last_feedback < REMB_FALLBACK_AFTER
        ):
            return "transport-cc"
        if self._remb is not None:
            return "remb"
        return "none"

    @property
    def target(self) -> float:
        """bit/s the allocator may use."""
        if self.source == "remb":
            assert self._remb is not None
            return self._clamp(self._remb)
        return self._target

    def stats(self) -> BandwidthStats:
        loss = self._loss.loss_fraction
        return BandwidthStats(
            estimate=self.target,
            delay_based=self._aimd.estimate,
            loss_based=self._loss.estimate,
            state=self._usage,
            loss_fraction=0.0 if loss is None else loss,
            acked_bitrate=self._acked.bitrate,
            alr=self._alr.in_alr,
            probing=self._probes.probing(self._now),
            source=self.source,
            rtt=self._rtt,
        )

    def _clamp(self, bitrate: float) -> float:
        return min(max(bitrate, self._min), self._max)
