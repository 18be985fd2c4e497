"""Two ``sfu serve --redis`` nodes and a real Redis (issue 13): one room joined through both
nodes; the node that holds the room is killed (SIGKILL) and the room comes back on the other,
its clients joining again by themselves through the node left (they were given both URLs). The
time from the kill to a call again is printed (``pytest -s``), not asserted. The same with
SIGTERM and ``--drain-timeout``: the node says it drains (in Redis, in /healthz), new rooms go to
the other node, the call goes on until the timeout, then moves there (``bye reconnect``).

The nodes (tests/cluster/conftest.py) listen on 127.0.0.2 and 127.0.0.3.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
import redis.asyncio as redis

from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import SfuClient, ToneAudioTrack
from tests.cluster.conftest import RedisServer, health, ws
from tests.e2e.conftest import SfuServer
from tests.signaling.tone_calls import TIMEOUT, close_all

pytestmark = pytest.mark.e2e


async def test_a_room_through_two_nodes_and_the_owner_killed(nodes: list[SfuServer]) -> None:
    set_ice_host_addresses(["127.0.0.1"])
    a, b = nodes
    clients: list[SfuClient] = []
    try:
        for name, first, second in (("ann", a, b), ("bob", b, a), ("cid", a, b)):
            client = await SfuClient.connect([ws(first), ws(second)], "room", name)
            clients.append(client)
            await client.publish(ToneAudioTrack(440.0), source="microphone")
        await everyone_hears_everyone(clients)
        reports = [await health(n) for n in nodes]
        assert {r["redis"] for r in reports} == {"up"}
        owners = [n for n, r in zip(nodes, reports, strict=True) if r["rooms"] == 1]
        assert len(owners) == 1, reports  # the room lives on one node
        owner = owners[0]
        left = b if owner is a else a

        assert owner.process is not None
        killed = time.monotonic()
        os.kill(owner.process.pid, signal.SIGKILL)
        owner.process.wait()
        deadline = time.monotonic() + TIMEOUT
        while not all(any(m.type == "reconnected" for m in c.history) for c in clients):
            assert time.monotonic() < deadline, [c.name for c in clients if not c.history]
            await asyncio.sleep(0.1)
        await everyone_hears_everyone(clients)
        print(f"\nnode killed: its room in a call again after {time.monotonic() - killed:.2f} s")
        assert (await health(left))["rooms"] == 1  # the room, on the node left
        assert all(c.urls[0] == ws(left) for c in clients)
    except BaseException:
        # what the nodes and the clients saw, for a failure that does not repeat
        for node in nodes:
            print(node.logs())
        for client in clients:
            print(client.name, [(m.type, m.data.get("reason")) for m in client.history][-12:])
        raise
    finally:
        await close_all(clients)
        set_ice_host_addresses([])


async def everyone_hears_everyone(clients: list[SfuClient]) -> None:
    for listener in clients:
        for speaker in clients:
            if speaker is listener:
                continue
            assert speaker.participant_id is not None
            remote = await listener.wait_for_track(speaker.participant_id, "audio", TIMEOUT)
            await asyncio.wait_for(remote.track.recv(), TIMEOUT)


@pytest.mark.parametrize("node_args", [("--drain-timeout", "3")])
async def test_sigterm_drains_a_node_and_its_room_moves_at_the_timeout(
    nodes: list[SfuServer], redis_server: RedisServer, prefix: str
) -> None:
    set_ice_host_addresses(["127.0.0.1"])
    directory = redis.from_url(redis_server.url)
    a, b = nodes
    clients: list[SfuClient] = []
    try:
        for name, first, second in (("ann", a, b), ("bob", b, a)):
            client = await SfuClient.connect([ws(first), ws(second)], "room", name)
            clients.append(client)
            await client.publish(ToneAudioTrack(440.0), source="microphone")
        await everyone_hears_everyone(clients)
        reports = [await health(n) for n in nodes]
        owner, report = next((n, r) for n, r in zip(nodes, reports, strict=True) if r["rooms"])
        left, node_id = b if owner is a else a, report["node"]

        assert owner.process is not None
        signalled = time.monotonic()
        owner.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + TIMEOUT
        while (await health(owner))["status"] != "draining":
            assert time.monotonic() < deadline, "/healthz never said draining"
            await asyncio.sleep(0.05)
        registered = await directory.get(f"{prefix}node:{node_id}")
        assert registered is not None and json.loads(registered)["draining"] is True
        # a new room: refused by the draining node, opened on the other (through either URL)
        for name, first, second in (("cy", owner, left), ("dee", left, owner)):
            newcomer = await SfuClient.connect([ws(first), ws(second)], "fresh", name)
            clients.append(newcomer)
            assert newcomer.urls[0] == ws(left)
        assert (await health(left))["rooms"] == 1 and (await health(owner))["rooms"] == 1
        # the running room is still served where it runs, and still joined there
        assert not any(m.type in ("bye", "reconnecting") for c in clients for m in c.history)

        room = clients[:2]
        byes = [await c.wait_for_message("bye", TIMEOUT) for c in room]
        assert {b.data["reason"] for b in byes} == {"reconnect"}
        bye_after = min(b.at for b in byes) - signalled
        deadline = time.monotonic() + TIMEOUT
        while not all(any(m.type == "reconnected" for m in c.history) for c in room):
            assert time.monotonic() < deadline, [c.history[-6:] for c in room]
            await asyncio.sleep(0.1)
        await everyone_hears_everyone(room)
        again = time.monotonic() - signalled
        assert await asyncio.to_thread(owner.process.wait, 30) == 0
        exited = time.monotonic() - signalled
        assert (await health(left))["rooms"] == 2  # both rooms on the node left
        print(
            f"\nSIGTERM with --drain-timeout 3: bye reconnect after {bye_after:.2f} s, the room "
            f"in a call again on the other node after {again:.2f} s, the node exited after "
            f"{exited:.2f} s"
        )
    except BaseException:
        for node in nodes:
            print(node.logs())
        for client in clients:
            print(client.name, [(m.type, m.data.get("reason")) for m in client.history][-12:])
        raise
    finally:
        await close_all(clients)
        await directory.aclose()
        set_ice_host_addresses([])
