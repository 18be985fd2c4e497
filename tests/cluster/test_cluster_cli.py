"""Two ``sfu serve --redis`` nodes and a real Redis (issue 13): one room joined through both
nodes; the node that holds the room is killed (SIGKILL) and the room comes back on the other,
its clients joining again by themselves through the node left (they were given both URLs). The
time from the kill to a call again is printed (``pytest -s``), not asserted.

The nodes (tests/cluster/conftest.py) listen on 127.0.0.2 and 127.0.0.3.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu_client import SfuClient, ToneAudioTrack
from tests.cluster.conftest import health, ws
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
