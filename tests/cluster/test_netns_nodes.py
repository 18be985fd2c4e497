"""Two or three ``sfu serve --redis`` nodes and a real Redis, each in a network namespace of its
own (issue 13, S17; tests/cluster/netns.py draws the network): three participants of one room
joining through different nodes all receive each other's video; the node that holds the room
is SIGKILLed, the room comes back on a node left, every participant joins it again (those of
the killed node through the next of their URLs: each was given every node's) and video flows
between all again. The time from the kill to video between all again is printed (``pytest
-s``), not asserted. And Redis restarted under a call (tests/cluster/redis_restart.py, as
test_redis_restart.py on loopback). Afterwards neither a namespace nor a process of the test
is left.

The participants run in client processes (tests/e2e/room_peers.py) in the clients' namespace.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.netns import (
    ClusterNetwork,
    Node,
    cluster,
    get_json,
    namespace_pids,
    namespaces,
    require_namespaces,
)
from tests.e2e.peer_process import REPO, PeerProcess

pytestmark = pytest.mark.e2e

TIMEOUT = 30.0
REPORT_INTERVAL = 0.2  # the clients': the resolution of the times printed
NAMES = ("ann", "bob", "cid")
SCENARIO_TIMEOUT = 90.0


@pytest.fixture(autouse=True)
def root() -> None:
    require_namespaces()


@pytest.mark.parametrize("count", [2, 3])
async def test_a_room_through_several_nodes_in_namespaces_and_the_owner_killed(
    tmp_path: Path, count: int
) -> None:
    with cluster(tmp_path, nodes=count) as (net, nodes):
        # participant i enters through node i mod count; its URLs: the nodes from there on
        routes = {name: rotated(nodes, i) for i, name in enumerate(NAMES)}
        peers: list[PeerProcess] = []
        try:
            started = time.monotonic()
            for k, node in enumerate(nodes):
                names = [name for name, urls in routes.items() if urls[0] is node]
                if names:
                    first = NAMES.index(names[0])
                    peers.append(await room_peers(net, f"via-n{k + 1}", routes[names[0]],
                                                  ",".join(names), first, tmp_path))  # fmt: skip
            await until_video_between_all(peers, {}, "video between all")
            print(f"\n{len(NAMES)} participants through {count} nodes in a call after "
                  f"{time.monotonic() - started:.2f} s")  # fmt: skip
            joined = reported(peers)
            assert {n: s["url"] for n, s in joined.items()} == {
                n: urls[0].ws_url for n, urls in routes.items()
            }
            reports = [await health(net, n) for n in nodes]
            assert {r["redis"] for r in reports} == {"up"}, reports
            owners = [n for n, r in zip(nodes, reports, strict=True) if r["rooms"] == 1]
            assert len(owners) == 1, reports  # the room lives on one node
            owner = owners[0]

            before = video_counts(peers)
            killed = time.monotonic()
            os.kill(owner.process.pid, signal.SIGKILL)
            await asyncio.to_thread(owner.process.process.wait)
            await until_video_between_all(peers, before, "video between all again")
            print(f"node {owner.namespace} killed: video between all again after "
                  f"{time.monotonic() - killed:.2f} s (clients report every "
                  f"{REPORT_INTERVAL} s)")  # fmt: skip
            after = reported(peers)
            # each through the first of its URLs still alive: its own node, or the next
            assert {n: s["url"] for n, s in after.items()} == {
                n: next(u for u in urls if u is not owner).ws_url for n, urls in routes.items()
            }
            # everyone joined the room again: it was gone with its node
            assert all(s["rejoins"] >= 1 for s in after.values()), after
            assert {s["id"] for s in after.values()}.isdisjoint(s["id"] for s in joined.values())
            left = [await health(net, n) for n in nodes if n is not owner]
            assert sorted(r["rooms"] for r in left) == [0] * (count - 2) + [1], left
        except BaseException:
            for node in nodes:  # what the nodes saw, for a failure that does not repeat
                print(node.namespace, node.process.logs())
            for peer in peers:
                print(peer.logs())
            raise
        finally:
            codes = await asyncio.gather(*(p.stop() for p in peers))
    assert codes == [0] * len(peers), [p.logs() for p in peers]
    assert net.killed == []  # every process left by itself (SIGTERM, quit)
    assert not set(net.names) & namespaces()


def test_a_call_goes_on_while_redis_restarts_in_namespaces(tmp_path: Path) -> None:
    """tests/cluster/redis_restart.py's scenario (as test_redis_restart.py on loopback) with
    the nodes, Redis and the clients each in a namespace: run as a process in the clients'
    namespace, it stops Redis in the hub by its pid and starts it again there."""
    with cluster(tmp_path, nodes=2) as (net, nodes):
        (redis_pid,) = namespace_pids(net.hub)  # the hub runs Redis only
        argv = [sys.executable, "-m", "tests.cluster.redis_restart", "--hub", net.hub,
                "--redis-pid", str(redis_pid), "--ice-host", net.addresses[net.clients],
                "--workdir", str(tmp_path / "restarted")]  # fmt: skip
        for node in nodes:
            argv += ["--node", node.http_url]
        scenario = subprocess.run(net.network(net.clients).command(argv), capture_output=True,
                                  text=True, timeout=SCENARIO_TIMEOUT, cwd=REPO)  # fmt: skip
        print(scenario.stdout)
        if scenario.returncode != 0:
            for node in nodes:
                print(node.namespace, node.process.logs())
        assert scenario.returncode == 0, scenario.stderr[-4000:]
        assert "largest gap" in scenario.stdout  # it ran to its end
        assert namespace_pids(net.hub) == []  # the Redis started again is stopped with it
    assert net.killed == []  # every process left by itself
    assert not set(net.names) & namespaces()


def test_the_namespaces_go_when_the_test_fails_with_a_process_in_one() -> None:
    with pytest.raises(RuntimeError, match="the test failed"), ClusterNetwork(1) as net:
        sleeper = subprocess.Popen(["ip", "netns", "exec", net.clients, "sleep", "60"])
        assert set(net.names) <= namespaces()
        for ns in net.names:  # nothing routes out of the test's network
            routes = subprocess.run(["ip", "-n", ns, "route", "show", "default"],
                                    capture_output=True, text=True, check=True)  # fmt: skip
            assert routes.stdout.strip() == "", (ns, routes.stdout)
        raise RuntimeError("the test failed")
    assert sleeper.wait(10) == -signal.SIGKILL
    assert net.killed == [sleeper.pid]
    assert not set(net.names) & namespaces()


async def room_peers(
    net: ClusterNetwork, name: str, urls: list[Node], names: str, first: int, logs: Path
) -> PeerProcess:
    """A client process in the clients' namespace: ``names`` join the room through the first
    of ``urls`` that answers, the others being where they go when that node is gone."""
    args = ["--room", "room", "--names", names, "--first-index", str(first)]
    args += ["--ice-host", net.addresses[net.clients], "--report-interval", str(REPORT_INTERVAL)]
    for node in urls:
        args += ["--url", node.ws_url]
    prefix = net.network(net.clients).command([])
    return await PeerProcess.start(prefix, "tests.e2e.room_peers", name, args, logs)


def rotated(nodes: list[Node], start: int) -> list[Node]:
    start %= len(nodes)
    return nodes[start:] + nodes[:start]


def reported(peers: list[PeerProcess]) -> dict[str, dict[str, Any]]:
    """Per participant name, its state in its process's last report."""
    return {
        name: state
        for peer in peers
        if peer.seen.counters
        for name, state in peer.seen.counters[-1]["clients"].items()
    }


