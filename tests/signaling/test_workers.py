"""signaling/workers.py with sfu/worker.py: rooms in two real worker processes behind one app
(issue 13 steps S9-S10), real aiortc clients over 127.0.0.1.

Two rooms land on two workers and each carries its call; a worker killed with SIGKILL ends its
room's sessions with ``bye reconnect`` while the other room goes on, the clients join again by
themselves (the room opens on the worker left), and the pool starts the worker again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from sfu.config import MediaConfig
from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu.service import Sfu
from sfu_client import SfuClient
from sfu_client.client import ServerError
from signaling.app import create_app
from signaling.rooms import RoomRouter
from signaling.workers import WorkerCollector, WorkerPool
from tests.signaling.tone_calls import TIMEOUT, close_all, tone_call


async def frames_keep_coming(client: SfuClient, seconds: float) -> int:
    (remote,) = [r for r in client.remote_tracks.values() if r.active]
    remote.drain()
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.wait_for(remote.track.recv(), TIMEOUT)
        count += 1
    return count


async def check_metrics(server: TestServer) -> None:
    """One family per name, every worker's samples in it, labelled; the pool's own beside."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        async with ClientSession() as http, http.get(server.make_url("/metrics")) as response:
            text = await response.text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        participants = families.get("sfu_participants")
        samples = [] if participants is None else participants.samples
        # each worker's, fetched at most a second ago: both rooms' two participants
        if {s.labels.get("worker"): s.value for s in samples} == {"0": 2.0, "1": 2.0}:
            break
        assert time.monotonic() < deadline, text[:2000]
        await asyncio.sleep(0.2)
    assert text.count("# TYPE sfu_participants ") == 1
    up = {s.labels["worker"]: s.value for s in families["sfu_workers_up"].samples}
    assert up == {"0": 1.0, "1": 1.0}
    packets = families["sfu_rtp_packets_received"].samples
    assert {s.labels["worker"] for s in packets} == {"0", "1"}
    # the supervisor's own process metrics in the same family as the workers': sum = server
    cpu = families["process_cpu_seconds"].samples
    assert {s.labels["worker"] for s in cpu} == {"supervisor", "0", "1"}
    assert text.count("# TYPE process_cpu_seconds_total ") == 1


async def check_worker_metrics(server: TestServer) -> None:
    """``/metrics?worker=k``: worker k's own exposition, unlabelled; no such k: 404."""
    async with ClientSession() as http:
        for index in (0, 1):
            url = server.make_url("/metrics").with_query(worker=str(index))
            async with http.get(url) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await response.text()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            (participants,) = families["sfu_participants"].samples
            assert participants.labels == {} and participants.value == 2.0
            assert "sfu_workers_up" not in families  # the supervisor's own are not in it
        for wrong in ("2", "-1", "x", "1.0", ""):
            url = server.make_url("/metrics").with_query(worker=wrong)
            async with http.get(url) as response:
                assert response.status == 404, wrong
                assert "no worker" in await response.text()


async def test_rooms_on_two_workers_and_one_worker_killed() -> None:
    set_ice_host_addresses(["127.0.0.1"])
    pool = WorkerPool(2, MediaConfig(ice_hosts=("127.0.0.1",)), log_level="warning")
    router = RoomRouter(pool)
    pool.on_lost = router.lost
    await pool.start()
    registry = CollectorRegistry()
    registry.register(WorkerCollector(pool, own=ProcessCollector(registry=None)))
    app = create_app(router, resume_window=0, metrics=registry, worker_metrics=pool.exposition)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/ws"))
    clients: list[SfuClient] = []
    try:
        publisher, subscriber = await tone_call(url, "one", clients)
        _, survivor = await tone_call(url, "two", clients)
        homes = {room: entry.worker for room, entry in router.table.rooms().items()}
        assert sorted(homes.values()) == [0, 1], homes  # one room each
        services = [pool.service(0), pool.service(1)]
        assert [(await s.stats())["participants"] for s in services if s] == [2, 2]
        await check_metrics(server)
        await check_worker_metrics(server)
        victim = pool.workers[homes["one"]]
        pid = victim.pid
        assert pid is not None and pid != os.getpid()

        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        for client in (publisher, subscriber):
            bye = await client.wait_for_message("bye", TIMEOUT)
            assert bye.data["reason"] == "reconnect"
        assert await frames_keep_coming(survivor, 1.0) > 10  # the other room: not a gap
        # the clients join the room again by themselves, at once, wherever it opens now
        for client in (publisher, subscriber):
            rejoined = await client.wait_for_message("reconnected", TIMEOUT)
            assert rejoined.data["how"] == "rejoined"
        assert publisher.participant_id is not None
        remote = await subscriber.wait_for_track(publisher.participant_id, "audio", TIMEOUT)
        await asyncio.wait_for(remote.track.recv(), TIMEOUT)
        print(
            f"\nkilled worker {victim.index}: media again after {time.monotonic() - killed:.2f} s"
        )
        assert "one" in router.table.rooms()
        deadline = time.monotonic() + TIMEOUT
        while not (victim.up and victim.pid != pid):
            assert time.monotonic() < deadline, "the worker was not started again"
            await asyncio.sleep(0.1)
        assert victim.restarts == 1
        assert {w["up"] for w in pool.describe()} == {True}
    finally:
        await close_all(clients)
        await server.close()
        await pool.close()
        set_ice_host_addresses([])
    assert all(w.process is not None and w.process.returncode is not None for w in pool.workers)


@pytest.mark.parametrize("reason", ["server-shutdown"])
async def test_closing_the_pool_says_bye_and_stops_every_worker(reason: str) -> None:
    set_ice_host_addresses(["127.0.0.1"])
    pool = WorkerPool(2, MediaConfig(ice_hosts=("127.0.0.1",)), log_level="warning")
    router = RoomRouter(pool)
    await pool.start()
    server = TestServer(create_app(router, resume_window=0), host="127.0.0.1")
    await server.start_server()
    clients: list[SfuClient] = []
    try:
        client = await SfuClient.connect(str(server.make_url("/ws")), "r", "ann")
        clients.append(client)
        # draining: no worker takes a new room, the room that runs is still joined
        pool.draining = True
        with pytest.raises(ServerError) as refused:
            await SfuClient.connect(str(server.make_url("/ws")), "new", "bob")
        assert refused.value.code == "server-draining"
        clients.append(await SfuClient.connect(str(server.make_url("/ws")), "r", "cy"))
        assert {w["draining"] for w in pool.describe()} == {True}
        await router.close(reason)
        bye = await client.wait_for_message("bye", TIMEOUT)
        assert bye.data["reason"] == reason
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await server.close()
        await pool.close()
        set_ice_host_addresses([])
    assert [w.process.returncode for w in pool.workers if w.process] == [0, 0]


async def test_worker_metrics_of_a_server_without_workers_is_404() -> None:
    """``--workers 1``: the rooms are in the server process; ``?worker=k`` names nothing."""
    sfu = Sfu(MediaConfig(ice_hosts=("127.0.0.1",)))
    server = TestServer(create_app(sfu, metrics=sfu.metrics_registry()), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as http:
            url = server.make_url("/metrics").with_query(worker="0")
            async with http.get(url) as response:
                assert response.status == 404
                assert "--workers 1" in await response.text()
            async with http.get(server.make_url("/metrics")) as response:
                assert response.status == 200
                assert "sfu_participants" in await response.text()
    finally:
        await server.close()
