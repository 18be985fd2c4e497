"""Nothing is left behind by participants that come and go (issue 11, "No leaks").

The real server process is sampled before and after: its file descriptors and threads
(/proc), and the asyncio tasks on its event loop (``sfu_event_loop_tasks`` on /metrics). Those
must come back to where they were (things close asynchronously: the test waits for them, within
a bound). RSS is printed as growth over the cycles, a number to watch, not asserted (memory
targets live in benchmarks/; ``benchmarks.churn`` is the memory benchmark).

CI runs a short version; the issue's 1,000 cycles of each, outside CI::

    AIOSFU_LEAK_CYCLES=1000 .venv/bin/python -m pytest tests/e2e/test_leaks.py -s
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sfu_client import PALETTE, MarkerVideoTrack, SfuClient

from .conftest import REPO, SfuServer
from .observe import metric

pytestmark = pytest.mark.e2e

CYCLES = int(os.environ.get("AIOSFU_LEAK_CYCLES", "0"))
SETTLE_TIMEOUT = 20.0
PEER_TIMEOUT = 8.0  # the server's default --peer-timeout
LOOPBACK = ["127.0.0.1"]  # ICE candidates on loopback only (the network rule)


@dataclass(frozen=True)
class Census:
    rss_kb: int
    fds: int
    threads: int
    tasks: int
    participants: int

    def at_most(self, other: Census) -> bool:
        """No more descriptors, threads or tasks than ``other``."""
        return self.fds <= other.fds and self.threads <= other.threads and self.tasks <= other.tasks


def rss_kb(server: SfuServer) -> int:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def census(server: SfuServer) -> Census:
    assert server.process is not None
    pid = server.process.pid
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()  # noqa: ASYNC240 - procfs
    status = dict(line.split(":", 1) for line in lines if ":" in line)
    return Census(
        rss_kb=int(status["VmRSS"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
        tasks=int(await metric(server, "sfu_event_loop_tasks")),
        participants=int(await metric(server, "sfu_participants")),
    )


async def settled(server: SfuServer, baseline: Census, participants: int) -> Census:
    """The census once descriptors, threads and tasks are back to ``baseline`` (or the last
    one after SETTLE_TIMEOUT, for the assertion to show)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        now = await census(server)
        if (now.participants == participants and now.at_most(baseline)) or (
            time.monotonic() > deadline
        ):
            return now
        await asyncio.sleep(0.2)


async def observer_in(server: SfuServer, room: str) -> tuple[SfuClient, MarkerVideoTrack]:
    """A participant that stays: it publishes, so its connection (sockets, the server's
    egress to it, its tasks) is up before the baseline is taken."""
    observer = await SfuClient.connect(server.ws_url, room, "observer", ice_hosts=LOOPBACK)
    track = MarkerVideoTrack(PALETTE[0], 160, 120, 15)
    await observer.publish(track, "camera")
    await observer.wait_connected(20.0)
    await asyncio.sleep(1.5)  # the server's first receiver report opens its egress
    return observer, track


def report(what: str, cycles: int, before: Census, after: Census) -> None:
    growth = (after.rss_kb - before.rss_kb) / before.rss_kb * 100
    print(
        f"{what}, {cycles} cycles: RSS {before.rss_kb / 1024:.1f} -> {after.rss_kb / 1024:.1f} MiB "
        f"({growth:+.1f} %), fds {before.fds} -> {after.fds}, threads {before.threads} -> "
        f"{after.threads}, tasks {before.tasks} -> {after.tasks}"
    )


async def test_join_publish_leave_cycles_leave_nothing_behind(
    sfu_server: SfuServer, room: str
) -> None:
    cycles = CYCLES or 40
    observer, observed = await observer_in(sfu_server, room)

    async def cycle(n: int) -> None:
        client = await SfuClient.connect(sfu_server.ws_url, room, f"p{n}", ice_hosts=LOOPBACK)
        track = MarkerVideoTrack(PALETTE[n % len(PALETTE)], 160, 120, 15)
        try:
            await client.publish(track, "camera")
            await client.wait_connected(20.0)
            await observer.wait_for_track(str(client.participant_id), "video", 20.0)
        finally:
            await client.leave()
            track.stop()

    try:
        for n in range(3):  # warm-up: imports, caches and pools the first participants fill
            await cycle(n)
        baseline = await settled(sfu_server, await census(sfu_server), participants=1)
        tenth, path = max(1, cycles // 10), []
        for n in range(cycles):
            await cycle(n)
            if (n + 1) % tenth == 0:
                path.append(rss_kb(sfu_server))
        after = await settled(sfu_server, baseline, participants=1)
        report("join/publish/leave", cycles, baseline, after)
        # a plateau (what the allocators keep for the next participants) or a slope (a leak)
        print(f"RSS every {tenth} cycles (MiB): " + " ".join(f"{kb / 1024:.1f}" for kb in path))
        assert after.participants == 1
        assert after.at_most(baseline), (baseline, after)
    finally:
        await observer.close()
        observed.stop()


async def test_resume_cycles_leave_nothing_behind(sfu_server: SfuServer, room: str) -> None:
    cycles = CYCLES or 300
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(sfu_server.ws_url)
        await ws.send_json({"type": "join", "v": 1, "room": room, "name": "roamer"})
        joined = await ws.receive_json(timeout=10)
        token, participant_id = joined["resumeToken"], joined["participantId"]

        async def cycle() -> None:
            nonlocal ws, token
            await ws.close()  # no leave: the server waits for a resume
            ws = await http.ws_connect(sfu_server.ws_url)
            await ws.send_json({"type": "resume", "v": 1, "token": token, "lastSeq": 0})
            resumed: Any = await ws.receive_json(timeout=10)
            assert resumed["type"] == "resumed", resumed
            assert resumed["participantId"] == participant_id
            token = resumed["resumeToken"]

        for _ in range(10):
            await cycle()
        baseline = await settled(sfu_server, await census(sfu_server), participants=1)
        for _ in range(cycles):
            await cycle()
        after = await settled(sfu_server, baseline, participants=1)
        report("resume", cycles, baseline, after)
        assert after.at_most(baseline), (baseline, after)
        await ws.send_json({"type": "leave"})
        assert (await ws.receive_json(timeout=10))["type"] == "left"
        await ws.close()


async def test_killed_participant_is_removed_and_freed(sfu_server: SfuServer, room: str) -> None:
    observer, observed = await observer_in(sfu_server, room)
    baseline = await settled(sfu_server, await census(sfu_server), participants=1)
    victim = subprocess.Popen(  # noqa: ASYNC220 - started once, read in a thread
        [sys.executable, "-m", "tests.e2e.killable_peer", sfu_server.ws_url, room, "victim"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(victim.stdout.readline), 30)
        assert line.startswith("ready "), line
        victim_id = line.split()[1]
        await observer.wait_for_track(victim_id, "video", 20.0)
        assert (await census(sfu_server)).participants == 2
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        gone = await observer.wait_for_message(
            "participant-left", PEER_TIMEOUT + 7, participantId=victim_id
        )
        removed = gone.at - killed_at
        after = await settled(sfu_server, baseline, participants=1)
        report("killed participant", 1, baseline, after)
        print(f"SIGKILLed participant removed after {removed:.1f} s: {json.dumps(gone.data)}")
        assert removed < PEER_TIMEOUT + 2  # the peer timeout, and the liveness check's tick
        assert after.at_most(baseline), (baseline, after)
    finally:
        victim.kill()
        victim.wait()
        await observer.close()
        observed.stop()
