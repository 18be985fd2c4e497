"""What a probe cluster showed about the link.

A cluster is sent at a known rate for a short time; if the link can carry that rate, its
packets arrive as fast as they were sent, if not, at the bottleneck's rate (draft-ietf-rmcat-gcc-02
§5 leaves probing to the implementation; this follows the usual packet-train measurement, as
libwebrtc's ProbeBitrateEstimator). Per cluster: the send rate over the send span without the
last packet sent (its bytes leave after the span ends), the receive rate over the arrival span
without the first packet received (its bytes arrived before the span starts); the result is the
lower, and a receive rate under 90 % of the send rate says the link was saturated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from sfu.bwe.feedback import ProbeCluster, ProbePacket

#: At least this fraction of the cluster's ``min_packets``, and of the bytes it was to send
#: (rate x duration), must have been reported received: a cluster with a hole (a feedback
#: message lost, a queue overflowing) would show a rate the link never had.
MIN_RECEIVED_FRACTION = 0.8
#: Received slower than this fraction of the send rate: the link is saturated.
SATURATION_RATIO = 0.9
#: Received more than this much faster than sent: the packets queued behind earlier traffic and
#: left together; the measurement says nothing about the link.
MAX_VALID_RATIO = 2.0
#: A cluster whose packets span more than this was not a probe (the send records were reused).
MAX_SPAN = 1.0
#: Packets sent within this many seconds of each other went out in one batch.
SAME_BATCH = 0.0005
#: A cluster's packets spanning its duration within this much (the prober's batches) are all.
COMPLETE_SLACK = 0.012
#: Clusters remembered (older ones are forgotten with their packets).
MAX_CLUSTERS = 8


class ProbeResult(NamedTuple):
    cluster: int
    bitrate: float
    saturated: bool


class ProbeResultEstimator:
    """Collects probe packets per cluster across feedback messages and measures each cluster."""

    def __init__(self) -> None:
        self._clusters: dict[int, ProbeCluster] = {}
        self._packets: dict[int, list[ProbePacket]] = {}
        self._done: set[int] = set()

    def expect(self, cluster: ProbeCluster) -> None:
        """A cluster was handed to the sender: its packets count from now on."""
        self._clusters[cluster.cluster] = cluster
        self._packets[cluster.cluster] = []
        while len(self._clusters) > MAX_CLUSTERS:
            oldest = next(iter(self._clusters))
            del self._clusters[oldest]
            del self._packets[oldest]
            self._done.discard(oldest)

    def on_packets(self, probes: Iterable[ProbePacket], newest_send: float) -> list[ProbeResult]:
        """Results of the clusters that completed (unknown clusters' packets are ignored).

        A cluster is measured once, when complete: its packets span its duration, or the
        feedback reported packets sent well after it (``newest_send``, the newest send time
        reported; its last packets were lost). Measured earlier, a cluster that saturates the
        link would look as if it fitted: its first packets arrive before the queue builds."""
        for packet in probes:
            packets = self._packets.get(packet.cluster)
            if packets is not None and packet.cluster not in self._done:
                packets.append(packet)
        results = []
        for cluster_id, packets in self._packets.items():
            if cluster_id in self._done or not packets:
                continue
            cluster = self._clusters[cluster_id]
            first = min(p.send_time for p in packets)
            last = max(p.send_time for p in packets)
            if (
                last - first < cluster.duration - COMPLETE_SLACK
                and newest_send - first < cluster.duration + COMPLETE_SLACK
            ):
                continue
            self._done.add(cluster_id)
            result = self._measure(cluster, packets)
            if result is not None:
                results.append(result)
        return results

    @staticmethod
    def _measure(cluster: ProbeCluster, packets: list[ProbePacket]) -> ProbeResult | None:
        if len(packets) < max(MIN_RECEIVED_FRACTION * cluster.min_packets, 2):
            return None
        total = sum(p.size for p in packets)
        if total * 8 < MIN_RECEIVED_FRACTION * cluster.bitrate * cluster.duration:
            return None
        by_send = sorted(packets, key=lambda p: p.send_time)
        by_arrival = sorted(packets, key=lambda p: p.arrival_time)
        send_span = by_send[-1].send_time - by_send[0].send_time
        arrival_span = by_arrival[-1].arrival_time - by_arrival[0].arrival_time
        if not (0.0 < send_span <= MAX_SPAN and 0.0 < arrival_span <= MAX_SPAN):
            return None
        last_send = by_send[-1].send_time
        last_batch = sum(p.size for p in packets if last_send - p.send_time < SAME_BATCH)
        send_rate = (total - last_batch) * 8 / send_span
        receive_rate = (total - by_arrival[0].size) * 8 / arrival_span
        if receive_rate > MAX_VALID_RATIO * send_rate:
            return None
        saturated = receive_rate < SATURATION_RATIO * send_rate
        return ProbeResult(cluster.cluster, min(send_rate, receive_rate), saturated)
