"""Probe clusters on one subscriber connection: does the link carry more than we send?

A cluster asks for a rate (media and padding together) for a short time. The prober makes up
the difference with padding-only packets on the RTX stream of a video m-line (RFC 4588 §4; what
libwebrtc sends when it probes), written out by the loop's timer in batches every
:data:`INTERVAL`, never per forwarded packet. While a cluster runs the egress tags every packet it
sends with the cluster's id, forwarded media included, so the feedback tells the rate the link
actually delivered (sfu/bwe/probe_result.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from sfu.bwe.feedback import ProbeCluster

#: Seconds between the timer's wake-ups while a cluster runs.
INTERVAL = 0.005
#: Padding per packet: the most RTP padding can say (RFC 3550 §5.1, one octet of count).
PADDING = 255
#: Padding packets per wake-up at most (about 40 Mbit/s at INTERVAL): what a late wake-up owes
#: goes out over the next ones, not in one burst.
MAX_BATCH = 80


class ProbeTransport(Protocol):
    def send_rtp(self, packet: bytes) -> None: ...

    def set_probe_cluster(self, cluster: int) -> None: ...


class Prober:
    """Runs one probe cluster at a time for one connection."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: Callable[[], ProbeTransport | None],
        padding: Callable[[int], bytes | None],
        clock: Callable[[], float],
    ) -> None:
        self._loop = loop
        self._transport = transport
        self._padding = padding  # a padding-only packet of this much padding, None: no RTX
        self._clock = clock
        self._cluster: ProbeCluster | None = None
        self._started = 0.0
        self._rate = 0.0  # padding bytes per second
        self._sent_bytes = 0
        self._sent_packets = 0
        self._timer: asyncio.TimerHandle | None = None
        self._first: bytes | None = None  # built by start(), sent first
        self.clusters = 0  # started, for stats
        self.packets = 0
        #: called when a cluster has gone out (to start the next one at once)
        self.on_done: Callable[[], None] | None = None

    @property
    def running(self) -> bool:
        return self._cluster is not None

    def start(self, cluster: ProbeCluster, media_rate: float) -> bool:
        """Send ``cluster`` with ``media_rate`` bit/s of media already going out; False if it
        cannot be sent (another runs, no transport, or no m-line can carry padding)."""
        transport = self._transport()
        if self._cluster is not None or transport is None:
            return False
        first = self._padding(PADDING)  # also tells whether any m-line can carry padding
        if first is None:
            return False
        self._first = first
        self._cluster = cluster
        self._started = self._clock()
        self._rate = max(cluster.bitrate - media_rate, 0.0) / 8
        self._sent_bytes = self._sent_packets = 0
        self.clusters += 1
        transport.set_probe_cluster(cluster.cluster)
        self._wake()
        return True

    def _wake(self) -> None:
        self._timer = None
        cluster, transport = self._cluster, self._transport()
        if cluster is None:
            return
        if transport is None:
            self.stop()
            return
        elapsed = self._clock() - self._started
        done = elapsed >= cluster.duration
        due = self._rate * min(elapsed + INTERVAL, cluster.duration) - self._sent_bytes
        batch = 0
        while batch < MAX_BATCH and (
            due > 0 or (done and self._sent_packets < cluster.min_packets)
        ):
            packet, self._first = self._first or self._padding(PADDING), None
            if packet is None:
                break
            transport.send_rtp(packet)
            self._sent_bytes += len(packet)
            self._sent_packets += 1
            due -= len(packet)
            batch += 1
        self.packets += batch
        # done when its bytes are out, or (the loop was late) at twice its duration
        owed = due > 0 and elapsed < 2 * cluster.duration
        if done and not owed and self._sent_packets >= cluster.min_packets:
            self.stop()
            if self.on_done is not None:
                self.on_done()
        else:
            self._timer = self._loop.call_later(INTERVAL, self._wake)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._first = None
        if self._cluster is not None:
            self._cluster = None
            transport = self._transport()
            if transport is not None:
                transport.set_probe_cluster(-1)
