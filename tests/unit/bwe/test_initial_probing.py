"""Exponential probing at a subscriber's start stops at its own maximum: more is reached only by
probes the allocator asks for (a join must not cost every subscriber megabytes of padding)."""

from __future__ import annotations

from sfu.bwe.probe import ProbeController
from sfu.bwe.probe_result import ProbeResult


def test_exponential_probing_at_start_stops_at_its_maximum() -> None:
    probes = ProbeController(max_bitrate=50e6, initial_max=10e6)
    probes.start(1e6, 0.0)
    rates = []
    now = 0.0
    while (cluster := probes.next(now)) is not None:
        rates.append(cluster.bitrate)
        probes.on_result(ProbeResult(cluster.cluster, cluster.bitrate, saturated=False), now)
        now += 0.3
    assert rates[:2] == [3e6, 6e6] and max(rates) == 10e6
