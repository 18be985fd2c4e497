"""A small deterministic link simulator for the bandwidth estimator's tests.

One sender (a video encoder at 30 frames/s behind a pacer, plus the probe clusters the estimator
asks for) sends over a bottleneck (a FIFO drained at a rate that may change over time, tail drop
at a queue limit given in seconds of backlog, like ``tc tbf``'s latency), a fixed propagation
delay each way and seeded random loss. The receiver reports every packet's arrival every
``feedback_interval`` (transport-wide feedback; messages may be lost), and the sender's side
matches reports against its send records and forms packet groups as the egress does in C
(draft-ietf-rmcat-gcc-02 §5.2: 5 ms send bursts, plus the burst rule), producing the
:class:`FeedbackSummary` objects the estimator consumes. Jitter is ``benchmarks/impair.py``'s
model: after the bottleneck each packet (and each feedback message on the way back) waits the
delay plus a uniform term in [-jitter, +jitter], never less than 0, and never leaves before the
one ahead of it — so a packet that drew a long wait holds the ones behind it, which are then
released in a bunch. Time advances in 1 ms steps; there are no threads or sleeps, so a run is
exactly reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sfu.bwe.estimator import BandwidthEstimator
from sfu.bwe.feedback import BURST_TIME, FeedbackSummary, PacketGroup, ProbeCluster, ProbePacket
from sfu.media.bandwidth import PACING_FACTOR  # the server's pacing, simulated

STEP = 0.001
MTU = 1200
#: The server's probe packets: padding-only RTX packets of 255 octets of padding plus headers,
#: sent in batches every 5 ms (sfu/media/prober.py).
PADDING_PACKET = 300
PROBE_INTERVAL = 0.005
FRAME_RATE = 30.0
#: A group may grow by the burst rule for at most this long (as libwebrtc's InterArrival).
MAX_BURST_DURATION = 0.1
#: The receiver's clock has its own origin: only differences may matter to the estimator.
RECEIVER_CLOCK_OFFSET = 4321.0


def steps(*phases: tuple[float, float]) -> Callable[[float], float]:
    """A link rate by phases: ``steps((0, 2.5e6), (10, 400e3))`` → 2.5 Mbit/s, 400k from 10 s."""

    def rate(t: float) -> float:
        current = phases[0][1]
        for start, value in phases:
            if t >= start:
                current = value
        return current

    return rate


def ramp(t0: float, t1: float, start: float, end: float) -> Callable[[float], float]:
    """``start`` bit/s until ``t0``, linearly to ``end`` at ``t1``, then ``end``."""

    def rate(t: float) -> float:
        if t <= t0:
            return start
        if t >= t1:
            return end
        return start + (end - start) * (t - t0) / (t1 - t0)

    return rate


@dataclass(frozen=True)
class Link:
    rate: Callable[[float], float]
    queue_limit: float = 0.3
    delay: float = 0.02
    loss: float = 0.0
    feedback_interval: float = 0.1
    feedback_loss: float = 0.0
    #: (start, end) of periods in which every feedback message is lost.
    feedback_outages: Sequence[tuple[float, float]] = ()
    #: Uniform jitter (s) around ``delay``, in order, on the media path and the feedback path.
    jitter: float = 0.0
    feedback_jitter: float = 0.0


@dataclass(frozen=True)
class Sender:
    """``greedy``: media at the estimator's target; otherwise an allocator picking the highest
    of ``layers`` (bit/s, plus ``audio``) that fits, asking for probes for the next one.
    ``app_limit`` caps the media rate (an application-limited sender)."""

    layers: Sequence[float] = ()
    audio: float = 0.0
    app_limit: float | None = None

    @property
    def greedy(self) -> bool:
        return not self.layers

    def allocate(self, target: float) -> tuple[float, float | None]:
        """(media rate, rate to probe for or None)."""
        if self.greedy:
            rate = target
            wanted = None
        else:
            fitting = [layer for layer in self.layers if layer + self.audio <= target]
            rate = (fitting[-1] if fitting else 0.0) + self.audio
            above = [layer for layer in self.layers if layer + self.audio > target]
            wanted = above[0] + self.audio if above else None
        if self.app_limit is not None:
            rate = min(rate, self.app_limit)
        return rate, wanted


@dataclass
class Sample:
    t: float
    target: float
    link: float
    media: float
    state: str
    probing: bool
    loss: float


@dataclass
class SentPacket:
    send_time: float
    size: int
    cluster: int
    arrival: float | None = None  # sender clock; None: lost


@dataclass
class _Group:
    first_send: float
    last_send: float
    first_arrival: float
    last_arrival: float
    size: int


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    sent: list[SentPacket] = field(default_factory=list)
    probes: list[ProbeCluster] = field(default_factory=list)
    packets_lost: int = 0
    packets_sent: int = 0


class Simulation:
    def __init__(
        self, estimator: BandwidthEstimator, link: Link, sender: Sender, seed: int = 1
    ) -> None:
        self.estimator = estimator
        self.link = link
        self.sender = sender
        self._rng = random.Random(seed)
        self._reported = 0  # the next transport-wide sequence number to report
        self._link_free = 0.0
        self._last_arrival = 0.0  # the media path's latest arrival: nothing overtakes it
        self._last_feedback = 0.0  # the same on the feedback path
        self._queue: list[int] = []  # media packet sizes waiting in the pacer
        self._budget = 0.0
        self._cluster: tuple[ProbeCluster, float, int, int] | None = (
            None  # cluster, start, bytes, n
        )
        self._in_flight: list[tuple[float, FeedbackSummary]] = []  # (delivery time, summary)
        self._group: _Group | None = None
        self._bytes_total = 0
        self.run = Run()
        self._sent = self.run.sent

    def simulate(self, duration: float) -> Run:
        est = self.estimator
        media_rate, wanted = self.sender.allocate(est.target)
        for i in range(round(duration / STEP)):
            t = i * STEP
            if i % 250 == 0:  # the connection's tick
                est.on_sent(self._bytes_total, t)
                media_rate, wanted = self.sender.allocate(est.target)
                if wanted is not None:
                    est.request_probe(wanted, t)
            if i % 1000 == 0:
                est.on_rtt(2 * self.link.delay + max(self._link_free - t, 0.0), t)
            if i % 33 == 0:
                self._encode(media_rate)
            if i % 5 == 0 and self._cluster is None:
                cluster = est.next_probe(t)
                if cluster is not None:
                    self._cluster = (cluster, t, 0, 0)
                    self.run.probes.append(cluster)
            self._pace(t, est.target)
            if i % round(self.link.feedback_interval / STEP) == 0 and i > 0:
                self._feedback(t)
            while self._in_flight and self._in_flight[0][0] <= t:
                est.on_feedback(self._in_flight.pop(0)[1], t)
            if i % 50 == 0:
                stats = est.stats()
                self.run.samples.append(
                    Sample(
                        t,
                        est.target,
                        self.link.rate(t),
                        media_rate,
                        stats.state,
                        stats.probing,
                        stats.loss_fraction,
                    )
                )
        return self.run

    def _encode(self, rate: float) -> None:
        frame = int(rate / FRAME_RATE / 8)
        while frame > 0:
            self._queue.append(min(frame, MTU))
            frame -= MTU

    def _pace(self, t: float, target: float) -> None:
        cluster = self._cluster[0].cluster if self._cluster is not None else 0
        pacing = PACING_FACTOR * target
        self._budget = min(self._budget + pacing * STEP / 8, pacing * 0.005 / 8)
        media = media_packets = 0
        while self._queue and self._budget > 0:
            size = self._queue.pop(0)
            self._budget -= size
            self._send(t, size, cluster)
            media += size
            media_packets += 1
        if self._cluster is not None:
            probe, start, sent, n = self._cluster
            # media sent during a cluster is part of it (the egress tags it)
            sent += media
            n += media_packets
            elapsed = t - start
            # The server's prober: padding packets in batches every 5 ms, one interval ahead.
            if round(elapsed / STEP) % round(PROBE_INTERVAL / STEP) == 0:
                done = elapsed >= probe.duration - STEP / 2
                due = probe.bitrate / 8 * min(elapsed + PROBE_INTERVAL, probe.duration)
                while sent < due or (done and n < probe.min_packets):
                    self._send(t, PADDING_PACKET, probe.cluster)
                    sent += PADDING_PACKET
                    n += 1
                if done:
                    self._cluster = None
                    return
            self._cluster = (probe, start, sent, n)

    def _send(self, t: float, size: int, cluster: int) -> None:
        """Through the bottleneck: random loss, tail drop at the queue limit, FIFO service."""
        self._bytes_total += size
        packet = SentPacket(t, size, cluster)
        self._sent.append(packet)
        self.run.packets_sent += 1
        link = self.link
        backlog = max(self._link_free - t, 0.0)
        rate = link.rate(t + backlog)
        if self._rng.random() < link.loss or backlog + size * 8 / rate > link.queue_limit:
            self.run.packets_lost += 1
            return
        self._link_free = t + backlog + size * 8 / rate
        packet.arrival = self._last_arrival = self._delayed(
            self._link_free, link.delay, link.jitter, self._last_arrival
        )

    def _delayed(self, t: float, delay: float, jitter: float, ahead: float) -> float:
        """When something leaving the bottleneck at ``t`` arrives: ``delay`` plus uniform jitter,
        never before ``t`` nor before ``ahead`` (what left before it), as benchmarks/impair.py."""
        if not jitter:
            return t + delay
        return max(t + delay + self._rng.uniform(-jitter, jitter), t, ahead)

    def _feedback(self, t: float) -> None:
        """The receiver reports up to its highest arrival; the report travels back."""
        end = self._reported
        highest = None
        for seq in range(self._reported, len(self._sent)):
            arrival = self._sent[seq].arrival
            if arrival is not None and arrival <= t:
                highest = seq
            elif arrival is not None:
                break
        if highest is None:
            return
        end = highest + 1
        reported = self._sent[self._reported : end]
        self._reported = end
        link = self.link
        if self._rng.random() < link.feedback_loss or any(
            a <= t < b for a, b in link.feedback_outages
        ):
            return
        self._last_feedback = self._delayed(
            t, link.delay, link.feedback_jitter, self._last_feedback
        )
        self._in_flight.append((self._last_feedback, self._summarize(reported)))

    def _summarize(self, packets: list[SentPacket]) -> FeedbackSummary:
        """The egress's part: counts, acknowledged bytes, groups and probe packets."""
        groups: list[PacketGroup] = []
        probes: list[ProbePacket] = []
        received = lost = size = 0
        first: float | None = None
        last: float | None = None
        min_delay: float | None = None
        first_size = 0
        for p in packets:
            if p.arrival is None:
                lost += 1
                continue
            arrival = p.arrival + RECEIVER_CLOCK_OFFSET
            delay = arrival - p.send_time
            min_delay = delay if min_delay is None else min(min_delay, delay)
            received += 1
            size += p.size
            if first is None or arrival < first:
                first_size = p.size
            first = arrival if first is None else min(first, arrival)
            last = arrival if last is None else max(last, arrival)
            if p.cluster:
                probes.append(ProbePacket(p.cluster, p.send_time, arrival, p.size))
            done = self._group_packet(p.send_time, arrival, p.size)
            if done is not None:
                groups.append(done)
        return FeedbackSummary(
            tuple(groups), received, lost, size, first, last, tuple(probes), min_delay, first_size
        )

    def _group_packet(self, send: float, arrival: float, size: int) -> PacketGroup | None:
        g = self._group
        if g is not None and (
            send - g.first_send <= BURST_TIME
            or (
                arrival - g.last_arrival < BURST_TIME
                and (arrival - g.last_arrival) - (send - g.last_send) < 0
                and arrival - g.first_arrival < MAX_BURST_DURATION
            )
        ):
            g.last_send = max(g.last_send, send)
            g.last_arrival = max(g.last_arrival, arrival)
            g.size += size
            return None
        self._group = _Group(send, send, arrival, arrival, size)
        if g is None:
            return None
        return PacketGroup(g.last_send, g.last_arrival, g.size)


def settle_time(
    samples: Sequence[Sample], after: float, until: float, lo: float, hi: float
) -> float | None:
    """Seconds after ``after`` from which the target stays within [lo, hi] until ``until``."""
    window = [s for s in samples if after <= s.t <= until]
    settled: float | None = None
    for s in window:
        if lo <= s.target <= hi:
            if settled is None:
                settled = s.t
        else:
            settled = None
    return None if settled is None else settled - after
