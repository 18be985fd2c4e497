"""Two nodes, one Redis: a room on one node, clients joining it through either (issue 13 step S16).

Each node is what ``sfu serve --redis`` will assemble: its own Sfu, a Directory, a LinkServer
on its own loopback address (127.0.0.2, 127.0.0.3: lo carries all of 127/8), NodeLinks, and a
ClusterRouter behind its signaling app. Real aiortc clients join one room through different
nodes and all hear each other (a relayed session's media goes straight to the room's node);
a link that does not know the secret is refused; a node's link lost ends the sessions relayed
over it with ``reconnect``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestServer

from sfu.config import MediaConfig
from sfu.media.aiortc_bridge import set_ice_host_addresses
from sfu.service import Sfu
from sfu_client import ServerError, SfuClient, ToneAudioTrack
from signaling.app import create_app
from signaling.cluster.directory import Directory, NodeInfo
from signaling.cluster.links import LinkRefused, LinkServer, NodeLinks, connect_link
from signaling.cluster.router import ClusterRouter
from tests.cluster.conftest import RedisServer
from tests.signaling.tone_calls import TIMEOUT, close_all

SECRET = b"cluster secret of the test"


@dataclass
class Node:
    name: str
    sfu: Sfu
    directory: Directory
    links: NodeLinks
    router: ClusterRouter
    link_server: LinkServer
    http: TestServer

    @property
    def ws_url(self) -> str:
        return str(self.http.make_url("/ws"))

    async def close(self) -> None:
        await self.http.close()
        await self.links.close()
        await self.link_server.close()
        await self.sfu.close()
        await self.directory.close()


async def start_node(name: str, host: str, cpu: float, redis_url: str) -> Node:
    info = [NodeInfo(name, "", "", cpu=cpu)]
    directory = Directory(redis_url, lambda: info[0], prefix="t:")

    async def address_of(peer: str) -> str | None:
        return next((n.link for n in await directory.nodes() if n.node_id == peer), None)

    sfu = Sfu(MediaConfig(ice_hosts=("127.0.0.1",)))
    links = NodeLinks(name, SECRET, address_of)
    router = ClusterRouter(sfu, directory, links)
    link_server = LinkServer(name, SECRET, router.serve_link())
    link_host, link_port = await link_server.start(host, 0)
    http = TestServer(create_app(router, resume_window=0), host=host)
    await http.start_server()
    info[0] = NodeInfo(name, str(http.make_url("/ws")), f"{link_host}:{link_port}", cpu=cpu)
    await directory.start()
    return Node(name, sfu, directory, links, router, link_server, http)


@pytest.fixture
async def two_nodes(redis_server: RedisServer) -> AsyncIterator[tuple[Node, Node]]:
    set_ice_host_addresses(["127.0.0.1"])
    a = await start_node("a", "127.0.0.2", 0.0, redis_server.url)
    b = await start_node("b", "127.0.0.3", 0.5, redis_server.url)
    try:
        yield a, b
    finally:
        await b.close()
        await a.close()
        set_ice_host_addresses([])


async def hears(listener: SfuClient, speaker: SfuClient) -> None:
    assert speaker.participant_id is not None
    remote = await listener.wait_for_track(speaker.participant_id, "audio", TIMEOUT)
    await asyncio.wait_for(remote.track.recv(), TIMEOUT)


async def test_clients_of_one_room_through_two_nodes_hear_each_other(
    two_nodes: tuple[Node, Node],
) -> None:
    a, b = two_nodes
    clients: list[SfuClient] = []
    try:
        for name, node in (("ann", a), ("bob", b), ("cid", a)):
            client = await SfuClient.connect(node.ws_url, "room", name)
            clients.append(client)
            await client.publish(ToneAudioTrack(440.0), source="microphone")
        for listener in clients:
            for speaker in clients:
                if speaker is not listener:
                    await hears(listener, speaker)
        # the room lives on a (the least loaded): all three sessions are there
        assert (await a.sfu.stats())["participants"] == 3
        assert (await b.sfu.stats())["participants"] == 0
        assert a.directory.claims == {"room"} and b.directory.claims == set()
    finally:
        await close_all(clients)
    for _ in range(50):  # the room emptied on a: its claim goes
        if not a.directory.claims:
            break
        await asyncio.sleep(0.1)
    assert a.directory.claims == set()


async def test_a_link_without_the_secret_is_refused(two_nodes: tuple[Node, Node]) -> None:
    a, _ = two_nodes
    address = (await a.directory.nodes())[0].link
    with pytest.raises(LinkRefused):
        await connect_link(address, "intruder", b"not the secret", "a")
    assert a.link_server.refused == 1


async def test_a_lost_link_ends_the_sessions_relayed_over_it_with_reconnect(
    two_nodes: tuple[Node, Node],
) -> None:
    a, b = two_nodes
    clients: list[SfuClient] = []
    try:
        ann = await SfuClient.connect(a.ws_url, "room", "ann")
        clients.append(ann)
        bob = await SfuClient.connect(b.ws_url, "room", "bob")  # relayed b -> a
        clients.append(bob)
        bob.auto_rejoin = False  # this test looks at the bye itself
        await a.link_server.close()  # a's end of every link goes
        bye = await bob.wait_for_message("bye", TIMEOUT)
        assert bye.data["reason"] == "reconnect"
        assert not [m for m in ann.history if m.type == "bye"]  # a's own client stays
    finally:
        await close_all(clients)


async def test_a_client_given_several_nodes_joins_through_one_that_answers(
    two_nodes: tuple[Node, Node],
) -> None:
    a, b = two_nodes
    with socket.socket() as unused:  # a port nothing listens on: a node that is gone
        unused.bind(("127.0.0.4", 0))
        gone = f"ws://127.0.0.4:{unused.getsockname()[1]}/ws"
    clients: list[SfuClient] = []
    try:
        ann = await SfuClient.connect([gone, b.ws_url], "room", "ann")
        clients.append(ann)
        # the one that answered first, from now on (as WebSocket URLs)
        assert ann.urls == [b.ws_url.replace("http://", "ws://"), gone]
        bob = await SfuClient.connect(a.ws_url, "room", "bob")
        clients.append(bob)
        await bob.publish(ToneAudioTrack(440.0), source="microphone")
        await hears(ann, bob)
    finally:
        await close_all(clients)


async def test_while_redis_is_away_a_known_room_is_joined_and_a_new_one_refused(
    two_nodes: tuple[Node, Node], redis_server: RedisServer
) -> None:
    a, b = two_nodes
    clients: list[SfuClient] = []
    try:
        ann = await SfuClient.connect(a.ws_url, "room", "ann")  # the room is a's
        clients.append(ann)
        bob = await SfuClient.connect(b.ws_url, "room", "bob")  # b relays a session of it
        clients.append(bob)
        await ann.publish(ToneAudioTrack(440.0), source="microphone")
        redis_server.stop()
        for _ in range(100):
            if not (a.directory.up or b.directory.up):
                break
            await asyncio.sleep(0.05)
        assert not (a.directory.up or b.directory.up)
        # through the owner, and through a node that relays the room's sessions: both know it
        for name, node in (("cid", a), ("dan", b)):
            client = await SfuClient.connect(node.ws_url, "room", name)
            clients.append(client)
            await hears(client, ann)
        with pytest.raises(ServerError) as refused:
            await SfuClient.connect(b.ws_url, "new", "eve")  # a room nobody knows: refused
        assert refused.value.code == "internal-error"
        assert "unavailable" in str(refused.value)
        assert (await a.sfu.stats())["participants"] == 4
        assert b.router._relayed == {"room": {"a": 2}}
    finally:
        await close_all(clients)
    for _ in range(50):  # the relayed sessions ended: b no longer counts them
        if not b.router._relayed:
            break
        await asyncio.sleep(0.1)
    assert b.router._relayed == {}
