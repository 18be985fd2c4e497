"""``/metrics`` of ``sfu serve --workers 2`` adds up (issue 13, step S11): two rooms placed on the
two workers, real aiortc clients calling in each; the exposition has one family per name, the
workers' samples labelled ``worker="0"`` and ``"1"``, and the packets forwarded, summed over the
``worker`` label (PromQL ``sum without (worker)``), are the packets the clients received.

In-flight slack: the publishers stop sending before the comparison, and it waits until neither
the clients' counts nor the server's change for longer than the supervisor takes to fetch a
worker's metrics again (every second), so no packet is left between a worker's counter and a
client's socket. Left: loopback loss, which the receivers see as sequence gaps
(``packetsLost``), so the forwarded count lies within [received, received + lost]; 0 lost (as
here) makes that an equality.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sfu_client import SfuClient, ToneAudioTrack
from signaling.workers import METRICS_INTERVAL
from tests.signaling.tone_calls import TIMEOUT, close_all, tone_call

from .conftest import SfuServer

pytestmark = pytest.mark.e2e

MEDIA_SECONDS = 3.0
#: longer than the supervisor waits between fetches of a worker's metrics, so two equal scrapes
#: this far apart mean the counters stopped
SETTLE_INTERVAL = METRICS_INTERVAL + 0.5
FORWARDED = "sfu_rtp_packets_forwarded_total"
WORKERS = {"0", "1"}


@pytest.fixture
def server_args() -> tuple[str, ...]:
    return ("--workers", "2")


async def get(server: SfuServer, path: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(server.url + path) as response:
        assert response.status == 200, (path, response.status)
        return await response.text()


async def two_way_call(url: str, room: str, clients: list[SfuClient]) -> list[SfuClient]:
    """Two participants of ``room``, each hearing the other's tone."""
    first, second = await tone_call(url, room, clients)
    await second.publish(ToneAudioTrack(660.0), source="microphone")
    assert second.participant_id is not None
    remote = await first.wait_for_track(second.participant_id, "audio", TIMEOUT)
    await asyncio.wait_for(remote.track.recv(), TIMEOUT)
    return [first, second]


async def received(client: SfuClient) -> tuple[int, int]:
    """(RTP packets received, packets lost) over the client's remote audio, aiortc's stats."""
    by_mid = {t.mid: t for t in client.pc.getTransceivers()}
    got = lost = 0
    for remote in client.remote_tracks.values():
        transceiver = by_mid.get(remote.mid)
        if remote.kind != "audio" or transceiver is None:
            continue
        for stats in (await transceiver.receiver.getStats()).values():
            if stats.type == "inbound-rtp":
                got += stats.packetsReceived
                lost += max(0, stats.packetsLost)
    return got, lost


def forwarded_by_worker(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == FORWARDED:
                worker = sample.labels["worker"]
                totals[worker] = totals.get(worker, 0.0) + sample.value
    return totals


async def room_counts(rooms: Iterable[list[SfuClient]]) -> list[tuple[int, int]]:
    counts = []
    for clients in rooms:
        each = [await received(c) for c in clients]
        counts.append((sum(g for g, _ in each), sum(lost for _, lost in each)))
    return counts


async def test_metrics_of_two_workers_sum_to_what_the_clients_received(
    sfu_server: SfuServer,
) -> None:
    clients: list[SfuClient] = []
    try:
        rooms = [await two_way_call(sfu_server.ws_url, room, clients) for room in ("one", "two")]
        health = await get_health(sfu_server)
        assert [w["rooms"] for w in health["workers"]] == [1, 1], health  # one on each
        await asyncio.sleep(MEDIA_SECONDS)
        for client in clients:
            for local in client.local_tracks.values():
                local.track.stop()  # its sender's loop ends: no more RTP

        deadline = time.monotonic() + TIMEOUT
        last: tuple[Any, ...] | None = None
        while True:
            text = await get(sfu_server, "/metrics")
            now = (await room_counts(rooms), forwarded_by_worker(text))
            if now == last:
                break
            assert time.monotonic() < deadline, f"counters still moving after {TIMEOUT} s: {now}"
            last = now
            await asyncio.sleep(SETTLE_INTERVAL)
        counts, by_worker = now

        # one family per name: one TYPE line each, and the parser (which starts a new family at
        # each) sees each name once
        typed = Counter(line.split()[2] for line in text.splitlines() if line.startswith("# TYPE"))
        assert typed and max(typed.values()) == 1, [n for n, k in typed.items() if k > 1]
        families = list(text_string_to_metric_families(text))
        names = [f.name for f in families]
        assert len(names) == len(set(names)), sorted(n for n, k in Counter(names).items() if k > 1)
        labelled = {s.labels["worker"] for f in families for s in f.samples if "worker" in s.labels}
        assert labelled == WORKERS | {"supervisor"}  # the server process's own process_* too
        supervisor = {
            f.name for f in families for s in f.samples if s.labels.get("worker") == "supervisor"
        }
        assert supervisor and all(name.startswith("process_") for name in supervisor), supervisor
        assert set(by_worker) == WORKERS and all(v > 0 for v in by_worker.values()), by_worker

        # each worker forwarded its room's packets; the sum over the label, everyone's
        got, lost = sum(g for g, _ in counts), sum(lost for _, lost in counts)
        total = sum(by_worker.values())
        print(f"\nforwarded {by_worker} = {total:.0f}; clients received {got}, lost {lost}")
        assert got <= total <= got + lost
        # the rooms in order of their counts against the workers in order of theirs (room "two"
        # started later: fewer packets)
        pairs = zip(sorted(counts), sorted(by_worker.values()), strict=True)
        assert all(g <= f <= g + missed for (g, missed), f in pairs), (counts, by_worker)

        for worker, value in by_worker.items():  # a worker's own exposition says the same
            own = await get(sfu_server, f"/metrics?worker={worker}")
            families = list(text_string_to_metric_families(own))
            samples = [s for f in families for s in f.samples if s.name == FORWARDED]
            assert samples and all("worker" not in s.labels for s in samples)
            assert sum(s.value for s in samples) == value
    finally:
        await close_all(clients)


async def get_health(server: SfuServer) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while True:  # a worker's room count comes with its load report, every second
        async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as response:
            report: dict[str, Any] = await response.json()
        if [w.get("rooms") for w in report.get("workers", [])] == [1, 1]:
            return report
        if time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.2)
