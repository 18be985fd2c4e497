"""``sfu serve --workers 2 --udp-port 0``: the real server with two worker processes (issue 13).

Two rooms land on the two workers, each worker carries its room's media on its own UDP socket,
``/healthz`` and ``/metrics`` show both; a worker killed with SIGKILL (its pid from ``/healthz``)
costs its room a rejoin (``bye reconnect``, the clients join again by themselves) and the other
room nothing, and the server starts the worker again. The time from the kill to media again is
printed (``pytest -s``), not asserted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sfu_client import SfuClient
from tests.signaling.tone_calls import TIMEOUT, close_all, tone_call

from .conftest import SfuServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def server_args() -> tuple[str, ...]:
    return ("--workers", "2", "--udp-port", "0")


async def get(server: SfuServer, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(server.url + path) as response:
        return response.status, await response.text()


async def health(server: SfuServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as response:
        report: dict[str, Any] = await response.json()
        return report


async def until(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while not (found := await predicate()):
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s"
        await asyncio.sleep(0.2)
    return found


def udp_ports(pid: int) -> set[int]:
    """The local ports of the UDP sockets ``pid`` holds (iproute2's ss)."""
    out = subprocess.run(
        ["ss", "-uanpH"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return {int(line.split()[3].rpartition(":")[2]) for line in out if f"pid={pid}," in line}


async def test_two_workers_carry_a_room_each_and_survive_one_s_death(
    sfu_server: SfuServer,
) -> None:
    url = sfu_server.url.replace("http", "ws", 1) + "/ws"
    clients: list[SfuClient] = []
    try:
        await tone_call(url, "one", clients)
        await tone_call(url, "two", clients)

        async def one_room_each() -> list[dict[str, Any]] | None:
            report = await health(sfu_server)
            workers = report.get("workers", [])
            ok = report["status"] == "ok" and [w.get("rooms") for w in workers] == [1, 1]
            return workers if ok else None

        workers = await until(one_room_each, "room on each worker in /healthz")
        pids = [w["pid"] for w in workers]
        ports = [udp_ports(pid) for pid in pids]
        assert all(len(p) == 1 for p in ports) and ports[0] != ports[1], ports  # one each
        status, text = await get(sfu_server, "/metrics")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        participants = {s.labels["worker"]: s.value for s in families["sfu_participants"].samples}
        assert status == 200 and participants == {"0": 2.0, "1": 2.0}

        killed = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)

        # whichever room was on worker 0, its clients rejoin; the other room goes on
        async def rejoined() -> list[SfuClient]:
            return [c for c in clients if any(m.type == "reconnected" for m in c.history)]

        moved = await until(rejoined, "rejoin")
        assert len(moved) == 2 and {c.room for c in moved} in ({"one"}, {"two"})
        speaker, listener = moved  # tone_call's publisher, then its subscriber
        assert speaker.participant_id is not None
        remote = await listener.wait_for_track(speaker.participant_id, "audio", TIMEOUT)
        await asyncio.wait_for(remote.track.recv(), TIMEOUT)
        print(f"\nworker killed: its room in a call again after {time.monotonic() - killed:.2f} s")
        others = [c for c in clients if c not in moved]
        assert not any(m.type in ("reconnecting", "bye") for c in others for m in c.history)

        async def restarted() -> bool:
            report = await health(sfu_server)
            workers = report.get("workers", [])
            return report["status"] == "ok" and workers[0]["pid"] not in (None, pids[0])

        await until(restarted, "worker 0 started again")
    finally:
        await close_all(clients)