def video_counts(peers: list[PeerProcess]) -> dict[tuple[str, str], int]:
    """(receiver name, sender id) -> video packets received, as last reported."""
    return {
        (name, sender): count
        for name, state in reported(peers).items()
        for sender, count in state["video"].items()
    }


def video_between_all(peers: list[PeerProcess], since: dict[tuple[str, str], int]) -> bool:
    """Every participant connected, with more video from each of the others' present
    participant ids than ``since`` counted."""
    states = reported(peers)
    if set(states) != set(NAMES):
        return False
    ids = {name: state["id"] for name, state in states.items()}
    return all(
        state["state"] == "connected"
        and all(
            state["video"].get(ids[other], 0) > since.get((name, ids[other]), 0)
            for other in NAMES
            if other != name
        )
        for name, state in states.items()
    )


async def until_video_between_all(
    peers: list[PeerProcess], since: dict[tuple[str, str], int], what: str
) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not video_between_all(peers, since):
        for peer in peers:  # one that exited fails the test with its log
            assert peer.process.returncode is None, f"{peer.name} exited\n{peer.logs()}"
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s: {reported(peers)}"
        await asyncio.sleep(0.05)


async def health(net: ClusterNetwork, node: Node) -> dict[str, Any]:
    return await asyncio.to_thread(get_json, net.clients, node.http_url + "/healthz")
