"""A call through two ``sfu serve --redis`` nodes while Redis restarts (issue 13, S17): the
scenario both tests/cluster/test_redis_restart.py (loopback) and test_netns_nodes.py (network
namespaces) run, with in-process clients.

One room is joined through both nodes; Redis is stopped (SIGTERM) and started again on its
port ~2 s later, empty. Redis is on neither the media nor the signaling path, so every client
keeps receiving audio frames throughout, without a ``bye`` or a reconnection, and one more
joins the room meanwhile through the node that is not its owner; the nodes register again and
the room's owner claims it again; a room opened afterwards works. The largest gap between two
frames per client is printed, not asserted.

In namespaces the test process cannot host the clients (its event loop stays in its own
namespace), so the scenario runs as ``python -m tests.cluster.redis_restart`` in the clients'
namespace (:func:`main`): it reaches the nodes and Redis over the bridge, stops Redis by its
pid and starts it again in the hub (``ip netns exec``), and exits 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import redis.asyncio as redis

from benchmarks.processes import Network, Process
from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import SfuClient, ToneAudioTrack
from tests.cluster.conftest import health, ws
from tests.cluster.netns import HUB_ADDRESS, redis_url, start_redis
from tests.cluster.test_cluster_cli import everyone_hears_everyone
from tests.e2e.conftest import SfuServer
from tests.signaling.tone_calls import TIMEOUT, close_all

REDIS_AWAY = 2.0  # seconds between stopping Redis and starting it again
AFTER = 2.0  # seconds of call watched once the directory is back


class Restartable(Protocol):
    """A Redis the scenario stops and starts again on the same address."""

    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...

    def start(self) -> None: ...


class FrameWatch:
    """Every audio frame a client decodes from the others, timed (``time.monotonic()``)."""

    def __init__(self, client: SfuClient, others: list[SfuClient]) -> None:
        self.client = client
        self.times: dict[str, list[float]] = {}
        self._tasks = []
        for other in others:
            remote = next(
                t
                for t in client.remote_tracks.values()
                if t.participant_id == other.participant_id and t.kind == "audio"
            )
            times = self.times[str(other.name)] = []
            self._tasks.append(asyncio.create_task(self._count(remote.track.recv, times)))

    @staticmethod
    async def _count(recv: Callable[[], Awaitable[object]], times: list[float]) -> None:
        while True:
            await recv()
            times.append(time.monotonic())

    def frames_between(self, start: float, end: float) -> dict[str, int]:
        return {name: sum(start <= t < end for t in ts) for name, ts in self.times.items()}

    def largest_gap(self, start: float, end: float) -> float:
        gaps = [
            b - a
            for ts in self.times.values()
            for a, b in itertools.pairwise(ts)
            if start <= b and a < end
        ]
        return max(gaps, default=float("inf"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def directory_keys(url: str) -> tuple[set[str], dict[str, str]]:
    """(node ids registered, room -> owner) as Redis holds them now."""
    client = redis.from_url(url)
    try:
        nodes = {_text(k).rsplit("node:", 1)[1] for k in await client.keys("*node:*")}
        rooms = {}
        for key in await client.keys("*room:*"):
            owner = await client.get(key)
            if owner is not None:
                rooms[_text(key).rsplit("room:", 1)[1]] = _text(owner)
        return nodes, rooms
    finally:
        await client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def call_through_redis_restart(
    nodes: list[SfuServer], redis_server: Restartable, ice_host: str = "127.0.0.1"
) -> None:
    """The scenario (module docstring); an AssertionError says which check failed."""
    set_ice_host_addresses([ice_host])
    a, b = nodes
    clients: list[SfuClient] = []
    watches: list[FrameWatch] = []
    try:
        for name, first, second in (("ann", a, b), ("bob", b, a), ("cid", a, b)):
            client = await SfuClient.connect([ws(first), ws(second)], "call", name)
            clients.append(client)
            await client.publish(ToneAudioTrack(440.0), source="microphone")
        await everyone_hears_everyone(clients)
        reports = [await health(n) for n in nodes]
        node_ids = {r["node"] for r in reports}
        owner = next(r["node"] for r in reports if r["rooms"] == 1)
        assert await directory_keys(redis_server.url) == (node_ids, {"call": owner})
        watches = [FrameWatch(c, [o for o in clients if o is not c]) for c in clients]

        stopped = time.monotonic()
        # SIGTERM; no persistence: its keys are gone with it. In a thread: the clients of this
        # process must go on receiving meanwhile
        await asyncio.to_thread(redis_server.stop)
        while {(await health(n))["redis"] for n in nodes} != {"down"}:  # both noticed
            assert time.monotonic() < stopped + TIMEOUT
            await asyncio.sleep(0.1)
        assert {(await health(n))["status"] for n in nodes} == {"degraded"}
        # a join for the room still works, relayed by a node that knows where the room is
        entry = b if owner == reports[0]["node"] else a
        dan = await SfuClient.connect([ws(entry)], "call", "dan")
        clients.append(dan)
        await dan.publish(ToneAudioTrack(550.0), source="microphone")
        await everyone_hears_everyone([dan, clients[0]])
        await asyncio.sleep(max(0.0, stopped + REDIS_AWAY - time.monotonic()))
        await asyncio.to_thread(redis_server.start)
        restarted = time.monotonic()
        deadline = restarted + TIMEOUT
        while await directory_keys(redis_server.url) != (node_ids, {"call": owner}):
            assert time.monotonic() < deadline, await directory_keys(redis_server.url)
            await asyncio.sleep(0.1)
        back = time.monotonic()
        assert {(await health(n))["redis"] for n in nodes} == {"up"}
        await asyncio.sleep(AFTER)
        end = time.monotonic()

        print(f"\nRedis away {restarted - stopped:.2f} s; registrations and the claim back "
              f"{back - restarted:.2f} s after its start")  # fmt: skip
        for watch in watches:
            gap = watch.largest_gap(stopped, end)
            print(f"{watch.client.name}: largest gap between frames {gap * 1000:.0f} ms")
        for watch in watches:
            # frames from every other participant while Redis was away and after it came back
            assert all(watch.frames_between(stopped, restarted).values()), watch.times.keys()
            assert all(watch.frames_between(back, end).values())
        for client in clients:
            seen = {m.type for m in client.history}
            assert not seen & {"bye", "reconnecting", "reconnected", "connection-closed"}, seen
        assert (await health(a))["rooms"] + (await health(b))["rooms"] == 1

        # a room opened after the restart: claimed, and a call through both nodes
        late = [
            await SfuClient.connect([ws(a), ws(b)], "after", "eve"),
            await SfuClient.connect([ws(b), ws(a)], "after", "fay"),
        ]
        clients.extend(late)
        for client in late:
            await client.publish(ToneAudioTrack(330.0), source="microphone")
        await everyone_hears_everyone(late)
        _, rooms = await directory_keys(redis_server.url)
        assert rooms.keys() == {"call", "after"} and rooms["after"] in node_ids
    except BaseException:
        for client in clients:
            print(client.name, [(m.type, m.data.get("reason")) for m in client.history][-12:])
        raise
    finally:
        for watch in watches:
            await watch.stop()
        await close_all(clients)
        set_ice_host_addresses([])


# --- in the clients' namespace ---


class HubRedis:
    """The cluster's Redis in the hub namespace (tests/cluster/netns.py), seen from another
    namespace of the same machine: stopped by its pid, started again with ``ip netns exec``."""

    def __init__(self, hub: str, pid: int, workdir: Path) -> None:
        self.hub = hub
        self.pid: int | None = pid  # the one the test started; not ours to wait for
        self.workdir = workdir
        self.process: Process | None = None  # the one started again here

    @property
    def url(self) -> str:
        return redis_url()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self.pid is not None:
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + TIMEOUT
            while _running(self.pid):  # the test's child: a zombie until the test reaps it
                assert time.monotonic() < deadline, f"redis-server {self.pid} did not exit"
                time.sleep(0.02)
            self.pid = None

    def start(self) -> None:
        self.process = start_redis(Network(self.hub, HUB_ADDRESS), self.workdir)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", action="append", required=True, help="twice: http://…")
    parser.add_argument("--hub", required=True, help="the hub's namespace, where Redis runs")
    parser.add_argument("--redis-pid", type=int, required=True)
    parser.add_argument("--ice-host", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    hub = HubRedis(args.hub, args.redis_pid, args.workdir)
    try:
        nodes = [SfuServer(url) for url in args.node]
        await call_through_redis_restart(nodes, hub, args.ice_host)
    finally:
        if hub.process is not None:  # the one started here: not left behind
            hub.process.stop()


if __name__ == "__main__":
    asyncio.run(main())
