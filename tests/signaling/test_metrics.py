"""``GET /metrics`` of the real server after a real two-party call (e2e fixtures, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sfu_client import FrameProbe
from tests.e2e.conftest import ClientFactory, SfuServer
from tests.e2e.test_call import MEDIA_TIMEOUT, publish_markers

pytestmark = pytest.mark.e2e

Samples = dict[str, float]


async def scrape(server: SfuServer) -> Samples:
    """Every sample, keyed ``name`` or ``name{label=value,...}``."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url.rstrip("/") + "/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def scrape_until(server: SfuServer, name: str, timeout: float = MEDIA_TIMEOUT) -> Samples:  # noqa: ASYNC109
    """Scrape until sample ``name`` is above zero."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(server)
        if samples.get(name, 0) > 0 or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.2)


COUNTERS = (
    "sfu_rtp_packets_received_total{kind=video}",
    "sfu_rtp_packets_received_total{kind=audio}",
    "sfu_rtp_bytes_received_total{kind=video}",
    "sfu_rtp_packets_forwarded_total{kind=video}",
    "sfu_rtp_packets_forwarded_total{kind=audio}",
    "sfu_rtp_payload_bytes_forwarded_total{kind=video}",
    "sfu_packets_sent_total",
    "sfu_bytes_sent_total",
    "sfu_plis_sent_total",
)


async def test_counters_move_during_a_call_and_survive_a_departure(
    sfu_server: SfuServer, make_client: ClientFactory, room: str
) -> None:
    alice = await make_client(room, "alice")
    bob = await make_client(room, "bob")
    await publish_markers(alice, 0)
    await publish_markers(bob, 1)
    assert alice.participant_id is not None
    video = await bob.wait_for_track(alice.participant_id, "video", MEDIA_TIMEOUT)
    probe = await FrameProbe(video.track).run(count=10, timeout=MEDIA_TIMEOUT)
    assert len(probe.records) == 10

    # one packet in 64 per track is timed: wait for the first sample
    during = await scrape_until(sfu_server, "sfu_forwarding_latency_seconds_count")

    assert during["sfu_rooms"] == 1
    assert during["sfu_participants"] == 2
    assert during["sfu_participants_joined_total"] == 2
    assert during["sfu_published_tracks{kind=video}"] == 2
    assert during["sfu_published_tracks{kind=audio}"] == 2
    assert during["sfu_down_tracks{kind=video}"] == 2  # alice -> bob, bob -> alice
    for name in COUNTERS:
        assert during[name] > 0, name
    assert during["sfu_layer_switches_total"] == 0
    assert during["sfu_send_errors_total"] == 0
    assert during["sfu_forwarding_latency_seconds_count"] > 0
    assert (
        0
        < during["sfu_forwarding_latency_seconds_sum"]
        < during["sfu_forwarding_latency_seconds_count"] * 0.1
    )  # well under 100 ms per packet
    assert during["process_cpu_seconds_total"] > 0
    assert during["process_resident_memory_bytes"] > 10_000_000
    assert during["process_open_fds"] > 0

    await bob.leave()
    after = await scrape(sfu_server)
    deadline = time.monotonic() + 5.0
    while after["sfu_participants"] != 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        after = await scrape(sfu_server)

    assert after["sfu_participants"] == 1
    assert after["sfu_participants_left_total"] == 1
    assert after["sfu_published_tracks{kind=video}"] == 1
    assert after["sfu_down_tracks{kind=video}"] == 0
    for name in COUNTERS:
        assert after[name] >= during[name], f"{name} went back: {during[name]} -> {after[name]}"

    async with aiohttp.ClientSession() as http, http.get(sfu_server.url + "/healthz") as response:
        assert await response.json() == {
            "status": "ok",
            "rooms": 1,
            "participants": 1,
            "tracks": 2,
        }
