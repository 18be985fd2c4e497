"""sfu.media.prober: a probe cluster's padding, paced by the loop's timer, tagged in the egress."""

from __future__ import annotations

import asyncio
import time

import pytest

from sfu.bwe.feedback import ProbeCluster
from sfu.media.prober import PADDING, Prober

PACKET = bytes(12 + 8 + PADDING)  # header, extensions, padding


class Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[float, int]] = []  # (time, cluster tag while sent)
        self.cluster = -1
        self.tags: list[int] = []
        self.ended = asyncio.Event()  # the cluster's tag was taken off

    def send_rtp(self, packet: bytes) -> None:
        self.sent.append((time.monotonic(), self.cluster))

    def set_probe_cluster(self, cluster: int) -> None:
        self.cluster = cluster
        self.tags.append(cluster)
        if cluster < 0:
            self.ended.set()


async def run(cluster: ProbeCluster, media_rate: float) -> Transport:
    transport = Transport()
    prober = Prober(asyncio.get_running_loop(), lambda: transport, lambda n: PACKET, time.monotonic)
    assert prober.start(cluster, media_rate)
    assert not prober.start(cluster, media_rate), "one cluster at a time"
    await asyncio.wait_for(transport.ended.wait(), 5)
    assert not prober.running
    return transport


@pytest.mark.parametrize(
    ("bitrate", "media_rate", "duration", "min_packets", "expected_packets"),
    [
        # 2 Mbit/s for 40 ms: 10,000 bytes of padding
        (2e6, 0.0, 0.04, 5, 10_000 // len(PACKET)),
        # media already sends 1.5 of 2 Mbit/s: a quarter of the padding
        (2e6, 1.5e6, 0.04, 5, 2_500 // len(PACKET)),
        # media sends more than asked: the minimum number of packets still goes
        (1e6, 3e6, 0.02, 5, 5),
    ],
)
async def test_a_cluster_sends_the_missing_rate_tagged(
    bitrate: float, media_rate: float, duration: float, min_packets: int, expected_packets: int
) -> None:
    cluster = ProbeCluster(3, bitrate, duration, min_packets)
    transport = await run(cluster, media_rate)
    assert abs(len(transport.sent) - expected_packets) <= 2
    assert len(transport.sent) >= min_packets
    assert {tag for _, tag in transport.sent} == {3}
    assert transport.tags == [3, -1], "tagged from the start, untagged at the end"


async def test_a_wake_up_sends_its_share_not_the_cluster() -> None:
    transport = Transport()
    now = [100.0]
    prober = Prober(asyncio.get_running_loop(), lambda: transport, lambda n: PACKET, lambda: now[0])
    assert prober.start(ProbeCluster(4, 4e6, duration=0.05), 0.0)
    # the first wake-up, at the start: 5 ms of 4 Mbit/s = 2,500 bytes, not the cluster's 25,000
    assert len(transport.sent) == -(-2_500 // len(PACKET))
    now[0] += 0.06  # the clock jumps past the end: the rest goes, and the cluster ends
    await asyncio.wait_for(transport.ended.wait(), 5)
    assert len(transport.sent) == -(-25_000 // len(PACKET))


async def test_nothing_to_pad_with() -> None:
    transport = Transport()
    prober = Prober(asyncio.get_running_loop(), lambda: transport, lambda n: None, time.monotonic)
    assert not prober.start(ProbeCluster(1, 1e6), 0.0)
    assert transport.tags == [] and not prober.running


async def test_stop_ends_a_cluster_and_untags() -> None:
    transport = Transport()
    prober = Prober(asyncio.get_running_loop(), lambda: transport, lambda n: PACKET, time.monotonic)
    assert prober.start(ProbeCluster(9, 1e6, duration=1.0), 0.0)
    await asyncio.sleep(0.02)
    prober.stop()
    sent = len(transport.sent)
    await asyncio.sleep(0.03)
    assert len(transport.sent) == sent and transport.tags == [9, -1] and not prober.running
